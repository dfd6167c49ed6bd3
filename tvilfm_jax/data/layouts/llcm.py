"""LLCM on disk (docs/original.md §5.1, §5.3, §6.6, §9.3).

    vis/<pid>/<file>, nir/<pid>/<file>            training (and original) images
    test_vis/cam{1..9}/<pid:04d>/<file>           gallery candidates
    test_nir/cam{1,2,4..9}/<pid:04d>/<file>       queries; each has a twin nir/<pid>/<file>
    idx/train_vis.txt, idx/train_nir.txt          "<relative path> <label>", labels 0..712
    idx/test_id.txt                               one line of comma-separated ids
    Text/<c>_RGB/caption_llm_dict_<c>_RGB.json    "vis/..." key -> {"description", "aug_description"}
    Text/<c>_IR/caption_llm_dict_<c>_IR.json      "nir/..." key -> same fields
    Text/<c>_IR/caption_dict_<c>_IR.json          "nir/<pid>/<file>" -> {"description"}
    Text/<c>_RGB/id_caption_map_<c>_RGB.json      str(pid) -> unique RGB captions
    Text/<c>_RGB/caption_dict_<c>_RGB.json        optional: "vis/..." key -> {"description"}

A query's filter text is looked up at its nir/ twin, as the original remaps test_nir paths;
a gallery image's own RGB caption (`DatasetIndex.gallery_captions`), where the RGB caption
files have one, at its vis/ twin.
Training cameras come from the "_c<NN>_" part of LLCM file names (0 if absent); the sampler
does not use them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from tvilfm_jax.data import datasets, protocols
from tvilfm_jax.data.layouts import checks
from tvilfm_jax.data.layouts.problems import Problems
from tvilfm_jax.data.layouts.records import DatasetIndex, QueryRecord, TrainRecord
from tvilfm_jax.data.text import reading as text
from tvilfm_jax.data.text.files import CAPTION_DICT, ID_CAPTION_MAP, text_path

#: The standard release (713 training / 351 test identities); deviations only warn.
EXPECTED_COUNTS = {"train_ids": 713, "query_ids": 351}
_VIS = re.compile("vis")
_NIR = re.compile("nir")
_FILE_CAM = re.compile(r"_c(\d+)_")


def read_llcm(
    root: str | os.PathLike,
    *,
    with_text: bool = True,
    captioner: str = "Blip",
    images: str = "header",
    strict: bool = True,
    synthetic: bool = False,
    trials: Sequence[int] = datasets.GALLERY_TRIALS,
    workers: int | None = None,
) -> DatasetIndex:
    """Reads and validates an LLCM tree; raises one `DatasetError`. Arguments as `read_sysu`."""
    root = Path(root)
    checks.require_root("llcm", root)
    problems = Problems()
    checks.require_folders(root, ["idx", "test_vis", "test_nir"], problems)
    exists = checks.ExistingFiles(root)
    train_v = checks.read_split(root, "idx/train_vis.txt", "vis", exists, problems)
    train_n = checks.read_split(root, "idx/train_nir.txt", "nir", exists, problems)
    num_classes = checks.check_train_labels(train_v, train_n, "idx/train_vis.txt", "idx/train_nir.txt", problems)
    test_ids = checks.read_ids(root, "idx/test_id.txt", problems)
    checks.report_duplicates(test_ids, "idx/test_id.txt: repeated ids", problems)
    overlap = {pid for _, _, pid in train_v + train_n} & set(test_ids)
    problems.extend("ids in both the training and the test split", map(str, sorted(overlap)))
    test_ids = sorted(set(test_ids))

    query = [
        QueryRecord(r.path, r.pid, r.cam)
        for r in protocols.walk_images(root, test_ids, protocols.llcm_cam_dirs("test_nir", datasets.LLCM_QUERY_CAMS))
    ]
    galleries = {}
    try:
        cam_dirs = protocols.llcm_cam_dirs("test_vis", datasets.LLCM_GALLERY_CAMS)
        sampled = [protocols.sample_gallery(root, test_ids, cam_dirs, t) for t in trials]
        galleries["all"] = protocols.union_galleries(sampled, trials)
    except ValueError as err:
        problems.add("empty gallery folders", str(err))

    texts_v = texts_n = None
    id_map = None
    own_rgb, own_rgb_files = {}, ()
    if with_text:
        texts_v, vis_dict = text.load_train_captions(root, captioner, "RGB", _VIS, "vis/<pid>/<file>", [p for p, _, _ in train_v], exists, problems)
        texts_n, _ = text.load_train_captions(root, captioner, "IR", _NIR, "nir/<pid>/<file>", [p for p, _, _ in train_n], exists, problems)
        gallery_paths = {g.path for gs in galleries.values() for g in gs.records}
        own_rgb, own_rgb_files = text.load_own_rgb_captions(
            root, captioner, _VIS, "vis/<pid>/<file>", {p: vis_twin(p) for p in sorted(gallery_paths)}, exists, problems,
            already_read={text.llm_dict_name(captioner, "RGB"): vis_dict},
        )
        shown = text_path(CAPTION_DICT, "IR", captioner)
        filters = text.load_caption_dict(root / shown, shown, _NIR, "nir/<pid>/<file>", ("description",), exists, problems)
        found = text.lookup(filters, [nir_twin(q.path) for q in query], shown, "query images (at their nir/ twin)", problems)
        query = [QueryRecord(q.path, q.pid, q.cam, None if f is None else f[0]) for q, f in zip(query, found)]
        shown = text_path(ID_CAPTION_MAP, "RGB", captioner)
        id_map = text.load_id_caption_map(root / shown, shown, problems)
        if id_map is not None:
            problems.extend(f"{shown}: test ids without identity captions", sorted({str(q.pid) for q in query} - id_map.keys(), key=int))

    def train_records(entries, texts):
        texts = texts or [(None, None)] * len(entries)
        return [TrainRecord(p, pid, label, file_cam(p), *t) for (p, label, pid), t in zip(entries, texts)]

    return checks.finish(
        "llcm",
        root,
        problems,
        trial=None,
        captioner=captioner if with_text else None,
        num_classes=num_classes,
        train_rgb=train_records(train_v, texts_v),
        train_ir=train_records(train_n, texts_n),
        query=query,
        galleries=galleries,
        id_caption_map=id_map,
        gallery_captions=own_rgb,
        gallery_caption_files=own_rgb_files,
        images=images,
        strict=strict,
        workers=workers,
        expected_counts=EXPECTED_COUNTS,
        synthetic=synthetic,
    )


def nir_twin(test_nir_path: str) -> str:
    """"test_nir/cam<c>/<pid>/<file>" -> "nir/<pid>/<file>", where its captions are keyed."""
    return "/".join(["nir", *test_nir_path.split("/")[2:]])


def vis_twin(test_vis_path: str) -> str:
    """"test_vis/cam<c>/<pid>/<file>" -> "vis/<pid>/<file>", where a gallery image's own caption is keyed."""
    return "/".join(["vis", *test_vis_path.split("/")[2:]])


def file_cam(path: str) -> int:
    """Camera id from an LLCM file name ("0001_c02_s200726_f5220_vis.jpg" -> 2), 0 if absent."""
    match = _FILE_CAM.search(path.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else 0

