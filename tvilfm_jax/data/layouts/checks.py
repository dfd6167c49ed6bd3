"""Checks shared by the three layout readers, and the final step that builds a `DatasetIndex`."""

from __future__ import annotations

import collections
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tvilfm_jax.data import images as image_io
from tvilfm_jax.data import protocols
from tvilfm_jax.data.datasets import DISPLAY_NAMES
from tvilfm_jax.data.layouts.problems import DatasetError, Problems, SkippedImagesWarning, warn_unexpected_counts
from tvilfm_jax.data.layouts.records import DatasetIndex, GallerySet, QueryRecord, TrainRecord

#: How hard to look at image files: "exists" (never opened), "header" (PIL reads the header:
#: catches non-images and empty files), "decode" (full decode + resize: catches truncation).
IMAGE_CHECKS = ("exists", "header", "decode")


class ExistingFiles:
    """Cached `isfile` on paths relative to a root."""

    def __init__(self, root: Path):
        self._root = root
        self._known: dict[str, bool] = {}

    def __call__(self, relative: str) -> bool:
        known = self._known.get(relative)
        if known is None:
            known = self._known[relative] = os.path.isfile(self._root / relative)
        return known


def require_root(layout: str, root: Path) -> None:
    """Raises at once if there is no tree to look at."""
    if not root.is_dir():
        raise DatasetError(DISPLAY_NAMES[layout], root, {"missing folders": (1, (f"the dataset root {root} is not a directory",))})


def require_folders(root: Path, folders: Iterable[str], problems: Problems) -> None:
    for folder in folders:
        if not (root / folder).is_dir():
            problems.add("missing folders", f"{folder}/")


def read_ids(root: Path, relative: str, problems: Problems) -> list[int]:
    """Ids of an id file, reporting (not raising) a missing or malformed file."""
    try:
        return protocols.read_id_file(root / relative)
    except FileNotFoundError:
        problems.add("missing split files", relative)
    except ValueError as err:
        problems.add("malformed split files", str(err))
    return []


def report_duplicates(values: Iterable[object], kind: str, problems: Problems) -> None:
    counts = collections.Counter(values)
    problems.extend(kind, [f"{v!r} x{n}" for v, n in counts.items() if n > 1])


def read_split(
    root: Path,
    relative: str,
    modality_folder: str,
    exists: Callable[[str], bool],
    problems: Problems,
) -> list[tuple[str, int, int]]:
    """Entries (path, label, folder pid) of a RegDB/LLCM split file whose images exist.

    Reports a missing, binary or empty file, malformed lines, paths outside
    `<modality_folder>/<pid>/`, images that do not exist and repeated paths; such entries are
    left out.
    """
    path = root / relative
    if not path.is_file():
        problems.add("missing split files", relative)
        return []
    try:
        text = protocols.read_text(path, "split file", "'<relative path> <label>' lines")
    except ValueError as err:
        problems.add("malformed split files", str(err))
        return []
    parsed, bad = protocols.parse_split_lines(text)
    if not parsed and not bad:
        problems.add("empty split files (expected '<relative path> <label>' lines)", relative)
        return []
    problems.extend(f"{relative}: lines not of the form '<relative path> <label>'", [f"line {n}: {line!r}" for n, line in bad])
    report_duplicates((p for p, _, _ in parsed), f"{relative}: images listed more than once", problems)
    entries = []
    for image, label, number in parsed:
        if not image.startswith(modality_folder + "/"):
            problems.add(f"{relative}: images outside {modality_folder}/", f"line {number}: {image}")
            continue
        try:
            pid = protocols.folder_pid(image)
        except ValueError as err:
            problems.add(f"{relative}: paths without an integer identity folder", f"line {number}: {err}")
            continue
        if not exists(image):
            problems.add(f"{relative}: names images that do not exist", f"line {number}: {image}")
            continue
        entries.append((image, label, pid))
    return entries


def check_train_labels(
    rgb: Sequence[tuple[str, int, int]],
    ir: Sequence[tuple[str, int, int]],
    rgb_shown: str,
    ir_shown: str,
    problems: Problems,
) -> int:
    """Checks split-file labels: both modalities use exactly 0..C-1, one label per identity.

    The identity sampler indexes per-label image lists of both modalities, so a label missing
    from one side, a gap, or a label shared by two identities would silently corrupt batches.
    Entries are (path, label, pid). Returns C (0 if there are no labels).
    """
    label_pids: dict[int, set[int]] = collections.defaultdict(set)
    pid_labels: dict[int, set[int]] = collections.defaultdict(set)
    for entries in (rgb, ir):
        for _, label, pid in entries:
            label_pids[label].add(pid)
            pid_labels[pid].add(label)
    problems.extend(
        "labels shared by several identities",
        [f"label {lab}: ids {sorted(p)}" for lab, p in sorted(label_pids.items()) if len(p) > 1],
    )
    problems.extend(
        "identities with several labels",
        [f"id {pid}: labels {sorted(l)}" for pid, l in sorted(pid_labels.items()) if len(l) > 1],
    )
    rgb_labels = {label for _, label, _ in rgb}
    ir_labels = {label for _, label, _ in ir}
    labels = rgb_labels | ir_labels
    if not labels:
        return 0
    num_classes = max(max(labels) + 1, len(labels))
    not_dense = sorted(set(range(num_classes)) ^ labels)
    if not_dense:
        problems.add(
            "training labels are not exactly 0..C-1",
            f"{len(labels)} distinct labels in {rgb_shown} and {ir_shown}, min {min(labels)}, max {max(labels)}; "
            f"missing or out of range: {not_dense[:10]}",
        )
    problems.extend(f"labels in {rgb_shown} but not in {ir_shown}", map(str, sorted(rgb_labels - ir_labels)))
    problems.extend(f"labels in {ir_shown} but not in {rgb_shown}", map(str, sorted(ir_labels - rgb_labels)))
    return num_classes


def unreadable_images(root: Path, paths: Sequence[str], level: str, workers: int | None) -> dict[str, str]:
    """Path -> error message for each image the `level` check rejects (see IMAGE_CHECKS)."""
    if level not in IMAGE_CHECKS:
        raise ValueError(f"images must be one of {IMAGE_CHECKS}, got {level!r}")
    if level == "exists" or not paths:
        return {}
    check = image_io.probe_image if level == "header" else image_io.load_image

    def error(path: str) -> str | None:
        try:
            check(root / path)
        except image_io.ImageReadError as err:
            return str(err)
        return None

    # PIL releases the GIL while decoding and the header check is I/O bound, so threads help.
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        errors = list(pool.map(error, paths))
    return {p: e for p, e in zip(paths, errors) if e is not None}


def finish(
    layout: str,
    root: Path,
    problems: Problems,
    *,
    trial: int | None,
    captioner: str | None,
    num_classes: int,
    train_rgb: Sequence[TrainRecord],
    train_ir: Sequence[TrainRecord],
    query: Sequence[QueryRecord],
    galleries: Mapping[str, GallerySet],
    id_caption_map: Mapping[str, tuple[str, ...]] | None,
    gallery_captions: Mapping[str, str],
    gallery_caption_files: Sequence[str],
    images: str,
    strict: bool,
    workers: int | None,
    expected_counts: Mapping[str, int],
    synthetic: bool,
) -> DatasetIndex:
    """Image checks, then one `DatasetError` for all problems, then count warnings."""
    dataset = DISPLAY_NAMES[layout]
    paths = list(dict.fromkeys(
        [r.path for r in train_rgb]
        + [r.path for r in train_ir]
        + [q.path for q in query]
        + [g.path for gs in galleries.values() for g in gs.records]
    ))
    bad = unreadable_images(root, paths, images, workers)
    if bad and strict:
        problems.extend("unreadable or corrupt images (strict=False skips them)", bad.values())
    elif bad:
        train_rgb = [r for r in train_rgb if r.path not in bad]
        train_ir = [r for r in train_ir if r.path not in bad]
        query = [q for q in query if q.path not in bad]
        galleries = {mode: _without(gs, bad) for mode, gs in galleries.items()}
        left = {r.label for r in train_rgb} & {r.label for r in train_ir}
        problems.extend(
            "identities left without RGB or IR training images after skipping unreadable ones",
            [f"label {lab}" for lab in range(num_classes) if lab not in left],
        )
        warnings.warn(
            f"{dataset} at {root}: skipped {len(bad)} unreadable image(s), e.g. {next(iter(bad.values()))}",
            SkippedImagesWarning,
            stacklevel=3,
        )
    if not problems:
        # TFDS cannot write an empty split; this names what is empty when no other problem explains it.
        problems.extend("nothing left to write (a dataset needs training images of both modalities, queries and a gallery)", [
            what for what, records in (("no RGB training images", train_rgb), ("no IR training images", train_ir),
                                       ("no query images", query))
            if not records
        ] + [f"an empty {mode!r} gallery" for mode, gs in galleries.items() if not gs.records])
    problems.raise_if_any(dataset, root)
    index = DatasetIndex(
        layout=layout,
        root=root,
        trial=trial,
        captioner=captioner,
        num_classes=num_classes,
        train_rgb=tuple(train_rgb),
        train_ir=tuple(train_ir),
        query=tuple(query),
        galleries=dict(galleries),
        id_caption_map=None if id_caption_map is None else dict(id_caption_map),
        gallery_captions={p: c for p, c in gallery_captions.items() if p not in bad},
        gallery_caption_files=tuple(gallery_caption_files),
        skipped=tuple(sorted(bad)),  # empty unless strict=False (else we raised above)
    )
    warn_unexpected_counts(dataset, root, expected_counts, index.counts(), synthetic)
    return index


def _without(galleries: GallerySet, bad: Mapping[str, str]) -> GallerySet:
    kept = [[g for g in galleries.gallery(t) if g.path not in bad] for t in galleries.trials]
    return protocols.union_galleries(kept, galleries.trials)
