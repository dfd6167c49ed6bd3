"""SYSU-MM01 on disk (docs/original.md §5.1-5.3, §6.4, §9.2).

    cam{1..6}/<pid:04d>/<img>.jpg           RGB cameras 1, 2, 4, 5; IR cameras 3, 6
    exp/{train,val,test}_id.txt             one line of comma-separated ids
    Text/<c>_RGB/train_text_<c>_RGB.npy     [N_rgb] BLIP captions, aligned with the RGB order
    Text/<c>_RGB/train_llm_text_<c>_RGB.npy [N_rgb] LLM rephrases
    Text/<c>_IR/train_text_<c>_IR.npy       [N_ir]  (and train_llm_text_<c>_IR.npy)
    Text/<c>_{RGB,IR}/train_text_label_<c>_{RGB,IR}.npy   optional pid strings, same order
    Text/<c>_RGB/id_caption_map_<c>_RGB.json  str(pid) -> unique RGB captions
    Text/<c>_IR/caption_dict_<c>_IR.json      test IR image path -> {"description"}
    Text/<c>_RGB/caption_dict_<c>_RGB.json    optional (not released): RGB image path ->
                                              {"description"}; also caption_llm_dict_<c>_RGB.json

Training uses the train + val ids (C = 395) in the pre-processing order: sorted ids, then
cameras in the order above, then sorted files, labels = rank of the id among the IR ids. The
caption arrays are aligned index-for-index with that order. Gallery images get their own RGB
captions (`DatasetIndex.gallery_captions`) only from the optional per-image files. The GIT id
map the original's gallery reads (docs/original.md §10 item 22) is not needed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from tvilfm_jax.data import datasets, protocols
from tvilfm_jax.data.datasets import SYSU_IR_CAMS, SYSU_RGB_CAMS
from tvilfm_jax.data.layouts import checks
from tvilfm_jax.data.layouts.problems import Problems
from tvilfm_jax.data.layouts.records import DatasetIndex, QueryRecord, TrainRecord
from tvilfm_jax.data.text import reading as text
from tvilfm_jax.data.text.files import CAPTION_DICT, ID_CAPTION_MAP, TRAIN_LABELS, TRAIN_LLM_TEXT, TRAIN_TEXT, text_path

#: The standard release; deviations only warn.
EXPECTED_COUNTS = {"train_rgb": 22258, "train_ir": 11909, "train_ids": 395, "query": 3803, "query_ids": 96}
_CAM_FOLDER = re.compile(r"cam\d+")


def read_sysu(
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
    """Reads and validates a SYSU-MM01 tree; raises one `DatasetError` listing every problem.

    Args:
      root: the dataset root (holding cam1..cam6, exp/, Text/).
      with_text: read Text/ (stage 2); stage 1 needs no text (docs/original.md §10 item 21).
      captioner: which Text/<captioner>_{RGB,IR} set to read.
      images: "exists", "header" or "decode" (see `checks.IMAGE_CHECKS`).
      strict: if False, unreadable images are skipped with a `SkippedImagesWarning`.
      synthetic: suppresses the warning about counts that differ from the standard release.
      trials: gallery trials to sample, for both "all" and "indoor" galleries.
      workers: threads for the image check.
    """
    root = Path(root)
    checks.require_root("sysu", root)
    problems = Problems()
    checks.require_folders(root, [f"cam{c}" for c in (*SYSU_RGB_CAMS, *SYSU_IR_CAMS)], problems)
    train_ids = checks.read_ids(root, "exp/train_id.txt", problems) + checks.read_ids(root, "exp/val_id.txt", problems)
    test_ids = checks.read_ids(root, "exp/test_id.txt", problems)
    checks.report_duplicates(train_ids, "exp/train_id.txt + exp/val_id.txt: repeated ids", problems)
    checks.report_duplicates(test_ids, "exp/test_id.txt: repeated ids", problems)
    problems.extend("ids in both the training and the test split", map(str, sorted(set(train_ids) & set(test_ids))))
    train_ids, test_ids = sorted(set(train_ids)), sorted(set(test_ids))

    rgb = protocols.walk_images(root, train_ids, protocols.sysu_cam_dirs(SYSU_RGB_CAMS))
    ir = protocols.walk_images(root, train_ids, protocols.sysu_cam_dirs(SYSU_IR_CAMS))
    ir_pids = sorted({r.pid for r in ir})
    label = {pid: i for i, pid in enumerate(ir_pids)}
    rgb_pids = {r.pid for r in rgb}
    problems.extend("training ids without any image", [str(i) for i in train_ids if i not in rgb_pids and i not in label])
    problems.extend("training ids with RGB images but no IR images (cams 3, 6)", map(str, sorted(rgb_pids - label.keys())))
    problems.extend("training ids with IR images but no RGB images (cams 1, 2, 4, 5)", map(str, sorted(label.keys() - rgb_pids)))

    query = protocols.walk_images(root, test_ids, protocols.sysu_cam_dirs(SYSU_IR_CAMS))
    galleries = {}
    for mode, cams in datasets.SYSU_GALLERY_CAMS.items():
        try:
            sampled = [protocols.sample_gallery(root, test_ids, protocols.sysu_cam_dirs(cams), t) for t in trials]
        except ValueError as err:
            problems.add("empty gallery folders", str(err))
            continue
        galleries[mode] = protocols.union_galleries(sampled, trials)

    texts_rgb = texts_ir = None
    query_texts: list[str | None] = [None] * len(query)
    id_map = None
    own_rgb, own_rgb_files = {}, ()
    if with_text:
        texts_rgb = _train_texts(root, captioner, "RGB", [r.pid for r in rgb], "RGB training images (cams 1, 2, 4, 5 of the train+val ids)", problems)
        texts_ir = _train_texts(root, captioner, "IR", [r.pid for r in ir], "IR training images (cams 3, 6 of the train+val ids)", problems)
        shown = text_path(CAPTION_DICT, "IR", captioner)
        filters = text.load_caption_dict(
            root / shown, shown, _CAM_FOLDER, "cam<N>/<pid>/<file>", ("description",), checks.ExistingFiles(root), problems
        )
        found = text.lookup(filters, [q.path for q in query], shown, "query images", problems)
        query_texts = [None if f is None else f[0] for f in found]
        shown = text_path(ID_CAPTION_MAP, "RGB", captioner)
        id_map = text.load_id_caption_map(root / shown, shown, problems)
        if id_map is not None:
            problems.extend(f"{shown}: test ids without identity captions", sorted({str(q.pid) for q in query} - id_map.keys(), key=int))
        # The released Text/ has no per-image captions of test RGB images; use them if added.
        gallery_paths = sorted({g.path for gs in galleries.values() for g in gs.records})
        own_rgb, own_rgb_files = text.load_own_rgb_captions(
            root, captioner, _CAM_FOLDER, "cam<N>/<pid>/<file>", {p: p for p in gallery_paths}, checks.ExistingFiles(root), problems
        )

    def train_records(refs, texts):
        texts = texts or [(None, None)] * len(refs)
        return [TrainRecord(r.path, r.pid, label.get(r.pid, -1), r.cam, *t) for r, t in zip(refs, texts)]

    return checks.finish(
        "sysu",
        root,
        problems,
        trial=None,
        captioner=captioner if with_text else None,
        num_classes=len(ir_pids),
        train_rgb=train_records(rgb, texts_rgb),
        train_ir=train_records(ir, texts_ir),
        query=[QueryRecord(q.path, q.pid, q.cam, t) for q, t in zip(query, query_texts)],
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


def _train_texts(root: Path, captioner: str, modality: str, pids: list[int], what: str, problems: Problems) -> list[tuple[str, str]] | None:
    """(caption, rephrase) per training image of one modality, from the aligned .npy arrays."""
    arrays = []
    for kind in (TRAIN_TEXT, TRAIN_LLM_TEXT):
        shown = text_path(kind, modality, captioner)
        arrays.append(text.load_caption_array(root / shown, shown, len(pids), what, problems))
    shown = text_path(TRAIN_LABELS, modality, captioner)
    text.check_pid_array(root / shown, shown, pids, problems)
    if any(a is None for a in arrays):
        return None
    return list(zip(*arrays))
