"""A search's result: the top-k gallery rows of each query modality, as text, JSON and a grid PNG."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from tvilfm_jax.data.images import IMAGE_SIZE, load_image
from tvilfm_jax.retrieval.store import Features
from tvilfm_jax.viz import ranking_grid


@dataclasses.dataclass(frozen=True)
class Ranking:
    """Top-k of one query modality: rows int64 [k] into the gallery, scores float32 [k], best first."""

    modality: str
    rows: np.ndarray
    scores: np.ndarray


def hits(gallery: Features, ranking: Ranking) -> list[dict[str, Any]]:
    """One JSON-ready dict per retrieved row: rank, row, score, path, pid, cam."""
    out = []
    for rank, (row, score) in enumerate(zip(ranking.rows.tolist(), ranking.scores.tolist()), 1):
        entry = gallery.entries[row]
        out.append({"rank": rank, "row": row, "score": round(float(score), 6), "path": entry.path,
                    "pid": entry.pid, "cam": entry.cam})
    return out


def table(gallery: Features, rankings: Mapping[str, Ranking], query_pid: int | None) -> str:
    """The top-k of every modality as aligned text lines (a * marks the query's identity)."""
    lines = []
    for ranking in rankings.values():
        lines.append(f"{ranking.modality}:")
        for hit in hits(gallery, ranking):
            mark = "*" if query_pid is not None and hit["pid"] == query_pid else " "
            ids = f"pid {hit['pid']} cam {hit['cam']}" if hit["pid"] is not None else ""
            lines.append(f" {mark}{hit['rank']:3d}  {hit['score']:+.4f}  {hit['path']}  {ids}".rstrip())
    return "\n".join(lines)


def write_json(path: str | os.PathLike, gallery: Features, rankings: Mapping[str, Ranking],
               query: Mapping[str, Any], search: Mapping[str, Any]) -> str:
    """{"gallery", "model", "query", "search", "results": {modality: hits}} to `path`."""
    data = {"gallery": os.path.abspath(gallery.directory), "model": gallery.meta["model"]["path"],
            "query": dict(query), "search": dict(search),
            "results": {m: hits(gallery, r) for m, r in rankings.items()}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
    return os.fspath(path)


def write_grid(path: str | os.PathLike, gallery: Features, rankings: Mapping[str, Ranking],
               query_image: np.ndarray | None, query_text: str, query_pid: int | None) -> str:
    """One row per modality: the query image (grey when there is none) and its top-k gallery
    images, framed green / red by identity when the query's pid is known (grey otherwise)."""
    shown = query_image if query_image is not None else np.full((*IMAGE_SIZE, 3), 128, np.uint8)
    k = min(len(r.rows) for r in rankings.values())
    images = np.stack([np.stack([load_image(gallery.image_path(row)) for row in r.rows[:k]])
                       for r in rankings.values()])
    flags = None
    if query_pid is not None:
        flags = np.array([[gallery.entries[row].pid == query_pid for row in r.rows[:k]] for r in rankings.values()])
    n = len(rankings)
    return ranking_grid(np.stack([shown] * n), [query_text] * n, images, flags, path, top_k=k,
                        gallery_scores=np.stack([r.scores[:k] for r in rankings.values()]),
                        query_titles=[f"query: {m}" for m in rankings])
