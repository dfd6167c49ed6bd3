"""Recall of the faiss index of `python -m tvilfm_jax.search --index faiss` against exact search.

    python -m benchmarks.search_index [--sizes 10000,100000,1000000] [--dim 2048] [--queries 200]

For each gallery size N: N clustered unit vectors of dimension D (the real embedding size 2048),
stored as a float16 memmap in a temporary folder (10^6 x 2048 is 4 GB on disk, not in memory):
`--clusters` centres drawn N(0, I), each vector a centre plus N(0, sigma^2 I) noise, normalised, so
neighbourhoods are crowded as identities are (sigma makes the in-cluster cosine ~0.5). Queries are
fresh draws of the same kind. Ground truth is `retrieval.index.exact_top_k` (the CLI's exact
search) on the same float16-stored vectors read as float32; the index is `build_index` (IVF
with ~sqrt(N) lists, 8-bit scalar quantisation, inner product), as the CLI builds it. Reports
build time, index size, and recall@1 / recall@10 (|faiss top-k intersect exact top-k| / k) and
per-query search time for several nprobe (and all lists), with and without the CLI's exact
re-ranking of 4k candidates; --time_box seconds stop before a size whose
estimated cost exceeds it. Results: benchmarks/results/search_index.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import faiss
import numpy as np

from tvilfm_jax.retrieval import index

CHUNK = 32768


def write_gallery(path: str, n: int, dim: int, centres: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """N normalised clustered vectors as a float16 [N, D] memmap at `path` (chunk by chunk)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for start in range(0, n, CHUNK):
        out[start:start + CHUNK] = draw(np.random.default_rng([seed, start]), min(CHUNK, n - start), centres, sigma)
    out.flush()
    return np.load(path, mmap_mode="r")


def draw(rng: np.random.Generator, n: int, centres: np.ndarray, sigma: float) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + sigma * rng.standard_normal((n, centres.shape[1]), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, truth)]))


def run_size(n: int, args, centres: np.ndarray, queries: np.ndarray, folder: str) -> dict:
    t0 = time.perf_counter()
    gallery = write_gallery(os.path.join(folder, f"g{n}.npy"), n, args.dim, centres, args.sigma, args.seed)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, truth = index.exact_top_k(gallery, queries, args.k)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    built = index.build_index(gallery)
    t_build = time.perf_counter() - t0
    rows = []
    for nprobe in sorted({p for p in args.nprobe if p < index.num_lists(n)} | {index.num_lists(n)}):
        for refined in (False, True):
            t0 = time.perf_counter()
            _, found = index.faiss_top_k(built, queries, args.k, nprobe, gallery=gallery if refined else None)
            per_query = (time.perf_counter() - t0) / len(queries)
            rows.append({"nprobe": nprobe, "refine": index.REFINE if refined else None,
                         "recall@1": recall(found, truth, 1), f"recall@{args.k}": recall(found, truth, args.k),
                         "ms_per_query": 1e3 * per_query})
    result = {"n": n, "lists": index.num_lists(n), "factory": index.factory_string(n), "data_s": t_data,
              "exact_s": t_exact, "exact_ms_per_query": 1e3 * t_exact / len(queries), "build_s": t_build,
              "index_bytes": faiss.serialize_index(built).nbytes, "results": rows}
    os.remove(os.path.join(folder, f"g{n}.npy"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--sigma", type=float, default=1.0, help="noise per dimension (centres are N(0, 1))")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nprobe", default="8,32,128")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time_box", type=float, default=1800, help="seconds; skip sizes estimated to exceed it")
    parser.add_argument("--json", default="benchmarks/results/search_index.json")
    args = parser.parse_args()
    args.nprobe = [int(v) for v in args.nprobe.split(",")]
    sizes = [int(v) for v in args.sizes.split(",")]
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim), np.float32)
    queries = draw(np.random.default_rng([args.seed, 2**32 - 1]), args.queries, centres, args.sigma).astype(np.float16)
    queries = queries.astype(np.float32)
    report = {"dim": args.dim, "clusters": args.clusters, "sigma": args.sigma, "queries": args.queries, "k": args.k,
              "faiss": faiss.__version__, "numpy": np.__version__, "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(), "sizes": []}
    with tempfile.TemporaryDirectory() as folder:
        last = None
        for n in sizes:
            if last is not None:
                estimate = (last["data_s"] + last["exact_s"] + last["build_s"]) * n / last["n"]
                if estimate > args.time_box:
                    print(f"N={n}: skipped, estimated {estimate:.0f} s > --time_box {args.time_box:.0f} s")
                    report["sizes"].append({"n": n, "skipped": f"estimated {estimate:.0f} s"})
                    continue
            last = run_size(n, args, centres, queries, folder)
            report["sizes"].append(last)
            print(json.dumps(last))
            os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
