"""Retrieval metrics for VI-ReID (CMC, mAP, mINP), vectorised and jitted with JAX.

Semantics follow docs/original.md §6.4-6.6 (the original `tools/eval_metrics.py`):

* ``"sysu"``: for a query from camera 3, every gallery image from camera 2 is removed (any
  identity); nothing else is removed. CMC is the de-duplicated ("new") CMC: ranked gallery
  pids after removal, first occurrence of each pid kept, CMC@k = 1 if the query pid is among
  the first k unique pids.
* ``"llcm"``: gallery images with the query's pid *and* camera are removed; de-duplicated CMC.
* ``"regdb"``: nothing is removed (camera ids are ignored); plain CMC (rank of the first hit).

The protocol is the caller's choice per query modality: the original scores LLCM's IR query
with the SYSU rule (no same-camera removal) and Fusion/Text with the LLCM rule (docs/original.md §10
item 14), so the "paper" recipe passes "sysu" for LLCM IR and the "clean" recipe "llcm".

For every protocol AP and INP are computed on the non-de-duplicated ranked match vector after
removal: AP = (1/|G+|) sum over hit ranks k of hits(<=k)/k, INP = |G+| / rank(last hit), with
ranks counted among the kept gallery images. Queries without a kept true match are skipped
for AP/INP and for the denominator; their CMC rows are all zero, so CMC is the fraction of
*valid* queries whose first hit lies within rank k.

Ranking and ties: gallery images are ranked by descending similarity (the original sorts
``distmat = -sim``). The original's ``np.argsort`` (quicksort) orders ties arbitrarily; here
ties are broken by ascending gallery index (a stable sort), as in `reference_metrics`.
Scores are compared in float32 (float64 input is cast), and ``-0.0 == 0.0`` is a tie.

CMC length: the result is always ``max_rank`` long. Where the original would shorten it
(fewer gallery images, or fewer unique kept pids, than ``max_rank``; the latter crashes the
original) the curve is extended flat, which is what CMC@k means for k past the list's end.

Implementation: queries are processed in chunks of ``chunk_size`` rows, one jitted call per
chunk, so memory is bounded per chunk whatever Q is; per-query numbers come back to the host,
which averages in float64. Two exact kernels give identical results:

* ``method="compare"`` (chosen by "auto" when no pid has more than 128 gallery images and
  the pid groups are not too uneven): the true matches of a query are its pid's gallery
  images, so each one's rank among the kept images is a count of kept images ranked ahead of
  it, O(G x M) per query for at most M images per pid; the de-duplicated CMC counts pids
  with any image ranked before the first hit through a padded [pid, image] table. Queries
  are vectorised in cache-sized blocks (`jax.lax.map` with a batch size). XLA's CPU sort is
  slow (a comparator call per comparison), so avoiding it is what makes this fast.
* ``method="sort"``: a stable sort of each row, cumulative sums along it for the ranks, and a
  cumulative sum over the gallery grouped by pid for the distinct-pid count; O(G log G) per
  query whatever the pid sizes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PROTOCOLS = ("sysu", "regdb", "llcm")
METHODS = ("auto", "compare", "sort")
_DEDUP = {"sysu": True, "llcm": True, "regdb": False}
# "auto" uses the compare kernel up to this many gallery images per pid.
_COMPARE_MAX_PER_PID = 128
# Scores per chunk (one jitted call): the sort kernel keeps ~6 [C, G] buffers, ~100 MB.
_CHUNK_ELEMENTS = 1 << 22
# Comparisons per vectorised step of the compare kernel (a few MB: measured best on CPU).
_COMPARE_BLOCK_ELEMENTS = 1 << 20


def evaluate(
    sim: Any,
    q_pids: Any,
    g_pids: Any,
    q_cams: Any = None,
    g_cams: Any = None,
    protocol: str = "sysu",
    max_rank: int = 20,
    *,
    chunk_size: int | None = None,
    method: str = "auto",
) -> dict[str, Any]:
    """Retrieval metrics of one query set against one gallery.

    Args:
      sim: similarity matrix [Q, G] (higher = closer), numpy or JAX array.
      q_pids: query identities [Q]; g_pids: gallery identities [G] (any comparable dtype).
      q_cams, g_cams: integer camera ids [Q], [G]; required for "sysu" and "llcm",
        ignored for "regdb".
      protocol: "sysu", "regdb" or "llcm" (see module docstring).
      max_rank: length of the CMC curve.
      chunk_size: queries per jitted call; default keeps a chunk near 4M scores.
      method: "auto", "compare" or "sort" (same results; see module docstring).

    Returns:
      dict with ``cmc`` (float64 [max_rank], fractions; Rank-k = cmc[k-1]), ``mAP`` and
      ``mINP`` (floats, fractions) and ``num_valid`` (queries with a true match).

    Raises:
      ValueError: on malformed input or when no query has a true match in the gallery.
    """
    ranks, ap, inp, valid = per_query_stats(
        sim, q_pids, g_pids, q_cams, g_cams, protocol, chunk_size=chunk_size, method=method
    )
    return summarize(ranks, ap, inp, valid, max_rank)


def per_query_stats(
    sim: Any,
    q_pids: Any,
    g_pids: Any,
    q_cams: Any = None,
    g_cams: Any = None,
    protocol: str = "sysu",
    *,
    chunk_size: int | None = None,
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-query statistics behind `evaluate`.

    Returns:
      (cmc_rank int64 [Q], ap float64 [Q], inp float64 [Q], valid bool [Q]); cmc_rank is the
      1-based CMC rank of the first hit (among unique pids for sysu/llcm), meaningful only
      where valid; ap/inp are 0 where not valid.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    is_jax = isinstance(sim, jax.Array)
    if not is_jax:
        sim = np.asarray(sim)
        if not (np.issubdtype(sim.dtype, np.floating) or np.issubdtype(sim.dtype, np.integer)):
            raise ValueError(f"sim must be a real-valued array, got dtype {sim.dtype}")
    if sim.ndim != 2:
        raise ValueError(f"sim must be a 2-D [Q, G] array, got shape {sim.shape}")
    num_q, num_g = (int(d) for d in sim.shape)
    if num_q == 0 or num_g == 0:
        raise ValueError(f"sim must be non-empty, got shape {(num_q, num_g)}")
    q_pids = _vector(q_pids, "q_pids", num_q)
    g_pids = _vector(g_pids, "g_pids", num_g)
    if protocol == "regdb":
        # The original evaluates RegDB with fixed cameras 1 (query) / 2 (gallery): no removal.
        q_cams = np.ones(num_q, np.int32)
        g_cams = np.full(num_g, 2, np.int32)
    else:
        if q_cams is None or g_cams is None:
            raise ValueError(f"protocol {protocol!r} needs q_cams and g_cams")
        q_cams = _int_vector(q_cams, "q_cams", num_q)
        g_cams = _int_vector(g_cams, "g_cams", num_g)

    # Dense pid ids, and the gallery grouped by pid for the distinct-pid count.
    try:
        uniq, g_dense = np.unique(g_pids, return_inverse=True)
        q_dense = np.searchsorted(uniq, q_pids)
    except TypeError as e:
        raise ValueError(f"q_pids and g_pids must be comparable: {e}") from None
    q_dense = np.where(
        (q_dense < uniq.size) & (uniq[np.minimum(q_dense, uniq.size - 1)] == q_pids), q_dense, -1
    ).astype(np.int32)
    g_dense = g_dense.astype(np.int32)
    per_pid = np.bincount(g_dense)
    width = int(per_pid.max())
    if method == "auto":
        # The compare kernel's work grows with images per pid (and its pid table with the
        # padding to the largest group); past these bounds sorting is cheaper.
        small = width <= _COMPARE_MAX_PER_PID and uniq.size * width <= 4 * num_g
        method = "compare" if small else "sort"
    group_perm = np.argsort(g_dense, kind="stable").astype(np.int32)
    if method == "compare":
        # members[p] = gallery indices of pid p, padded with G (a "no image" sentinel).
        members = np.full((uniq.size, width), num_g, np.int32)
        slot = np.arange(num_g) - np.repeat(np.cumsum(per_pid) - per_pid, per_pid)
        members[g_dense[group_perm], slot] = group_perm
        # The gallery indices go in as an argument, not an iota inside the jitted kernel:
        # XLA:CPU vectorises the [M, G] count worse with an iota fused into it (~1.4x slower).
        g_idx = jnp.arange(num_g, dtype=jnp.int32)
        consts = (jnp.asarray(g_dense), jnp.asarray(g_cams), g_idx, jnp.asarray(members))
        block = max(1, _COMPARE_BLOCK_ELEMENTS // (max(num_g, members.size) * width))
        kernel = functools.partial(_compare_stats, block=block)
    else:
        group_end = (np.cumsum(per_pid) - 1).astype(np.int32)
        consts = (
            jnp.asarray(g_dense),
            jnp.asarray(g_cams),
            jnp.asarray(group_perm),
            jnp.asarray(group_end),
        )
        kernel = _sort_stats

    if chunk_size is None:
        max_rows = max(1, _CHUNK_ELEMENTS // num_g)
        n_chunks = -(-num_q // max_rows)
        chunk_size = -(-num_q // n_chunks)  # balanced chunks: little overlap at the end
    elif int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk = min(int(chunk_size), num_q)

    out_rank = np.empty(num_q, np.int64)
    out_ap = np.empty(num_q, np.float64)
    out_inp = np.empty(num_q, np.float64)
    out_valid = np.empty(num_q, bool)

    def collect(start, lo, result):
        rank, ap, inp, valid, finite = result
        if not bool(finite):
            raise ValueError(f"sim rows {lo}..{lo + chunk - 1} contain NaN or infinite scores")
        new = slice(start - lo, None)  # rows of an overlapping last chunk done before
        out_rank[start : lo + chunk] = np.asarray(rank)[new]
        out_ap[start : lo + chunk] = np.asarray(ap)[new]
        out_inp[start : lo + chunk] = np.asarray(inp)[new]
        out_valid[start : lo + chunk] = np.asarray(valid)[new]

    pending = None
    for start in range(0, num_q, chunk):
        # The last chunk is shifted back to stay full-size (one compiled shape).
        lo = min(start, num_q - chunk)
        rows = _rows(sim, lo, chunk) if is_jax else sim[lo : lo + chunk]
        result = kernel(
            rows, q_dense[lo : lo + chunk], q_cams[lo : lo + chunk], *consts, protocol=protocol
        )
        # One chunk in flight while the previous one is read back; memory stays ~2 chunks.
        if pending is not None:
            collect(*pending)
        pending = (start, lo, result)
    collect(*pending)
    return out_rank, out_ap, out_inp, out_valid


def summarize(
    ranks: np.ndarray, ap: np.ndarray, inp: np.ndarray, valid: np.ndarray, max_rank: int = 20
) -> dict[str, Any]:
    """CMC/mAP/mINP from per-query statistics (see `per_query_stats`)."""
    if int(max_rank) < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    num_valid = int(np.sum(valid))
    if num_valid == 0:
        raise ValueError("no query identity appears (after removal) in the gallery")
    hist = np.bincount(np.minimum(ranks[valid], max_rank + 1) - 1, minlength=max_rank + 1)
    cmc = np.cumsum(hist[:max_rank]) / num_valid
    return {
        "cmc": cmc.astype(np.float64),
        "mAP": float(np.mean(ap[valid])),
        "mINP": float(np.mean(inp[valid])),
        "num_valid": num_valid,
    }


def average_results(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean over gallery trials (SYSU/LLCM: 10 random galleries; RegDB: 10 trained splits), and
    the spread of the trials around it.

    Every entry is averaged with equal weight per trial, as the original does. ``std`` holds the
    population standard deviation (ddof=0) of ``cmc``, ``mAP`` and ``mINP`` over the trials, in
    the same layout as the mean (so `summarize`'s readers take it too); one trial gives 0.
    """
    if not results:
        raise ValueError("average_results needs at least one result")
    lengths = {len(r["cmc"]) for r in results}
    if len(lengths) != 1:
        raise ValueError(f"all results must have CMC curves of one length, got {sorted(lengths)}")
    cmc = np.asarray([np.asarray(r["cmc"], np.float64) for r in results])
    scalars = {k: np.asarray([r[k] for r in results], np.float64) for k in ("mAP", "mINP")}
    return {
        "cmc": cmc.mean(axis=0),
        **{k: float(v.mean()) for k, v in scalars.items()},
        "num_trials": len(results),
        "std": {"cmc": cmc.std(axis=0), **{k: float(v.std()) for k, v in scalars.items()}},
    }


def format_row(name: str, result: Mapping[str, Any], ranks: Sequence[int] = (1, 5, 10, 20)) -> str:
    """One table row in percent, e.g. ``Fusion  R1 61.23  R5 ...  mAP 58.01  mINP 44.90``; a
    mean over trials (`average_results`) shows its std too: ``R1 61.23 ± 1.05``."""
    cmc = np.asarray(result["cmc"])
    for k in ranks:
        if not 1 <= k <= len(cmc):
            raise ValueError(f"rank {k} is outside the CMC curve of length {len(cmc)}")
    std = result.get("std")

    def cell(label: str, mean: float, spread: float | None) -> str:
        return f"{label} {100 * mean:6.2f}" + ("" if spread is None else f" ± {100 * spread:5.2f}")

    cols = [cell(f"R{k}", cmc[k - 1], None if std is None else std["cmc"][k - 1]) for k in ranks]
    cols += [cell(m, result[m], None if std is None else std[m]) for m in ("mAP", "mINP")]
    return f"{name:<10s}" + "  ".join(cols)


def kept(q_pids: Any, g_pids: Any, q_cams: Any, g_cams: Any, protocol: str) -> np.ndarray:
    """bool [Q, G]: the gallery images each query is ranked among under `protocol` (the removal
    rules of the module docstring; cameras are ignored for "regdb")."""
    same_pid = np.asarray(q_pids)[:, None] == np.asarray(g_pids)[None, :]
    if protocol == "regdb":
        return np.ones_like(same_pid)
    return np.asarray(_kept(protocol, np.asarray(q_cams)[:, None], np.asarray(g_cams)[None, :], same_pid))


@functools.partial(jax.jit, static_argnames=("size",))
def _rows(sim: jax.Array, start: int, size: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(sim, start, size, axis=0)


@functools.partial(jax.jit, static_argnames=("protocol",))
def _sort_stats(sim, q_pid, q_cam, g_pid, g_cam, group_perm, group_end, *, protocol):
    """Per-query stats for a chunk, by sorting each row.

    Args:
      sim: [C, G] scores; q_pid [C] dense pid (-1 = not in gallery); q_cam [C];
      g_pid [G] dense pid; g_cam [G]; group_perm [G] gallery indices grouped by pid;
      group_end [P] last position of each pid group in group_perm order.
    Returns:
      rank int32 [C], ap float32 [C], inp float32 [C], valid bool [C], finite bool [].
    """
    sim = sim.astype(jnp.float32)
    num_g = sim.shape[1]
    same_pid = g_pid[None, :] == q_pid[:, None]
    keep = _kept(protocol, q_cam[:, None], g_cam[None, :], same_pid)
    match = same_pid & keep

    # AP / INP need the rank of every hit: stable sort of -sim keeps ties in index order.
    code = keep.astype(jnp.int8) + 2 * match.astype(jnp.int8)
    _, code_sorted = jax.lax.sort((-sim, code), dimension=1, num_keys=1, is_stable=True)
    keep_s = (code_sorted & 1).astype(jnp.int32)
    match_s = code_sorted >= 2
    pos = jnp.cumsum(keep_s, axis=1)  # 1-based rank among kept images
    hits = jnp.cumsum(match_s.astype(jnp.int32), axis=1)
    num_rel = hits[:, -1]
    valid = num_rel > 0
    precision = jnp.where(match_s, hits.astype(jnp.float32) / jnp.maximum(pos, 1), 0.0)
    ap = jnp.where(valid, precision.sum(axis=1) / jnp.maximum(num_rel, 1), 0.0)
    last_hit = jnp.max(jnp.where(match_s, pos, 0), axis=1)
    inp = jnp.where(valid, num_rel / jnp.maximum(last_hit, 1), 0.0).astype(jnp.float32)

    # CMC: what ranks before the first hit (score higher, or equal with a lower index).
    g_idx = jnp.arange(num_g, dtype=jnp.int32)
    best = jnp.max(jnp.where(match, sim, -jnp.inf), axis=1, keepdims=True)
    first = jnp.min(jnp.where(match & (sim == best), g_idx, num_g), axis=1, keepdims=True)
    before = keep & _ranks_before(sim, g_idx, best, first)
    if _DEDUP[protocol]:
        # Distinct pids before the first hit: with columns grouped by pid, a group contains
        # an earlier image iff its cumulative count grows across the group.
        counts = jnp.cumsum(before[:, group_perm].astype(jnp.int32), axis=1)[:, group_end]
        prev = jnp.pad(counts[:, :-1], ((0, 0), (1, 0)))
        rank = 1 + jnp.sum(counts > prev, axis=1)
    else:
        rank = 1 + jnp.sum(before, axis=1)
    return rank.astype(jnp.int32), ap.astype(jnp.float32), inp, valid, _all_finite(sim)


@functools.partial(jax.jit, static_argnames=("protocol", "block"))
def _compare_stats(sim, q_pid, q_cam, g_pid, g_cam, g_idx, members, *, protocol, block):
    """Per-query stats for a chunk, by counting what ranks before each true match.

    Args:
      sim: [C, G] scores; q_pid [C] dense pid (-1 = not in gallery); q_cam [C];
      g_pid [G] dense pid; g_cam [G]; g_idx [G] = arange(G);
      members [P, M] gallery indices per pid, G = padding.
      block: queries per vectorised step; a step holds [block, M, G] comparisons, which XLA
        materialises, so it is bounded.
    Returns:
      rank int32 [C], ap float32 [C], inp float32 [C], valid bool [C], finite bool [].
    """
    sim = sim.astype(jnp.float32)
    num_g = sim.shape[1]
    # Candidates: the gallery images of each query's pid, [C, M], and their scores. Gathered
    # for the whole chunk before the loop: inside it, XLA recomputes this per-candidate work
    # for every element of the [M, G] count it fuses them into (measured ~1.2x slower).
    cand = jnp.where(q_pid[:, None] >= 0, members[jnp.maximum(q_pid, 0)], num_g)
    score = jnp.take_along_axis(
        sim, jnp.minimum(cand, num_g - 1), axis=1, mode="promise_in_bounds"
    )
    row = functools.partial(
        _compare_row, g_pid=g_pid, g_cam=g_cam, g_idx=g_idx, members=members, protocol=protocol
    )
    rank, ap, inp, valid = jax.lax.map(
        lambda x: row(*x), (sim, cand, score, q_pid, q_cam), batch_size=block
    )
    return rank, ap, inp, valid, _all_finite(sim)


def _compare_row(sim, cand, score, q_pid, q_cam, *, g_pid, g_cam, g_idx, members, protocol):
    """One query: sim [G], candidates cand [M] (G = padding) with their scores score [M],
    q_pid and q_cam scalars -> (CMC rank, AP, INP, valid)."""
    num_g = sim.shape[0]
    keep = _kept(protocol, q_cam, g_cam, g_pid == q_pid)
    # The kept candidates are the true matches.
    is_match = (cand < num_g) & keep[jnp.minimum(cand, num_g - 1)]

    # 1-based rank of each candidate among the kept images. This [M, G] count is the bulk of
    # the work, so removed images are pushed to -inf once instead of masked per candidate.
    # Counts are float32 sums (exact below 2**24), which XLA vectorises better than integer
    # sums, and the test is one boolean expression selected once: selecting between two
    # compares per element instead was measured ~1.3x slower on CPU.
    kept_sim = jnp.where(keep, sim, -jnp.inf)[None, :]
    ahead = _ranks_before(kept_sim, g_idx, score[:, None], cand[:, None])
    rank = 1 + jnp.sum(jnp.where(ahead, 1.0, 0.0), axis=1)
    ahead_m = _ranks_before(score[None, :], cand[None, :], score[:, None], cand[:, None])
    hits = 1 + jnp.sum(jnp.where(is_match[None, :] & ahead_m, 1.0, 0.0), axis=1)
    num_rel = jnp.sum(is_match)
    valid = num_rel > 0
    ap = jnp.sum(jnp.where(is_match, hits / rank, 0.0)) / jnp.maximum(num_rel, 1)
    inp = num_rel / jnp.maximum(jnp.max(jnp.where(is_match, rank, 0.0)), 1.0)

    if _DEDUP[protocol]:
        best = jnp.max(jnp.where(is_match, score, -jnp.inf))
        first = jnp.min(jnp.where(is_match & (score == best), cand, num_g))
        before = keep & _ranks_before(sim, g_idx, best, first)
        # Pids with any kept image ranked before the first hit, via the padded pid table.
        cmc_rank = 1 + jnp.sum(jnp.any(jnp.append(before, False)[members], axis=1))
    else:
        cmc_rank = jnp.min(jnp.where(is_match, rank, num_g + 1))
    return (
        cmc_rank.astype(jnp.int32),
        ap.astype(jnp.float32),
        jnp.where(valid, inp, 0.0).astype(jnp.float32),
        valid,
    )


def _all_finite(sim):
    """Whether sim [C, G] has no NaN or infinite score. A NaN- and order-safe sum of
    ``sim * 0`` (NaN exactly where a score is not finite) reduces ~2x faster on CPU than
    ``all(isfinite(sim))``."""
    return jnp.all(jnp.isfinite(jnp.sum(sim * 0.0, axis=1)))


def _kept(protocol, q_cam, g_cam, same_pid):
    """Which gallery images stay in the ranking (q_cam broadcasts against g_cam)."""
    if protocol == "sysu":
        return ~((q_cam == 3) & (g_cam == 2)) & jnp.ones_like(same_pid)
    if protocol == "llcm":
        return ~(same_pid & (g_cam == q_cam))
    return jnp.ones_like(same_pid)


def _ranks_before(s, i, t, j):
    """Whether (score s, index i) ranks before (score t, index j): higher score, or a tie
    broken by the lower gallery index."""
    return (s > t) | ((s == t) & (i < j))


def _vector(x: Any, name: str, n: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match sim, got {arr.shape}")
    return arr


def _int_vector(x: Any, name: str, n: int) -> np.ndarray:
    arr = _vector(x, name, n)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer camera ids, got dtype {arr.dtype}")
    return arr.astype(np.int32)
