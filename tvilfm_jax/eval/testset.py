"""The evaluator's test data: IR queries, the RGB gallery pool, trial galleries, caption pools.

One `TestSet` feeds every protocol, whichever way it was read:

    test = from_tfds("synthetic/llcm_tiny", data_dir="~/tfds")   # built records
    test = from_layout("/data/LLCM", "llcm")                      # a dataset root

Both give the same records in the same order: the `query` and `gallery` splits of the record
schema (tfds_builders/schema.py). The layout path takes its gallery pool and per-image RGB
captions from the same `DatasetIndex` the builders write from (`gallery_pool()`,
`gallery_captions`), so the two can never disagree. Images are read lazily, batch by batch,
during feature extraction: decoded from the records, or loaded from the files as the original
does (PIL, RGB, Lanczos to 288x144).

`gallery` is the union of every trial gallery of every mode (SYSU: "all" and "indoor"), and
`galleries[mode][trial]` are int32 indices into it in the trial's protocol order. RegDB has one
fixed gallery per trained split, stored as `galleries["all"][split]`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tvilfm_jax.data.datasets import DISPLAY_NAMES, LAYOUTS
from tvilfm_jax.data.images import IMAGE_HEIGHT, IMAGE_WIDTH, load_image



class TestDataError(ValueError):
    """Test records or their metadata are missing or malformed; the message names the source."""

    __test__ = False  # not a pytest test class


class RecordImages(Sequence):
    """uint8 [H, W, 3] images of a random-access sequence of records (field `image`)."""

    def __init__(self, records: Sequence[Mapping[str, Any]], where: str):
        self._records = records
        self._where = where

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> np.ndarray:
        image = np.asarray(self._records[index]["image"])
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise TestDataError(f"{self._where} record {index}: image must be uint8 [H, W, 3], "
                                f"got {image.dtype} {image.shape}")
        return image


class FileImages(Sequence):
    """Images read from `root / path` with the original's loading (PIL, RGB, Lanczos 288x144)."""

    def __init__(self, root: str | os.PathLike, paths: Sequence[str]):
        self._root = Path(root)
        self._paths = tuple(paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return load_image(self._root / self._paths[index], IMAGE_HEIGHT, IMAGE_WIDTH)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageTable:
    """N test images of one modality.

    Attributes:
      images: random-access uint8 [H, W, 3] images (read lazily).
      pids: int64 [N] identities; cams: int32 [N] cameras; paths: N relative paths.
      captions: N captions of each image itself ("" where the dataset has none): the IR BLIP
        caption for queries (the Fusion "filter" text), the RGB BLIP caption for the gallery.
    """

    images: Sequence[np.ndarray]
    pids: np.ndarray
    cams: np.ndarray
    paths: tuple[str, ...]
    captions: tuple[str, ...]

    def __post_init__(self):
        n = len(self.paths)
        for name in ("images", "pids", "cams", "captions"):
            if len(getattr(self, name)) != n:
                raise TestDataError(f"ImageTable: {name} has {len(getattr(self, name))} entries for {n} paths")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_captions(self) -> bool:
        return any(self.captions)


@dataclasses.dataclass(frozen=True, eq=False)
class TestSet:
    """Everything the protocols of one dataset (or one RegDB split) need.

    Attributes:
      layout: "sysu", "regdb" or "llcm".
      source: where it was read from (for reports and error messages).
      split: the RegDB trained split (1..10); None for SYSU-MM01 and LLCM.
      query: the IR query images (protocol order).
      gallery: the RGB gallery pool: the union of every trial gallery, sorted by path.
      galleries: mode -> trial -> int32 indices into `gallery`, in protocol order.
      id_caption_map: str(pid) -> unique RGB captions of that identity (the paper's query text).
    """

    __test__ = False  # not a pytest test class

    layout: str
    source: str
    split: int | None
    query: ImageTable
    gallery: ImageTable
    galleries: Mapping[str, Mapping[int, np.ndarray]]
    id_caption_map: Mapping[str, tuple[str, ...]]

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise TestDataError(f"{self.source}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not len(self.query) or not len(self.gallery):
            raise TestDataError(f"{self.source}: empty test set ({len(self.query)} queries, "
                                f"{len(self.gallery)} gallery images)")
        for mode, trials in self.galleries.items():
            for trial, idx in trials.items():
                if idx.size == 0 or idx.min() < 0 or idx.max() >= len(self.gallery):
                    raise TestDataError(f"{self.source}: gallery indices of mode {mode!r} trial {trial} "
                                        f"must lie in 0..{len(self.gallery) - 1}")

    @property
    def name(self) -> str:
        split = f" split {self.split}" if self.split is not None else ""
        return DISPLAY_NAMES[self.layout] + split

    def trials(self, mode: str) -> tuple[int, ...]:
        if mode not in self.galleries:
            raise KeyError(f"{self.source}: no {mode!r} galleries (modes: {sorted(self.galleries)})")
        return tuple(sorted(self.galleries[mode]))

    def gallery_indices(self, mode: str, trial: int) -> np.ndarray:
        if trial not in self.galleries.get(mode, {}):
            raise KeyError(f"{self.source}: no gallery for mode {mode!r} trial {trial} "
                           f"(trials: {self.trials(mode) if mode in self.galleries else 'none'})")
        return self.galleries[mode][trial]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _table(records: Sequence[Mapping[str, Any]], where: str) -> ImageTable:
    """Reads every field but the image (one pass); images stay lazy."""
    pids, cams, paths, captions = [], [], [], []
    for i in range(len(records)):
        record = records[i]
        try:
            pids.append(int(np.asarray(record["pid"])))
            cams.append(int(np.asarray(record["cam"])))
            paths.append(_text(record["path"]))
            captions.append(_text(record["caption"]))
        except KeyError as err:
            raise TestDataError(f"{where} record {i}: missing field {err}; expected the record schema "
                                "(image, pid, cam, path, caption, ...)") from None
    return ImageTable(RecordImages(records, where), np.asarray(pids, np.int64), np.asarray(cams, np.int32),
                      tuple(paths), tuple(captions))


def _galleries(raw: Any, where: str) -> dict[str, dict[int, np.ndarray]]:
    if not isinstance(raw, Mapping) or not raw:
        raise TestDataError(f"{where}: metadata 'galleries' must map mode -> trial -> gallery indices, got {raw!r:.80}")
    out = {}
    for mode, trials in raw.items():
        if not isinstance(trials, Mapping) or not trials:
            raise TestDataError(f"{where}: metadata galleries[{mode!r}] must map trial -> indices")
        try:
            out[str(mode)] = {int(t): np.asarray(idx, np.int32) for t, idx in trials.items()}
        except (TypeError, ValueError) as err:
            raise TestDataError(f"{where}: metadata galleries[{mode!r}]: {err}") from None
    return out


def _id_map(raw: Any, where: str) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise TestDataError(f"{where}: id_caption_map must map str(pid) -> captions, got {type(raw).__name__}")
    out = {}
    for pid, caps in raw.items():
        try:
            key = str(int(pid))
        except ValueError:
            raise TestDataError(f"{where}: id_caption_map key {pid!r} is not an integer pid") from None
        if isinstance(caps, (str, bytes)) or not isinstance(caps, Sequence):
            raise TestDataError(f"{where}: id_caption_map[{pid!r}] must be a list of captions, got {caps!r:.60}")
        out[key] = tuple(_text(c) for c in caps)
    return out


def from_records(
    query: Sequence[Mapping[str, Any]],
    gallery: Sequence[Mapping[str, Any]],
    metadata: Mapping[str, Any],
    source: str = "records",
) -> TestSet:
    """A TestSet from `query` / `gallery` record sequences and the builder metadata.

    metadata keys used: `layout`, `trial` (RegDB split or None), `galleries` (mode -> str(trial)
    -> indices into `gallery`), `id_caption_map` (str(pid) -> captions).
    """
    for key in ("layout", "galleries"):
        if key not in metadata:
            raise TestDataError(f"{source}: metadata has no {key!r} (keys: {sorted(metadata)})")
    return TestSet(
        layout=str(metadata["layout"]),
        source=source,
        split=None if metadata.get("trial") is None else int(metadata["trial"]),
        query=_table(query, f"{source} split 'query'"),
        gallery=_table(gallery, f"{source} split 'gallery'"),
        galleries=_galleries(metadata["galleries"], source),
        id_caption_map=_id_map(metadata.get("id_caption_map"), source),
    )


def from_tfds(name: str, data_dir: str | os.PathLike | None = None) -> TestSet:
    """The `query` / `gallery` splits and metadata of a built TFDS dataset (e.g. "regdb/trial1")."""
    import tensorflow_datasets as tfds

    data_dir = None if data_dir is None else os.path.expanduser(os.fspath(data_dir))
    where = f"TFDS dataset {name!r}" + (f" in {data_dir}" if data_dir else "")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            raise TestDataError(f"{where} is not built; build it first (see tfds_builders/README)")
        sources = tfds.data_source(name, data_dir=data_dir, download=False)
    except TestDataError:
        raise
    except Exception as err:  # noqa: BLE001 - tfds raises many kinds for unknown names / missing folders
        raise TestDataError(f"{where}: cannot open it ({type(err).__name__}: {err})") from None
    missing = [s for s in ("query", "gallery") if s not in sources]
    if missing:
        raise TestDataError(f"{where} has no split(s) {missing} (splits: {sorted(sources)})")
    return from_records(sources["query"], sources["gallery"], dict(builder.info.metadata), where)


def from_layout(root: str | os.PathLike, layout: str, *, trial: int | None = None,
                captioner: str = "Blip", with_text: bool = True, synthetic: bool = False) -> TestSet:
    """Reads a dataset root through `tvilfm_jax.data.layouts` (the records a builder would write).

    trial: the RegDB split (1..10); `synthetic` silences the standard-count warning.
    """
    from tvilfm_jax.data import layouts

    index = layouts.read_layout(root, layout, trial=trial, with_text=with_text, captioner=captioner,
                                synthetic=synthetic)
    pool, galleries = index.gallery_pool()
    own = index.gallery_captions
    query = ImageTable(
        FileImages(index.root, [q.path for q in index.query]),
        np.asarray([q.pid for q in index.query], np.int64),
        np.asarray([q.cam for q in index.query], np.int32),
        tuple(q.path for q in index.query),
        tuple(q.ir_caption or "" for q in index.query),
    )
    gallery = ImageTable(
        FileImages(index.root, [g.path for g in pool]),
        np.asarray([g.pid for g in pool], np.int64),
        np.asarray([g.cam for g in pool], np.int32),
        tuple(g.path for g in pool),
        tuple(own.get(g.path, "") for g in pool),
    )
    return TestSet(layout, f"{index.name} tree {index.root}", index.trial, query, gallery,
                   _galleries(galleries, str(index.root)), _id_map(index.id_caption_map, str(index.root)))
