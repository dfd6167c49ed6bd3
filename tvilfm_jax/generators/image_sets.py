"""Which images of a dataset tree need text, in which order, under which key (docs/original.md §5.1-5.3, §9).

Every image a loader will ask a caption for is listed once per modality:
- SYSU-MM01: train = train+val ids in the §5.2 order (ids sorted, RGB cams 1,2,4,5 then IR
  cams 3,6, sorted file names), which the ``train_*_Blip_*.npy`` arrays follow row for row;
  test = the test ids' RGB (gallery, and the id map the query text is drawn from) and IR
  (queries, whose own caption is the Fusion filter) images.
- RegDB: every image named in any ``idx/{train,test}_{visible,thermal}_{t}.txt``. Each image
  is a training image in some trial, so all of them get a rephrase (the released JSONs hold
  all 4120 per modality).
- LLCM: ``idx/train_vis.txt`` / ``idx/train_nir.txt`` for training, and for the test ids
  ``test_vis/cam*/<pid>/*`` and ``test_nir/cam*/<pid>/*``. Test images are copies of the
  originals under ``vis/<pid>/`` and ``nir/<pid>/`` (docs/original.md §5.1), and are keyed there:
  ``nir/<pid>/<file>`` is the path the original test code looks a query's caption up at.

This module reads only split files and directory listings (through ``tvilfm_jax.data.protocols``,
so the order and parsing are the readers'); it never opens an image.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from tvilfm_jax.data import protocols
from tvilfm_jax.data.datasets import LAYOUTS, LLCM_GALLERY_CAMS, LLCM_QUERY_CAMS, SYSU_IR_CAMS, SYSU_RGB_CAMS




@dataclasses.dataclass(frozen=True)
class ImageEntry:
    """One image that needs a caption.

    path: file to read, relative to the dataset root ("cam3/0006/0001.jpg").
    key: relative path the Text/ files key it by (differs from ``path`` for LLCM test images).
    pid: identity as the loaders see it (folder id).
    train: whether training reads it, i.e. whether it needs an LLM rephrase.
    """

    path: str
    key: str
    pid: int
    train: bool


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """All images of one dataset that need text: ``entries[modality]`` for "RGB" and "IR".

    For SYSU the training entries come first and in the §5.2 order; the Text/ arrays are
    built from ``train_entries`` in list order.
    """

    layout: str
    entries: dict[str, tuple[ImageEntry, ...]]

    def train_entries(self, modality: str) -> tuple[ImageEntry, ...]:
        return tuple(e for e in self.entries[modality] if e.train)


def _check_exists(root: str, rel_paths, where: str) -> None:
    missing = [p for p in rel_paths if not os.path.isfile(os.path.join(root, p))]
    if missing:
        raise FileNotFoundError(
            f"{where} names {len(missing)} image(s) missing under {root}, e.g. {missing[0]!r}")


def _split_paths(root: str, rel_file: str, folder: str) -> list[str]:
    """Image paths of a RegDB/LLCM split file, checked to lie under ``folder``/ and to exist."""
    where = os.path.join(root, rel_file)
    paths = [p for p, _ in protocols.read_split_file(where)]
    wrong = [p for p in paths if not p.startswith(folder + "/")]
    if wrong:
        raise ValueError(f"{where}: expected paths under {folder}/, got {wrong[0]!r}")
    _check_exists(root, paths, where)
    return paths


def sysu_images(root: str) -> ImageSet:
    """SYSU-MM01: train+val ids in the §5.2 order, then the test ids."""
    exp = os.path.join(root, "exp")
    train_ids = sorted(set(protocols.read_id_file(os.path.join(exp, "train_id.txt"))
                           + protocols.read_id_file(os.path.join(exp, "val_id.txt"))))
    test_ids = sorted(set(protocols.read_id_file(os.path.join(exp, "test_id.txt"))))
    overlap = set(train_ids) & set(test_ids)
    if overlap:
        raise ValueError(f"{exp}: ids {sorted(overlap)[:5]} are in both train/val and test")

    def collect(ids, cams, train):
        # The readers' walk: sorted "%04d" ids, cameras in order, sorted visible files.
        refs = protocols.walk_images(Path(root), ids, protocols.sysu_cam_dirs(cams))
        return [ImageEntry(r.path, r.path, r.pid, train) for r in refs]

    rgb = collect(train_ids, SYSU_RGB_CAMS, True) + collect(test_ids, SYSU_RGB_CAMS, False)
    ir = collect(train_ids, SYSU_IR_CAMS, True) + collect(test_ids, SYSU_IR_CAMS, False)
    for name, items in (("RGB", rgb), ("IR", ir)):
        if not items:
            raise FileNotFoundError(f"{root}: no SYSU {name} images found under cam<k>/<pid:04d>/")
    return ImageSet("sysu", {"RGB": tuple(rgb), "IR": tuple(ir)})


def regdb_images(root: str) -> ImageSet:
    """RegDB: every image named by any trial's idx file; all of them are training images."""
    idx = os.path.join(root, "idx")
    pattern = re.compile(r"(train|test)_(visible|thermal)_(\d+)\.txt")
    names = sorted(os.listdir(idx)) if os.path.isdir(idx) else []
    files = sorted((n for n in names if pattern.fullmatch(n)),
                   key=lambda n: (int(pattern.fullmatch(n).group(3)), n))
    if not files:
        raise FileNotFoundError(f"{idx}: no RegDB split files {{train,test}}_{{visible,thermal}}_<t>.txt")
    by_modality: dict[str, dict[str, ImageEntry]] = {"RGB": {}, "IR": {}}
    for name in files:
        modality, folder = ("RGB", "Visible") if pattern.fullmatch(name).group(2) == "visible" else ("IR", "Thermal")
        for p in _split_paths(root, f"idx/{name}", folder):
            by_modality[modality].setdefault(p, ImageEntry(p, p, protocols.folder_pid(p), True))
    entries = {}
    for modality, items in by_modality.items():
        if not items:
            raise FileNotFoundError(f"{idx}: no {modality} images listed")
        entries[modality] = tuple(sorted(items.values(), key=lambda e: (e.pid, e.path)))
    return ImageSet("regdb", entries)


def llcm_images(root: str) -> ImageSet:
    """LLCM: the idx training lists, then the test ids' test_vis / test_nir images."""
    test_ids = sorted(set(protocols.read_id_file(os.path.join(root, "idx", "test_id.txt"))))
    entries = {}
    for modality, train_file, train_dir, test_dir, cams in (
            ("RGB", "idx/train_vis.txt", "vis", "test_vis", LLCM_GALLERY_CAMS),
            ("IR", "idx/train_nir.txt", "nir", "test_nir", LLCM_QUERY_CAMS)):
        items: dict[str, ImageEntry] = {}
        for p in _split_paths(root, train_file, train_dir):
            items.setdefault(p, ImageEntry(p, p, protocols.folder_pid(p), True))
        test_refs = protocols.walk_images(Path(root), test_ids, protocols.llcm_cam_dirs(test_dir, cams))
        if not test_refs:
            raise FileNotFoundError(f"{os.path.join(root, test_dir)}: no images of the test ids under cam<k>/<pid:04d>/")
        for r in test_refs:
            # test_nir/cam<c>/<pid>/<file> -> nir/<pid>/<file>, where the original looks the
            # IR filter caption up; test_vis likewise -> vis/<pid>/<file>.
            key = "/".join([train_dir, *r.path.split("/")[2:]])
            items.setdefault(key, ImageEntry(r.path, key, r.pid, False))
        entries[modality] = tuple(items.values())
    return ImageSet("llcm", entries)


def list_images(root: str, layout: str) -> ImageSet:
    """The images of the dataset at ``root`` (layout "sysu", "regdb" or "llcm") that need text."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: dataset root is not a directory")
    return {"sysu": sysu_images, "regdb": regdb_images, "llcm": llcm_images}[layout](root)
