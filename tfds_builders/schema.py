"""The record schema every builder writes, and the examples built from a layout's records.

This is the contract with the input pipeline (`tvilfm_jax.data.pipeline`) and the evaluator.
Four splits share one feature dict (TFDS has one spec per dataset):

    train_rgb, train_ir   every field
    query                 test IR images; `caption` is the image's own IR BLIP caption (the
                          Fusion "filter" text); label = -1, rephrase = ""
    gallery               the union of all trial galleries (SYSU: "all" and "indoor" modes);
                          `caption` is the image's own RGB caption where the dataset has one,
                          else ""; label = -1, rephrase = ""

Feature           stored as                      read back by `tfds.data_source` as
image             raw uint8 [288, 144, 3]        np.uint8 [288, 144, 3]
pid, label, cam   int32 scalars                  int
path              text, relative to the root     bytes (utf-8)
caption, rephrase text                           bytes (utf-8)
caption_ids,      int32 [77], `tokenize(text)`   np.int32 [77]
rephrase_ids

`info.metadata` (metadata.json next to the records; `tfds.builder(name, data_dir=...)
.info.metadata` without importing the builder):

    num_classes       C of the training labels
    id_caption_map    str(pid) -> unique RGB captions (the paper's test-time query text pool)
    galleries         mode ("all", SYSU also "indoor") -> str(trial) -> indices into `gallery`,
                      in protocol order (RegDB: its one fixed gallery under its trial)
    counts, expected_counts, count_deviations    what was written vs the standard release
    strict, num_skipped, skipped                  unreadable images left out (strict=False)
    with_text         whether the build read Text/ at all (False: a text-free build)
    text              which fields hold the dataset's own text: train, query, id_caption_map,
                      gallery (bools; gallery: every gallery record has its own RGB caption),
                      gallery_records_with_caption, gallery_caption_files (the Text/ files)
    dataset, layout, trial, synthetic, captioner

Images are stored as raw bytes rather than PNG: lossless like PNG, no TensorFlow needed to
encode them, and reading one back is a `frombuffer` instead of a PNG decode that costs several
times more (benchmarks/tfds_build.py) and would cap the single-core input pipeline. ArrayRecord
compresses the records (zstd); the disk cost is about the original's, whose pre-processing
also keeps raw uint8 arrays.

Text the dataset does not have (gallery captions of SYSU-MM01, whose released Text/ holds
training captions only) is stored as "" with `tokenize("")` ids, so `caption_ids ==
tokenize(caption)` holds in every record; the metadata says which splits carry real text.
A text-free build (stage 1 needs no text, docs/original.md §10 item 21) stores "" and ALL-ZERO ids in
every record: no row can pass for a tokenised caption, and `metadata["text"]["train"]` is
False, so stage 2 can refuse such data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from tvilfm_jax.data.images import IMAGE_HEIGHT, IMAGE_WIDTH, load_image
from tvilfm_jax.data.layouts import DatasetIndex, ImageRef, QueryRecord, TrainRecord
from tvilfm_jax.data.tokenizer import CONTEXT_LENGTH, tokenize

SPLITS = ("train_rgb", "train_ir", "query", "gallery")
IMAGE_SHAPE = (IMAGE_HEIGHT, IMAGE_WIDTH, 3)
#: `label` of test records: test identities are not training classes.
NO_LABEL = -1

Example = dict[str, object]


def features() -> tfds.features.FeaturesDict:
    """The feature dict shared by all splits of all builders."""
    text = tfds.features.Text

    def ids(doc: str) -> tfds.features.Tensor:
        return tfds.features.Tensor(shape=(CONTEXT_LENGTH,), dtype=np.int32, doc=doc)

    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(
            shape=IMAGE_SHAPE,
            dtype=np.uint8,
            encoding=tfds.features.Encoding.BYTES,
            doc="uint8 HWC 288x144x3: PIL open, convert RGB, Lanczos resize to W144 x H288 (lossless)",
        ),
        "pid": tfds.features.Scalar(np.int32, doc="identity id as on disk"),
        "label": tfds.features.Scalar(np.int32, doc="training class 0..C-1; -1 in query/gallery"),
        "cam": tfds.features.Scalar(np.int32, doc="camera id"),
        "path": text(doc="image path relative to the dataset root"),
        "caption": text(doc="BLIP caption of this image (query: IR filter text); '' if the dataset has none"),
        "rephrase": text(doc="LLM rephrase of the caption (training splits); '' elsewhere"),
        "caption_ids": ids("tokenize(caption): CLIP BPE ids, SOT ... EOT, zero padded"),
        "rephrase_ids": ids("tokenize(rephrase)"),
    })


def train_examples(root: Path, records: Sequence[TrainRecord], *, with_text: bool = True) -> Iterator[tuple[str, Example]]:
    """(key, example) per training record, in record order; keys are the relative paths.

    with_text=False: "" captions and all-zero ids (a text-free build).
    """
    captions = [r.caption or "" for r in records]
    rephrases = [r.llm_caption or "" for r in records]
    caption_ids, rephrase_ids = token_ids(captions, with_text), token_ids(rephrases, with_text)
    for i, r in enumerate(records):
        yield r.path, _example(root, r.path, r.pid, r.label, r.cam, captions[i], caption_ids[i], rephrases[i], rephrase_ids[i])


def query_examples(root: Path, records: Sequence[QueryRecord], *, with_text: bool = True) -> Iterator[tuple[str, Example]]:
    """(key, example) per IR query, in protocol order; `caption` is the query's own IR caption."""
    captions = [q.ir_caption or "" for q in records]
    caption_ids, empty_ids = token_ids(captions, with_text), token_ids([""], with_text)[0]
    for i, q in enumerate(records):
        yield q.path, _example(root, q.path, q.pid, NO_LABEL, q.cam, captions[i], caption_ids[i], "", empty_ids)


def gallery_examples(
    root: Path, records: Sequence[ImageRef], captions: Mapping[str, str], *, with_text: bool = True
) -> Iterator[tuple[str, Example]]:
    """(key, example) per gallery candidate; `captions` maps a path to its own RGB caption."""
    texts = [captions.get(g.path, "") for g in records]
    caption_ids, empty_ids = token_ids(texts, with_text), token_ids([""], with_text)[0]
    for i, g in enumerate(records):
        yield g.path, _example(root, g.path, g.pid, NO_LABEL, g.cam, texts[i], caption_ids[i], "", empty_ids)


def token_ids(texts: Sequence[str], with_text: bool) -> np.ndarray:
    """int32 [len(texts), 77]: `tokenize(texts)`, or zeros in a text-free build."""
    if not with_text:
        if any(texts):
            raise ValueError(f"a text-free build got text to store: {next(t for t in texts if t)!r:.80}")
        return np.zeros((len(texts), CONTEXT_LENGTH), np.int32)
    return tokenize(list(texts))


def _example(
    root: Path,
    path: str,
    pid: int,
    label: int,
    cam: int,
    caption: str,
    caption_ids: np.ndarray,
    rephrase: str,
    rephrase_ids: np.ndarray,
) -> Example:
    return {
        "image": load_image(root / path),
        "pid": pid,
        "label": label,
        "cam": cam,
        "path": path,
        "caption": caption,
        "rephrase": rephrase,
        "caption_ids": caption_ids,
        "rephrase_ids": rephrase_ids,
    }
