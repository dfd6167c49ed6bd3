"""Top-k search of query vectors against a gallery array: exact, or through a faiss index.

Scores are inner products q . g of float32 rows; the gallery kinds are L2-normalised, so they
are cosines (MER: the sum of three cosines, one inner product with the summed query vector).

exact: q . g^T in row chunks of the (memory-mapped) gallery, keeping a running top-k (each
  chunk's candidates by partition, not a full sort); ties go to the lower gallery row, as the
  evaluator's metrics break them.
faiss: an IVF index with 8-bit scalar-quantised vectors (`faiss.index_factory(D,
  "IVF<nlist>,SQ8", METRIC_INNER_PRODUCT)`, 1 byte per dimension: 2 GB for 10^6 x 2048),
  trained on a sample of the gallery and searched over `nprobe` of its lists; its 4k best
  candidates are re-scored exactly from the gallery array. Approximate: BENCHMARKS.md reports
  its recall@k against exact search.
"""

from __future__ import annotations

import math
import os

import faiss
import numpy as np

#: Gallery rows per exact-search matmul and per faiss add: 64 MiB of float32 at D = 256.
CHUNK_ROWS = 65536
#: Training points per IVF list (faiss wants at least 39).
TRAIN_PER_LIST = 64
DEFAULT_NPROBE = 32
#: Candidates per result that exact scores re-rank (`faiss_top_k` with the gallery).
REFINE = 4


def exact_top_k(gallery: np.ndarray, queries: np.ndarray, k: int,
                chunk_rows: int = CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """gallery [N, D], queries [Q, D] -> (scores float32 [Q, k'], rows int64 [Q, k']), best first,
    k' = min(k, N)."""
    queries = np.asarray(queries, np.float32)
    best = [(np.zeros(0, np.float32), np.zeros(0, np.int64))] * len(queries)
    for start in range(0, len(gallery), chunk_rows):
        scores = queries @ np.asarray(gallery[start:start + chunk_rows], np.float32).T
        best = [_merge(*kept, s, start, k) for kept, s in zip(best, scores)]
    return np.stack([s for s, _ in best]), np.stack([r for _, r in best])


def _merge(kept_scores: np.ndarray, kept_rows: np.ndarray, scores: np.ndarray, start: int,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top k of kept rows and a chunk's scores [c] (rows start..), ties to the lower row."""
    if len(scores) > k:  # everything at least the chunk's k-th best, ties at the k-th included
        candidates = np.flatnonzero(scores >= np.partition(scores, len(scores) - k)[len(scores) - k])
    else:
        candidates = np.arange(len(scores))
    all_scores = np.concatenate([kept_scores, scores[candidates]])
    all_rows = np.concatenate([kept_rows, candidates + start])
    order = np.lexsort((all_rows, -all_scores))[:k]
    return all_scores[order], all_rows[order]


def num_lists(n: int) -> int:
    """IVF lists for n vectors: ~sqrt(n) (1,000 for 10^6; more lists search faster but k-means
    training, ~lists^2 work, gets long on a CPU), and at most n / 39 so training has enough points."""
    return max(1, min(round(math.sqrt(n)), n // 39))


def factory_string(n: int) -> str:
    return f"IVF{num_lists(n)},SQ8"


def build_index(gallery: np.ndarray, *, seed: int = 0, chunk_rows: int = CHUNK_ROWS) -> faiss.Index:
    """An IVF-SQ8 inner-product index of gallery [N, D] (memory-mapped is fine: added in chunks)."""
    n, dim = gallery.shape
    index = faiss.index_factory(dim, factory_string(n), faiss.METRIC_INNER_PRODUCT)
    nlist = num_lists(n)
    sample = min(n, TRAIN_PER_LIST * nlist)
    rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    index.train(np.ascontiguousarray(gallery[rows], np.float32))
    for start in range(0, n, chunk_rows):
        index.add(np.ascontiguousarray(gallery[start:start + chunk_rows], np.float32))
    return index


def faiss_top_k(index: faiss.Index, queries: np.ndarray, k: int, nprobe: int = DEFAULT_NPROBE,
                gallery: np.ndarray | None = None, refine: int = REFINE) -> tuple[np.ndarray, np.ndarray]:
    """As `exact_top_k` through `index`. With `gallery` (the indexed [N, D] array, memory-mapped
    is fine), the index proposes refine * k rows and their exact scores pick the top k, which
    undoes the 8-bit rounding of near-tied scores. Rows the index cannot fill are cut."""
    queries = np.ascontiguousarray(queries, np.float32)
    faiss.extract_index_ivf(index).nprobe = int(nprobe)
    wanted = k if gallery is None else k * refine
    scores, rows = index.search(queries, min(wanted, index.ntotal))
    keep = int((rows >= 0).all(axis=0).sum())
    scores, rows = scores[:, :keep], rows[:, :keep].astype(np.int64)
    if gallery is not None:
        unique, inverse = np.unique(rows, return_inverse=True)
        vectors = np.asarray(gallery[unique], np.float32)  # sorted rows: sequential reads of a memmap
        scores = np.einsum("qd,qkd->qk", queries, vectors[inverse.reshape(rows.shape)])
        order = _best_first(scores, rows)[:, :k]
        scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
    return scores, rows


def _best_first(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per query, the column order by score descending, ties to the lower row. [Q, K] -> [Q, K]."""
    return np.stack([np.lexsort((r, -s)) for s, r in zip(scores, rows)])


def load_or_build_index(gallery: np.ndarray, path: str | os.PathLike) -> faiss.Index:
    """The index stored at `path`, or a new one built from `gallery` and written there."""
    path = os.fspath(path)
    if os.path.isfile(path):
        index = faiss.read_index(path)
        if index.ntotal == len(gallery) and index.d == gallery.shape[1]:
            return index
    index = build_index(gallery)
    tmp = path + ".tmp"
    faiss.write_index(index, tmp)
    os.replace(tmp, path)
    return index
