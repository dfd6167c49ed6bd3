"""Reading and validating the on-disk SYSU-MM01, RegDB and LLCM trees (docs/original.md §5, §6.4-6.6, §9).

One reader per dataset returns a `DatasetIndex`: training records of both modalities with
labels and (optionally) captions, IR queries with their filter captions, the trial galleries
stored once with the gallery images' own RGB captions where Text/ has them, and the identity
caption pool. Everything is checked before anything is written:
a reader raises ONE `DatasetError` listing every problem (count + first offenders), so the
TFDS builders call it first.

    index = read_layout("/data/RegDB", "regdb", trial=1)          # or read_regdb(root, 1)
    index = read_sysu("/data/SYSU-MM01", with_text=False)          # stage 1 needs no text
    index = read_llcm(root, images="decode", strict=False)          # skip corrupt images

Module map: `records` (what comes back), `problems` (the error report), `checks` (shared
checks), `sysu`, `regdb`, `llcm` (one reader each); the Text/ files are read with
`tvilfm_jax.data.text.reading` (key normalisation included).
"""

from __future__ import annotations

import os

from tvilfm_jax.data.datasets import LAYOUTS
from tvilfm_jax.data.layouts.checks import IMAGE_CHECKS
from tvilfm_jax.data.layouts.llcm import read_llcm
from tvilfm_jax.data.layouts.problems import DatasetCountWarning, DatasetError, SkippedImagesWarning
from tvilfm_jax.data.layouts.records import DatasetIndex, GallerySet, ImageRef, QueryRecord, TrainRecord
from tvilfm_jax.data.layouts.regdb import read_regdb
from tvilfm_jax.data.layouts.sysu import read_sysu
from tvilfm_jax.data.text.reading import relative_key

__all__ = [
    "IMAGE_CHECKS",
    "DatasetCountWarning",
    "DatasetError",
    "DatasetIndex",
    "GallerySet",
    "ImageRef",
    "QueryRecord",
    "SkippedImagesWarning",
    "TrainRecord",
    "read_layout",
    "read_llcm",
    "read_regdb",
    "read_sysu",
    "relative_key",
]


def read_layout(root: str | os.PathLike, layout: str, *, trial: int | None = None, **kwargs) -> DatasetIndex:
    """Dispatches to `read_sysu`, `read_regdb` (needs `trial`) or `read_llcm`; kwargs pass through."""
    if layout == "regdb":
        if trial is None:
            raise ValueError("RegDB is read one split at a time: pass trial=1..10")
        return read_regdb(root, trial, **kwargs)
    if trial is not None:
        raise ValueError(f"trial applies to RegDB splits only, not {layout!r} (gallery trials: trials=...)")
    if layout == "sysu":
        return read_sysu(root, **kwargs)
    if layout == "llcm":
        return read_llcm(root, **kwargs)
    raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
