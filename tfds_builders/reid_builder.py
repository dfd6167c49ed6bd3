"""The builder all four datasets share: read + validate with `layouts`, then write the splits.

A concrete builder only says where its dataset root is (`_dataset_root`) and which layout and
RegDB trial it holds. Everything is validated before the first record is written: the layout
reader decodes every image it will write and raises one `DatasetError` listing all problems,
and TFDS writes into an `incomplete.*` folder that is deleted on any error, so a failed build
leaves no records behind.

Records are written as ArrayRecord unless another `file_format` is asked for: TFDS's default,
TFRecord, needs TensorFlow.

Strictness: by default an unreadable or corrupt image is a validation error. With
`strict=False` (builder kwarg, or `TVILFM_TFDS_STRICT=0` in the environment, which is how the
`tfds build` CLI sets it) such images are skipped with a `SkippedImagesWarning`; their paths
and count go into the metadata.
"""

from __future__ import annotations

import abc
import os
import re
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging

from tfds_builders import schema
from tvilfm_jax.data import layouts
from tvilfm_jax.data.layouts import captions as layout_captions
from tvilfm_jax.data.layouts import llcm as llcm_layout
from tvilfm_jax.data.layouts import regdb as regdb_layout
from tvilfm_jax.data.layouts import sysu as sysu_layout
from tvilfm_jax.data.layouts.problems import Problems

#: Environment variable read when no `strict` kwarg is given ("0"/"false"/"no" turn it off).
STRICT_ENV = "TVILFM_TFDS_STRICT"
_EXPECTED_COUNTS = {
    "sysu": sysu_layout.EXPECTED_COUNTS,
    "regdb": regdb_layout.EXPECTED_COUNTS,
    "llcm": llcm_layout.EXPECTED_COUNTS,
}
_HOMEPAGE = "https://openreview.net/forum?id=qQlmONeI5k"


def strict_from_env() -> bool:
    """`TVILFM_TFDS_STRICT`, default True; raises on a value that is not a clear yes/no."""
    value = os.environ.get(STRICT_ENV, "1").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{STRICT_ENV}={value!r}: expected 1/true/yes/on or 0/false/no/off")


class ReIdBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes train_rgb / train_ir / query / gallery of one VI-ReID dataset (see `schema`)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: raw uint8 288x144 images, BLIP/LLM text, CLIP token ids."}

    def __init__(self, *, strict: bool | None = None, **kwargs):
        """Args: strict: fail on unreadable images (default: `TVILFM_TFDS_STRICT`, else True)."""
        self._strict_arg = strict
        # TFDS defaults to TFRecord, which needs TensorFlow to write and to read.
        if kwargs.get("file_format") is None:
            kwargs["file_format"] = tfds.core.FileFormat.ARRAY_RECORD
        super().__init__(**kwargs)

    @property
    def strict(self) -> bool:
        # Resolved when building, so a reader (tfds.data_source) never trips over the variable.
        return strict_from_env() if self._strict_arg is None else bool(self._strict_arg)

    @property
    @abc.abstractmethod
    def layout(self) -> str:
        """"sysu", "regdb" or "llcm"."""

    @property
    def trial(self) -> int | None:
        """The RegDB split this builder writes; None for the other datasets."""
        return None

    @property
    def synthetic(self) -> bool:
        """Generated data: no warning about counts that differ from the standard release."""
        return False

    @abc.abstractmethod
    def _dataset_root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        """The dataset root to read (holding the images, split files and Text/)."""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=schema.features(),
            homepage=_HOMEPAGE,
            # Keep the layout's order (SYSU pre-processing order, split-file order, protocol
            # order): gallery trial indices in the metadata point into it.
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        strict = self.strict
        root = self._dataset_root(dl_manager)
        index = layouts.read_layout(
            root,
            self.layout,
            trial=self.trial,
            # A full decode pass, so that a truncated file is reported (or skipped) before the
            # first record is written rather than failing the build half-way.
            images="decode",
            strict=strict,
            synthetic=self.synthetic,
        )
        gallery, gallery_trials = schema.gallery_union(index)
        gallery_captions = own_rgb_captions(index, gallery)
        self.info.metadata.update(self._metadata(index, strict, gallery, gallery_trials, gallery_captions))
        logging.info("%s: writing %s", index.name, self.info.metadata["counts"])
        return {
            "train_rgb": self._generate_examples(schema.train_examples(root, index.train_rgb)),
            "train_ir": self._generate_examples(schema.train_examples(root, index.train_ir)),
            "query": self._generate_examples(schema.query_examples(root, index.query)),
            "gallery": self._generate_examples(schema.gallery_examples(root, gallery, gallery_captions)),
        }

    def _generate_examples(self, examples):
        # TFDS requires this hook; the `schema` iterators already yield (key, example) pairs.
        yield from examples

    def _metadata(self, index: layouts.DatasetIndex, strict: bool, gallery, gallery_trials, gallery_captions) -> dict:
        counts = {**index.counts(), "gallery": len(gallery)}
        expected = {} if self.synthetic else dict(_EXPECTED_COUNTS[index.layout])
        deviations = {k: {"actual": counts[k], "expected": n} for k, n in expected.items() if counts.get(k) != n}
        return {
            "dataset": index.name,
            "layout": index.layout,
            "trial": index.trial,
            "synthetic": self.synthetic,
            "captioner": index.captioner,
            "num_classes": index.num_classes,
            "counts": counts,
            "expected_counts": expected,
            "count_deviations": deviations,
            "strict": strict,
            "num_skipped": len(index.skipped),
            "skipped": list(index.skipped),
            # Which text fields hold the dataset's own text (else "" placeholders).
            "text": {
                "train": index.captioner is not None,
                "query": index.captioner is not None,
                "gallery_records_with_caption": len(gallery_captions),
            },
            "galleries": gallery_trials,
            "id_caption_map": {pid: list(caps) for pid, caps in (index.id_caption_map or {}).items()},
        }


def own_rgb_captions(index: layouts.DatasetIndex, gallery: Sequence[layouts.ImageRef]) -> dict[str, str]:
    """Gallery path -> the BLIP caption of that RGB image, where the dataset's Text/ has one.

    `layouts` reads per-image RGB captions for training images only. RegDB's and LLCM's
    `caption_llm_dict_<c>_RGB.json` also describe the test visible images (LLCM keys them at
    their `vis/<pid>/<file>` twin, like the IR queries); SYSU-MM01 has RGB captions for its
    training images only, so its gallery gets none. Missing entries are not an error: no
    original code path reads them; they only let an evaluator build caption pools from the
    gallery it actually uses.
    """
    if index.captioner is None or index.layout == "sysu":
        return {}
    shown = f"Text/{index.captioner}_RGB/caption_llm_dict_{index.captioner}_RGB.json"
    if index.layout == "regdb":
        anchor, expected, twin = re.compile("Visible"), "Visible/<pid>/<file>", _same_path
    else:
        anchor, expected, twin = re.compile("vis"), "vis/<pid>/<file>", _llcm_vis_twin
    # Already validated by the layout reader; problems found here cannot be new.
    captions = layout_captions.load_caption_dict(
        index.root / shown, shown, anchor, expected, ("description",), lambda _: True, Problems()
    )
    found = {g.path: captions.get(twin(g.path)) for g in gallery}
    return {path: texts[0] for path, texts in found.items() if texts is not None}


def _same_path(path: str) -> str:
    return path


def _llcm_vis_twin(test_vis_path: str) -> str:
    """"test_vis/cam<c>/<pid>/<file>" -> "vis/<pid>/<file>"."""
    return "/".join(["vis", *test_vis_path.split("/")[2:]])


class ManualReIdBuilder(ReIdBuilder, skip_registration=True):
    """A licence-gated dataset the user extracts into `--manual_dir` (the dataset root)."""

    def _dataset_root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        # TFDS raises here, quoting MANUAL_DOWNLOAD_INSTRUCTIONS, when the folder is missing or empty.
        return Path(dl_manager.manual_dir)
