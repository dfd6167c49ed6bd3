"""Per-query NumPy reference of the retrieval metrics (docs/original.md §6.4-6.6).

A deliberately plain transcription of the original algorithm, one Python loop iteration per
query, used as ground truth by the tests and the benchmark for the vectorised
`tvilfm_jax.eval.metrics.evaluate`. It differs from the original only where the original is
undefined: ties are ordered by gallery index (stable argsort instead of quicksort), and the CMC
is always ``max_rank`` long (extended flat where the original would shorten it or crash).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def eval_sysu(distmat, q_pids, g_pids, q_cams, g_cams, max_rank: int = 20):
    """SYSU-MM01: drop gallery cam 2 for cam-3 queries; de-duplicated CMC.

    Args: distmat [Q, G] (lower = closer), pids and cams [Q] / [G].
    Returns: (cmc [max_rank], mAP, mINP).
    """
    q_cams, g_cams = np.asarray(q_cams), np.asarray(g_cams)

    def removed(q_idx, order):
        return (q_cams[q_idx] == 3) & (g_cams[order] == 2)

    return _evaluate(distmat, q_pids, g_pids, removed, dedup=True, max_rank=max_rank)


def eval_llcm(distmat, q_pids, g_pids, q_cams, g_cams, max_rank: int = 20):
    """LLCM: drop gallery images with the query's pid and camera; de-duplicated CMC."""
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_cams, g_cams = np.asarray(q_cams), np.asarray(g_cams)

    def removed(q_idx, order):
        return (g_pids[order] == q_pids[q_idx]) & (g_cams[order] == q_cams[q_idx])

    return _evaluate(distmat, q_pids, g_pids, removed, dedup=True, max_rank=max_rank)


def eval_regdb(distmat, q_pids, g_pids, max_rank: int = 20):
    """RegDB: no removal (query cams are 1, gallery cams 2); plain CMC."""

    def removed(q_idx, order):
        return np.zeros(len(order), bool)

    return _evaluate(distmat, q_pids, g_pids, removed, dedup=False, max_rank=max_rank)


def reference_evaluate(
    sim, q_pids, g_pids, q_cams=None, g_cams=None, protocol: str = "sysu", max_rank: int = 20
) -> dict[str, Any]:
    """Same call and result keys as `metrics.evaluate`, computed query by query."""
    distmat = -np.asarray(sim, np.float32)
    if protocol == "sysu":
        cmc, m_ap, m_inp = eval_sysu(distmat, q_pids, g_pids, q_cams, g_cams, max_rank)
    elif protocol == "llcm":
        cmc, m_ap, m_inp = eval_llcm(distmat, q_pids, g_pids, q_cams, g_cams, max_rank)
    elif protocol == "regdb":
        cmc, m_ap, m_inp = eval_regdb(distmat, q_pids, g_pids, max_rank)
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    return {"cmc": cmc, "mAP": m_ap, "mINP": m_inp}


def _evaluate(distmat, q_pids, g_pids, removed, dedup: bool, max_rank: int):
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    indices = np.argsort(distmat, axis=1, kind="stable")
    ranked_pids = g_pids[indices]

    cmc_sum = np.zeros(max_rank)
    all_ap, all_inp = [], []
    num_valid = 0
    for q_idx in range(len(q_pids)):
        q_pid = q_pids[q_idx]
        keep = ~removed(q_idx, indices[q_idx])
        kept_pids = ranked_pids[q_idx][keep]
        matches = (kept_pids == q_pid).astype(np.int64)

        if dedup:
            # First occurrence of each pid, in ranked order.
            _, first_idx = np.unique(kept_pids, return_index=True)
            cmc_pids = kept_pids[np.sort(first_idx)]
        else:
            cmc_pids = kept_pids
        cmc = _extend((cmc_pids == q_pid).cumsum().clip(max=1), max_rank)
        cmc_sum += cmc  # zero for queries without a match, as in the original

        if not matches.any():
            continue
        num_valid += 1
        hits = matches.cumsum()
        num_rel = hits[-1]
        hit_ranks = np.flatnonzero(matches) + 1
        all_ap.append(np.sum(hits[hit_ranks - 1] / hit_ranks) / num_rel)
        all_inp.append(num_rel / hit_ranks[-1])

    if num_valid == 0:
        raise ValueError("no query identity appears (after removal) in the gallery")
    return cmc_sum / num_valid, float(np.mean(all_ap)), float(np.mean(all_inp))


def _extend(curve: np.ndarray, max_rank: int) -> np.ndarray:
    """First max_rank entries; a shorter curve continues at its last value (0 if empty)."""
    out = np.zeros(max_rank)
    n = min(len(curve), max_rank)
    out[:n] = curve[:n]
    if 0 < len(curve) < max_rank:
        out[n:] = curve[-1]
    return out
