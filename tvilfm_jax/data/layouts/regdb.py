"""RegDB on disk, one trained split at a time (docs/original.md §5.1, §5.3, §6.5, §9.1).

    Visible/<pid>/<file>.bmp, Thermal/<pid>/<file>.bmp        pids 1..412, 10 images each
    idx/{train,test}_{visible,thermal}_<t>.txt                "<relative path> <label>" lines
    Text/<c>_RGB/caption_llm_dict_<c>_RGB.json   image key -> {"description", "aug_description"}
    Text/<c>_IR/caption_llm_dict_<c>_IR.json     (IR rephrases are colour-filtered)
    Text/<c>_IR/caption_dict_<c>_IR.json         image key -> {"description"}: the query filter text
    Text/<c>_RGB/id_caption_map_<c>_RGB.json     str(pid) -> unique RGB captions
    Text/<c>_RGB/caption_dict_<c>_RGB.json       optional: image key -> {"description"}

Both RGB caption files cover the test visible images too; their descriptions become the
gallery images' own captions (`DatasetIndex.gallery_captions`).

Training records keep split-file order and labels (0..205); test pids come from the folder id
in the path, not the label column. Cameras: 2 for visible, 1 for thermal, as the original's
metric call. JSON keys may carry any prefix before "Visible/" or "Thermal/".
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tvilfm_jax.data import datasets, protocols
from tvilfm_jax.data.layouts import checks
from tvilfm_jax.data.layouts.problems import Problems
from tvilfm_jax.data.layouts.records import DatasetIndex, QueryRecord, TrainRecord
from tvilfm_jax.data.text import reading as text
from tvilfm_jax.data.text.files import CAPTION_DICT, ID_CAPTION_MAP, text_path

#: The standard release, per split; deviations only warn.
EXPECTED_COUNTS = {"train_rgb": 2060, "train_ir": 2060, "train_ids": 206, "query": 2060, "query_ids": 206, "gallery_all_union": 2060}
_VISIBLE = re.compile("Visible")
_THERMAL = re.compile("Thermal")


def read_regdb(
    root: str | os.PathLike,
    trial: int,
    *,
    with_text: bool = True,
    captioner: str = "Blip",
    images: str = "header",
    strict: bool = True,
    synthetic: bool = False,
    workers: int | None = None,
) -> DatasetIndex:
    """Reads and validates split `trial` (1..10) of a RegDB tree; raises one `DatasetError`.

    Keyword arguments as `read_sysu`. The gallery is the fixed `test_visible_<trial>` list,
    stored as `galleries["all"]` with the single trial id `trial`.
    """
    root = Path(root)
    checks.require_root("regdb", root)
    problems = Problems()
    checks.require_folders(root, ["idx", "Visible", "Thermal"], problems)
    exists = checks.ExistingFiles(root)
    names = {(s, m): f"idx/{s}_{m}_{trial}.txt" for s in ("train", "test") for m in ("visible", "thermal")}
    train_v = checks.read_split(root, names["train", "visible"], "Visible", exists, problems)
    train_t = checks.read_split(root, names["train", "thermal"], "Thermal", exists, problems)
    test_t = checks.read_split(root, names["test", "thermal"], "Thermal", exists, problems)
    test_v = checks.read_split(root, names["test", "visible"], "Visible", exists, problems)
    num_classes = checks.check_train_labels(train_v, train_t, names["train", "visible"], names["train", "thermal"], problems)
    overlap = {pid for _, _, pid in train_v + train_t} & {pid for _, _, pid in test_t + test_v}
    problems.extend(f"ids in both the training and the test split of trial {trial}", map(str, sorted(overlap)))

    query = [QueryRecord(p, pid, datasets.REGDB_QUERY_CAM) for p, _, pid in test_t]
    gallery = [protocols.ImageRef(p, pid, datasets.REGDB_GALLERY_CAM) for p, _, pid in test_v]
    texts_v = texts_t = None
    id_map = None
    own_rgb, own_rgb_files = {}, ()
    if with_text:
        texts_v, rgb_dict = text.load_train_captions(root, captioner, "RGB", _VISIBLE, "Visible/<pid>/<file>", [p for p, _, _ in train_v], exists, problems)
        texts_t, _ = text.load_train_captions(root, captioner, "IR", _THERMAL, "Thermal/<pid>/<file>", [p for p, _, _ in train_t], exists, problems)
        # The RGB caption files describe all 4,120 visible images, the test ones included.
        own_rgb, own_rgb_files = text.load_own_rgb_captions(
            root, captioner, _VISIBLE, "Visible/<pid>/<file>", {g.path: g.path for g in gallery}, exists, problems,
            already_read={text.llm_dict_name(captioner, "RGB"): rgb_dict},
        )
        shown = text_path(CAPTION_DICT, "IR", captioner)
        filters = text.load_caption_dict(root / shown, shown, _THERMAL, "Thermal/<pid>/<file>", ("description",), exists, problems)
        found = text.lookup(filters, [q.path for q in query], shown, "query images", problems)
        query = [QueryRecord(q.path, q.pid, q.cam, None if f is None else f[0]) for q, f in zip(query, found)]
        shown = text_path(ID_CAPTION_MAP, "RGB", captioner)
        id_map = text.load_id_caption_map(root / shown, shown, problems)
        if id_map is not None:
            problems.extend(f"{shown}: test ids without identity captions", sorted({str(q.pid) for q in query} - id_map.keys(), key=int))

    def train_records(entries, cam, texts):
        texts = texts or [(None, None)] * len(entries)
        return [TrainRecord(p, pid, label, cam, *t) for (p, label, pid), t in zip(entries, texts)]

    return checks.finish(
        "regdb",
        root,
        problems,
        trial=trial,
        captioner=captioner if with_text else None,
        num_classes=num_classes,
        train_rgb=train_records(train_v, datasets.REGDB_GALLERY_CAM, texts_v),
        train_ir=train_records(train_t, datasets.REGDB_QUERY_CAM, texts_t),
        query=query,
        galleries={"all": protocols.union_galleries([gallery], [trial])},
        id_caption_map=id_map,
        gallery_captions=own_rgb,
        gallery_caption_files=own_rgb_files,
        images=images,
        strict=strict,
        workers=workers,
        expected_counts=EXPECTED_COUNTS,
        synthetic=synthetic,
    )

