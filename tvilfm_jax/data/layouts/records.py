"""What a layout reader returns: validated, ordered records of one dataset (or RegDB split)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from tvilfm_jax.data.datasets import DISPLAY_NAMES
from tvilfm_jax.data.protocols import GallerySet, ImageRef

__all__ = ["DatasetIndex", "GallerySet", "ImageRef", "QueryRecord", "TrainRecord"]


@dataclasses.dataclass(frozen=True)
class TrainRecord:
    """One training image.

    Attributes:
      path: relative to the dataset root, '/'-separated.
      pid: identity id as on disk (folder id).
      label: class index 0..C-1 shared by both modalities.
      cam: camera id (SYSU/LLCM test folders, LLCM "_c<NN>_" file names; RegDB: 2 visible,
        1 thermal; 0 where the layout carries none).
      caption: BLIP caption of this image (None when read without text).
      llm_caption: the LLM rephrase of `caption` (None when read without text).
    """

    path: str
    pid: int
    label: int
    cam: int
    caption: str | None = None
    llm_caption: str | None = None


@dataclasses.dataclass(frozen=True)
class QueryRecord:
    """One IR test query; `ir_caption` is its own BLIP caption, the Fusion "filter" text."""

    path: str
    pid: int
    cam: int
    ir_caption: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetIndex:
    """Everything a builder needs to write one dataset, validated and in the original's order.

    Attributes:
      layout: "sysu", "regdb" or "llcm".
      root: the dataset root.
      trial: the RegDB split (1..10); None for SYSU-MM01 and LLCM.
      captioner: the Text/<captioner>_{RGB,IR} set read, or None when read without text.
      num_classes: C, the number of training identities.
      train_rgb, train_ir: training records; SYSU in the pre-processing order (sorted ids ->
        cameras -> sorted files), RegDB/LLCM in split-file order.
      query: IR test queries in protocol order.
      galleries: gallery mode -> trial galleries stored once ("all", plus "indoor" for SYSU).
        RegDB has one fixed gallery, stored as trial `trial`.
      id_caption_map: str(pid) -> unique RGB captions of that identity (the test-time query
        text pool), or None without text.
      gallery_captions: gallery candidate path -> the BLIP caption of that RGB image itself,
        for the candidates a per-image RGB file of Text/ describes (RegDB: the visible test
        images; LLCM: their vis/ twins; SYSU-MM01: none in the released Text/, which holds
        training captions only). Empty without text. Lets an evaluator build identity caption
        pools from the gallery it uses.
      gallery_caption_files: the Text/ files `gallery_captions` came from (empty if none).
      skipped: images left out because they could not be read (strict=False only).
    """

    layout: str
    root: Path
    trial: int | None
    captioner: str | None
    num_classes: int
    train_rgb: tuple[TrainRecord, ...]
    train_ir: tuple[TrainRecord, ...]
    query: tuple[QueryRecord, ...]
    galleries: Mapping[str, GallerySet]
    id_caption_map: Mapping[str, tuple[str, ...]] | None
    gallery_captions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    gallery_caption_files: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return DISPLAY_NAMES[self.layout]

    def counts(self) -> dict[str, int]:
        """Sizes for reports: images per split, ids, and gallery images per mode."""
        counts = {
            "train_rgb": len(self.train_rgb),
            "train_ir": len(self.train_ir),
            "train_ids": self.num_classes,
            "query": len(self.query),
            "query_ids": len({q.pid for q in self.query}),
        }
        for mode, galleries in self.galleries.items():
            counts[f"gallery_{mode}_union"] = len(galleries.records)
        return counts

    def gallery_pool(self) -> tuple[list[ImageRef], dict[str, dict[str, list[int]]]]:
        """All gallery candidates of every mode, sorted by path, and each trial gallery as indices.

        Returns:
          records: the candidates (what a builder writes as its `gallery` split), in order.
          trials: mode -> str(trial) -> indices into `records`, in that trial's protocol order
            (JSON-ready, so an evaluator selects each trial gallery from the one pool).
        """
        by_path: dict[str, ImageRef] = {}
        for gallery_set in self.galleries.values():
            for ref in gallery_set.records:
                by_path.setdefault(ref.path, ref)
        records = [by_path[p] for p in sorted(by_path)]
        position = {r.path: i for i, r in enumerate(records)}
        trials = {
            mode: {str(t): [position[g.path] for g in gallery_set.gallery(t)] for t in gallery_set.trials}
            for mode, gallery_set in self.galleries.items()
        }
        return records, trials
