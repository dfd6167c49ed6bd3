"""The builder all four datasets share: read + validate with `layouts`, then write the splits.

A concrete builder only says where its dataset root is (`_dataset_root`) and which layout and
RegDB trial it holds. Everything is validated before the first record is written: the layout
reader decodes every image it will write and raises one `DatasetError` listing all problems,
and TFDS writes into an `incomplete.*` folder that is deleted on any error, so a failed build
leaves no records behind. A build killed outright (kill -9, power loss) cannot delete its
`incomplete.*` folder; the next successful build of the same dataset version removes such
leftovers (`remove_stale_incomplete`).

Records are written as ArrayRecord unless another `file_format` is asked for: TFDS's default,
TFRecord, needs TensorFlow.

Strictness: by default an unreadable or corrupt image is a validation error. With
`strict=False` (builder kwarg, or `TVILFM_TFDS_STRICT=0` in the environment, which is how the
`tfds build` CLI sets it) such images are skipped with a `SkippedImagesWarning`; their paths
and count go into the metadata.

Text-free builds: stage 1 needs no text (docs/original.md §10 item 21) and the public SYSU-MM01 release
lacks the caption arrays. With `with_text=False` (builder kwarg, or `TVILFM_TFDS_TEXT=0` for
the CLI) Text/ is not read, every caption is "" with all-zero ids, and the metadata records
`with_text: false` and all `text` flags false, so stage 2 can refuse the data. Such a build has
the same name as a text build: building the other kind into the same data_dir fails with a
message instead of silently reusing the records there.
"""

from __future__ import annotations

import abc
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.core import constants as tfds_constants

from tfds_builders import schema
from tvilfm_jax.data import layouts
from tvilfm_jax.data.layouts import llcm as llcm_layout
from tvilfm_jax.data.layouts import regdb as regdb_layout
from tvilfm_jax.data.layouts import sysu as sysu_layout

#: Environment variable read when no `strict` kwarg is given ("0"/"false"/"no" turn it off).
STRICT_ENV = "TVILFM_TFDS_STRICT"
#: Environment variable read when no `with_text` kwarg is given ("0"/"false"/"no": text-free).
TEXT_ENV = "TVILFM_TFDS_TEXT"
_EXPECTED_COUNTS = {
    "sysu": sysu_layout.EXPECTED_COUNTS,
    "regdb": regdb_layout.EXPECTED_COUNTS,
    "llcm": llcm_layout.EXPECTED_COUNTS,
}
_HOMEPAGE = "https://openreview.net/forum?id=qQlmONeI5k"


def flag_from_env(name: str) -> bool:
    """A yes/no environment variable, default True; raises on a value that is not a clear yes/no."""
    value = os.environ.get(name, "1").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: expected 1/true/yes/on or 0/false/no/off")


def strict_from_env() -> bool:
    """`TVILFM_TFDS_STRICT`, default True."""
    return flag_from_env(STRICT_ENV)


def with_text_from_env() -> bool:
    """`TVILFM_TFDS_TEXT`, default True."""
    return flag_from_env(TEXT_ENV)


def remove_stale_incomplete(version_dir: Path, started: float) -> list[Path]:
    """Deletes the `incomplete.<6 chars>_<version>` siblings of `version_dir` that nothing touched
    since `started` (a build's start time); returns them.

    TFDS builds into such a folder and renames it to `version_dir` at the end; one that is still
    there after a build succeeded belongs to a build that was killed. A folder where any file
    changed after `started` is left alone: another build may still be writing it (TFDS does not
    support two builds of one dataset into one data_dir, but they should not destroy each other).
    """
    pattern = re.compile(rf"{re.escape(tfds_constants.INCOMPLETE_PREFIX)}[A-Z0-9]{{6}}_{re.escape(version_dir.name)}")
    removed = []
    for folder in sorted(version_dir.parent.glob(f"{tfds_constants.INCOMPLETE_PREFIX}*")):
        if folder.is_dir() and pattern.fullmatch(folder.name) and _last_change(folder) < started:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _last_change(folder: Path) -> float:
    """The latest mtime of `folder` and everything under it."""
    latest = folder.stat().st_mtime
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                latest = max(latest, os.stat(os.path.join(parent, name), follow_symlinks=False).st_mtime)
            except FileNotFoundError:  # removed while we look: someone is working in there
                return float("inf")
    return latest


class ReIdBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes train_rgb / train_ir / query / gallery of one VI-ReID dataset (see `schema`)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: raw uint8 288x144 images, BLIP/LLM text, CLIP token ids."}

    def __init__(self, *, strict: bool | None = None, with_text: bool | None = None, **kwargs):
        """Args:
        strict: fail on unreadable images (default: `TVILFM_TFDS_STRICT`, else True).
        with_text: read and store the text (default: `TVILFM_TFDS_TEXT`, else True).
        """
        self._strict_arg = strict
        self._with_text_arg = with_text
        # TFDS defaults to TFRecord, which needs TensorFlow to write and to read.
        if kwargs.get("file_format") is None:
            kwargs["file_format"] = tfds.core.FileFormat.ARRAY_RECORD
        super().__init__(**kwargs)

    @property
    def strict(self) -> bool:
        # Resolved when building, so a reader (tfds.data_source) never trips over the variable.
        return strict_from_env() if self._strict_arg is None else bool(self._strict_arg)

    @property
    def with_text(self) -> bool:
        # Resolved when building, like `strict`.
        return with_text_from_env() if self._with_text_arg is None else bool(self._with_text_arg)

    def download_and_prepare(self, *args, **kwargs):
        """TFDS's, refusing to reuse a prepared build of the other text kind, and removing what
        interrupted builds of this version left (see module doc)."""
        config = kwargs.get("download_config") or tfds.download.DownloadConfig()
        reuse = tfds.download.GenerateMode(config.download_mode) == tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
        if reuse and self.is_prepared():
            built = self.info.metadata.get("with_text", True)
            if built != self.with_text:
                raise ValueError(
                    f"{self.name} in {self.data_dir} was built with with_text={built}, but with_text={self.with_text} "
                    f"was asked for ({TEXT_ENV} or the with_text kwarg); build into another data_dir, or rebuild "
                    "with download_mode=REUSE_CACHE_IF_EXISTS (tfds build --overwrite)"
                )
        started = time.time()
        result = super().download_and_prepare(*args, **kwargs)
        removed = remove_stale_incomplete(Path(os.fspath(self.data_path)), started)
        if removed:
            logging.warning("%s: removed %d folder(s) left by interrupted builds: %s", self.name, len(removed),
                            ", ".join(map(str, removed)))
        return result

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
        strict, with_text = self.strict, self.with_text
        root = self._dataset_root(dl_manager)
        index = layouts.read_layout(
            root,
            self.layout,
            trial=self.trial,
            with_text=with_text,
            # A full decode pass, so that a truncated file is reported (or skipped) before the
            # first record is written rather than failing the build half-way.
            images="decode",
            strict=strict,
            synthetic=self.synthetic,
        )
        gallery, gallery_trials = index.gallery_pool()
        self.info.metadata.update(self._metadata(index, strict, gallery, gallery_trials))
        logging.info("%s: writing %s", index.name, self.info.metadata["counts"])
        return {
            "train_rgb": self._generate_examples(schema.train_examples(root, index.train_rgb, with_text=with_text)),
            "train_ir": self._generate_examples(schema.train_examples(root, index.train_ir, with_text=with_text)),
            "query": self._generate_examples(schema.query_examples(root, index.query, with_text=with_text)),
            "gallery": self._generate_examples(
                schema.gallery_examples(root, gallery, index.gallery_captions, with_text=with_text)
            ),
        }

    def _generate_examples(self, examples):
        # TFDS requires this hook; the `schema` iterators already yield (key, example) pairs.
        yield from examples

    def _metadata(self, index: layouts.DatasetIndex, strict: bool, gallery, gallery_trials) -> dict:
        counts = {**index.counts(), "gallery": len(gallery)}
        expected = {} if self.synthetic else dict(_EXPECTED_COUNTS[index.layout])
        deviations = {k: {"actual": counts[k], "expected": n} for k, n in expected.items() if counts.get(k) != n}
        with_text = index.captioner is not None
        with_caption = sum(g.path in index.gallery_captions for g in gallery)
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
            "with_text": with_text,
            # Which text fields hold the dataset's own text (else "" placeholders).
            "text": {
                "train": with_text,
                "query": with_text,
                "id_caption_map": index.id_caption_map is not None,
                "gallery": 0 < with_caption == len(gallery),
                "gallery_records_with_caption": with_caption,
                "gallery_caption_files": list(index.gallery_caption_files),
            },
            "galleries": gallery_trials,
            "id_caption_map": {pid: list(caps) for pid, caps in (index.id_caption_map or {}).items()},
        }


class ManualReIdBuilder(ReIdBuilder, skip_registration=True):
    """A licence-gated dataset the user extracts into `--manual_dir` (the dataset root)."""

    def _dataset_root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        # TFDS raises here, quoting MANUAL_DOWNLOAD_INSTRUCTIONS, when the folder is missing or empty.
        return Path(dl_manager.manual_dir)
