"""Test-time query and gallery lists of the three benchmarks (docs/original.md §6.4-6.6).

Every function returns a list of `ImageRef(path, pid, cam)` with `path` relative to the dataset
root ('/'-separated), in exactly the order the original test code builds it:

- SYSU-MM01: ids from `exp/test_id.txt`, formatted "%04d" and sorted as strings; query = every
  file of IR cameras 3 then 6; gallery = for each id, for each RGB camera (1, 2, 4, 5 for
  "all"; 1, 2 for "indoor") whose folder exists, one `choice(sorted(files))`.
- LLCM: the same walk over `test_nir/cam{1,2,4..9}` (query) and `test_vis/cam{1..9}` (gallery),
  ids from `idx/test_id.txt`.
- RegDB: the fixed lists `idx/test_thermal_{t}.txt` (query, cam 1) and
  `idx/test_visible_{t}.txt` (gallery, cam 2); pids from the folder id in the path.

Galleries draw from a private `random.Random(trial)`, which yields the same sequence as the
original's `random.seed(trial)` + `random.choice` without touching the global RNG.

Two deliberate differences, both only where the original would crash or read garbage: folder
listings skip hidden files (".DS_Store") and sub-folders, and an existing but empty gallery
folder raises a ValueError naming it (the original's `choice([])` raises IndexError).

This module is the bottom of the data stack: it only reads folders and index files and raises
FileNotFoundError / ValueError naming the offending file. `tvilfm_jax.data.layouts` builds on it
and turns such failures into one `DatasetError` report.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tvilfm_jax.data.datasets import (
    GALLERY_TRIALS,
    LLCM_GALLERY_CAMS,
    LLCM_QUERY_CAMS,
    REGDB_GALLERY_CAM,
    REGDB_QUERY_CAM,
    SYSU_GALLERY_CAMS,
    SYSU_QUERY_CAMS,
)


class ImageRef(NamedTuple):
    """One test image: `path` relative to the dataset root, identity `pid`, camera `cam`."""

    path: str
    pid: int
    cam: int


class RegDBSplit(NamedTuple):
    """RegDB test lists of one trial: thermal queries (cam 1) and visible gallery (cam 2)."""

    query: list[ImageRef]
    gallery: list[ImageRef]


@dataclasses.dataclass(frozen=True, eq=False)
class GallerySet:
    """Several trial galleries stored once.

    Attributes:
      records: the union of all trial galleries, sorted by path (features are extracted once).
      trials: the trial ids, e.g. (0, ..., 9).
      indices: per trial, int32 [n_t] indices into `records`, in that trial's gallery order.
    """

    records: tuple[ImageRef, ...]
    trials: tuple[int, ...]
    indices: tuple[np.ndarray, ...]

    def gallery(self, trial: int) -> list[ImageRef]:
        """The gallery of trial id `trial`, in protocol order."""
        try:
            position = self.trials.index(trial)
        except ValueError:
            raise KeyError(f"trial {trial} is not in this gallery set (trials {self.trials})") from None
        return [self.records[i] for i in self.indices[position]]


# ---------------------------------------------------------------------------------------------
# Reading index files and folders (shared with tvilfm_jax.data.layouts)


def read_id_file(path: str | os.PathLike) -> list[int]:
    """Identity ids of a SYSU/LLCM id file: one line of comma-separated integers.

    Only the first line is read, as the original does. Empty fields (a trailing comma) are
    ignored; anything else that is not an integer raises ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"id file {path} does not exist (expected one line of comma-separated ids)")
    lines = read_text(path, "id file", "one line of comma-separated ids").splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"id file {path} is empty (expected one line of comma-separated ids)")
    ids = []
    for field in lines[0].split(","):
        if not field.strip():
            continue
        try:
            ids.append(int(field))
        except ValueError:
            raise ValueError(f"id file {path}: {field.strip()!r} is not an integer id") from None
    return ids


def read_text(path: str | os.PathLike, what: str, expected: str) -> str:
    """The UTF-8 text of an index file; ValueError naming it if it is binary or another encoding."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}; "
                         f"expected {expected})") from None


def parse_split_lines(text: str) -> tuple[list[tuple[str, int, int]], list[tuple[int, str]]]:
    """Parses a RegDB/LLCM split file ("<relative path> <label>" per line).

    Returns ([(path, label, line_number)], [(line_number, bad_line)]); line numbers are 1-based.
    """
    entries, bad = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            bad.append((number, line))
            continue
        try:
            label = int(fields[1])
        except ValueError:
            bad.append((number, line))
            continue
        entries.append((_clean_relative(fields[0]), label, number))
    return entries, bad


def read_split_file(path: str | os.PathLike) -> list[tuple[str, int]]:
    """[(relative path, label)] of a split file; ValueError naming the file on a bad line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist")
    entries, bad = parse_split_lines(read_text(path, "split file", "'<relative path> <label>' lines"))
    if bad:
        number, line = bad[0]
        raise ValueError(f"split file {path}, line {number}: expected '<relative path> <label>', got {line!r}")
    return [(p, label) for p, label, _ in entries]


def list_images(folder: str | os.PathLike) -> list[str] | None:
    """Sorted file names in `folder`, or None if it is not a directory."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_file())


def folder_pid(relative_path: str) -> int:
    """Identity id of a RegDB/LLCM-style path "<modality>/<pid>/<file>": the second component."""
    parts = relative_path.split("/")
    if len(parts) < 3:
        raise ValueError(f"{relative_path!r} is not of the form '<modality>/<pid>/<file>'")
    try:
        return int(parts[1])
    except ValueError:
        raise ValueError(f"{relative_path!r}: folder {parts[1]!r} is not an integer identity id") from None


def _clean_relative(path: str) -> str:
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path.lstrip("/")


def id_folders(ids: Iterable[int]) -> list[str]:
    """Identity folder names in the original's visiting order."""
    # The original formats with "%04d" and sorts the strings; keep both steps (ids > 9999
    # would sort differently as numbers).
    return sorted("%04d" % i for i in ids)


def _walk(root: Path, ids: Iterable[int], cam_dirs: Sequence[tuple[int, str]]) -> Iterator[tuple[str, int, str, list[str]]]:
    """Yields (id folder, cam, relative folder, sorted files) for each existing id/cam folder."""
    for id_folder in id_folders(ids):
        for cam, cam_dir in cam_dirs:
            relative = f"{cam_dir}/{id_folder}"
            files = list_images(root / relative)
            if files is not None:
                yield id_folder, cam, relative, files


def walk_images(root: Path, ids: Iterable[int], cam_dirs: Sequence[tuple[int, str]]) -> list[ImageRef]:
    """Every file of `<cam_dir>/<%04d id>/` for sorted ids, then cameras in the given order.

    `cam_dirs` pairs each camera id with its folder relative to `root`, e.g. (3, "cam3").
    """
    return [
        ImageRef(f"{relative}/{name}", int(id_folder), cam)
        for id_folder, cam, relative, files in _walk(root, ids, cam_dirs)
        for name in files
    ]


def sample_gallery(root: Path, ids: Iterable[int], cam_dirs: Sequence[tuple[int, str]], trial: int) -> list[ImageRef]:
    """One `Random(trial).choice(sorted(files))` per existing id/camera folder, in walk order."""
    rng = random.Random(operator.index(trial))
    gallery = []
    for id_folder, cam, relative, files in _walk(root, ids, cam_dirs):
        if not files:
            raise ValueError(f"gallery folder {root / relative} exists but holds no images")
        gallery.append(ImageRef(f"{relative}/{rng.choice(files)}", int(id_folder), cam))
    return gallery


# ---------------------------------------------------------------------------------------------
# The protocols


def sysu_cam_dirs(cams: Iterable[int]) -> list[tuple[int, str]]:
    """(cam, folder) pairs of SYSU-MM01 cameras: "cam<c>"."""
    return [(c, f"cam{c}") for c in cams]


def llcm_cam_dirs(modality: str, cams: Iterable[int]) -> list[tuple[int, str]]:
    """(cam, folder) pairs of LLCM test cameras: "<test_vis|test_nir>/cam<c>"."""
    return [(c, f"{modality}/cam{c}") for c in cams]


def sysu_query(root: str | os.PathLike) -> list[ImageRef]:
    """All IR images (cams 3, 6) of the SYSU-MM01 test ids; the same for "all" and "indoor"."""
    root = Path(root)
    ids = read_id_file(root / "exp" / "test_id.txt")
    return walk_images(root, ids, sysu_cam_dirs(SYSU_QUERY_CAMS))


def sysu_gallery(root: str | os.PathLike, trial: int, mode: str = "all") -> list[ImageRef]:
    """Single-shot SYSU-MM01 gallery of `trial`: one RGB image per test id per camera present."""
    if mode not in SYSU_GALLERY_CAMS:
        raise ValueError(f"SYSU gallery mode must be one of {sorted(SYSU_GALLERY_CAMS)}, got {mode!r}")
    root = Path(root)
    ids = read_id_file(root / "exp" / "test_id.txt")
    return sample_gallery(root, ids, sysu_cam_dirs(SYSU_GALLERY_CAMS[mode]), trial)


def llcm_query(root: str | os.PathLike) -> list[ImageRef]:
    """All test_nir images (cams 1, 2, 4-9) of the LLCM test ids."""
    root = Path(root)
    ids = read_id_file(root / "idx" / "test_id.txt")
    return walk_images(root, ids, llcm_cam_dirs("test_nir", LLCM_QUERY_CAMS))


def llcm_gallery(root: str | os.PathLike, trial: int) -> list[ImageRef]:
    """Single-shot LLCM gallery of `trial`: one test_vis image per test id per camera present."""
    root = Path(root)
    ids = read_id_file(root / "idx" / "test_id.txt")
    return sample_gallery(root, ids, llcm_cam_dirs("test_vis", LLCM_GALLERY_CAMS), trial)


def regdb_split(root: str | os.PathLike, trial: int) -> RegDBSplit:
    """RegDB test lists of split `trial` (1..10), in file order; pids from the folder id."""
    root = Path(root)
    lists = []
    for modality, cam in (("thermal", REGDB_QUERY_CAM), ("visible", REGDB_GALLERY_CAM)):
        entries = read_split_file(root / "idx" / f"test_{modality}_{trial}.txt")
        lists.append([ImageRef(path, folder_pid(path), cam) for path, _ in entries])
    return RegDBSplit(*lists)


def union_galleries(galleries: Sequence[Sequence[ImageRef]], trials: Sequence[int] | None = None) -> GallerySet:
    """Stores trial galleries once: their union sorted by path, plus per-trial indices into it.

    `trials` names the galleries (default 0..len-1). Two refs with the same path must agree on
    pid and cam.
    """
    trials = tuple(range(len(galleries))) if trials is None else tuple(trials)
    if len(trials) != len(galleries):
        raise ValueError(f"{len(galleries)} galleries but {len(trials)} trial ids")
    by_path: dict[str, ImageRef] = {}
    for gallery in galleries:
        for ref in gallery:
            known = by_path.setdefault(ref.path, ref)
            if known != ref:
                raise ValueError(f"{ref.path} appears as both {known} and {ref}")
    records = tuple(sorted(by_path.values()))
    position = {ref.path: i for i, ref in enumerate(records)}
    indices = tuple(np.array([position[ref.path] for ref in g], dtype=np.int32) for g in galleries)
    return GallerySet(records, trials, indices)


def gallery_set(root: str | os.PathLike, layout: str, mode: str = "all", trials: Sequence[int] = GALLERY_TRIALS) -> GallerySet:
    """The union of the SYSU-MM01 ("sysu", mode "all"/"indoor") or LLCM trial galleries."""
    if layout == "sysu":
        galleries = [sysu_gallery(root, t, mode) for t in trials]
    elif layout == "llcm":
        if mode != "all":
            raise ValueError(f"LLCM has only the 'all' gallery mode, got {mode!r}")
        galleries = [llcm_gallery(root, t) for t in trials]
    else:
        raise ValueError(f"gallery_set samples galleries of 'sysu' or 'llcm', got {layout!r} (RegDB galleries are fixed: regdb_split)")
    return union_galleries(galleries, trials)
