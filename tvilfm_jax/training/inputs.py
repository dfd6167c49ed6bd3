"""Training input of an experiment: TFDS splits -> `data.pipeline.TrainBatches` for this process.

Sources are the `train_rgb` / `train_ir` splits of a TFDS dataset built by tfds_builders/
(read with `tfds.data_source`, no TensorFlow needed). The synthetic datasets can be built on
the fly (`config.data.build_synthetic`, `tfds_builders.prepare`); real ones are built
beforehand with `tfds build`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from tfds_builders import prepare
from tvilfm_jax.data.pipeline import TfdsTrainRecords, TrainBatches


class DatasetNotFoundError(FileNotFoundError):
    """The configured TFDS dataset is not built in the configured data_dir."""


def load_sources(data_cfg: Any) -> tuple[Sequence[dict], Sequence[dict], int | None]:
    """(train_rgb, train_ir, num_classes from the dataset metadata or None).

    The splits come as `TfdsTrainRecords`, which decode only the fields training reads.
    """
    import tensorflow_datasets as tfds

    prepare.ensure_built(data_cfg)
    data_dir = prepare.data_dir(data_cfg)
    try:
        splits = tfds.data_source(data_cfg.name, data_dir=data_dir)
    except Exception as err:  # noqa: BLE001 - re-raised with what to do about it
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]  # TFDS appends every dataset name
        raise DatasetNotFoundError(
            f"config.data.name={data_cfg.name!r}: cannot open it in config.data.data_dir="
            f"{data_dir or '(TFDS default)'} ({reason}). Build it first: `tfds build tfds_builders/<dataset>` "
            f"(see README), or for synthetic/* set config.data.build_synthetic"
        ) from err
    for split in ("train_rgb", "train_ir"):
        if split not in splits:
            raise KeyError(f"TFDS dataset {data_cfg.name!r} has no split {split!r} (splits: {sorted(splits)})")
    info = tfds.builder(data_cfg.name, data_dir=data_dir).info
    num_classes = info.metadata.get("num_classes") if info.metadata else None
    return TfdsTrainRecords(splits["train_rgb"]), TfdsTrainRecords(splits["train_ir"]), num_classes


def num_classes_of(labels_rgb: np.ndarray, labels_ir: np.ndarray, declared: int | None) -> int:
    """C, checked against the labels: the metadata's value if given, else max label + 1."""
    top = int(max(labels_rgb.max(), labels_ir.max()))
    low = int(min(labels_rgb.min(), labels_ir.min()))
    if low < 0:
        raise ValueError(f"training labels must be >= 0, found {low}")
    if declared is None:
        return top + 1
    if top >= declared:
        raise ValueError(f"training label {top} is out of range for num_classes={declared} (dataset metadata)")
    return int(declared)


def data_seed(seed: int, stage: str) -> int:
    """The input pipeline's seed: distinct per stage (and injective in `seed`).

    With one seed for both stages, stage 2 would be fed exactly the augmented images, in the same
    order, that its frozen encoder was fit on in stage 1; on small data that memorised stream makes
    stage-2 training curves misleading (the epochs the encoder saw at a high lr look easy).
    """
    return 2 * seed + (0 if stage == "base" else 1)


def make_batches(config: Any, rgb_source: Sequence[dict], ir_source: Sequence[dict]) -> TrainBatches:
    """This process's `TrainBatches` for the experiment (text only in stage 2)."""
    d = config.data
    return TrainBatches(
        rgb_source,
        ir_source,
        ids_per_batch=d.ids_per_batch,
        images_per_id=d.images_per_id,
        seed=data_seed(config.seed, config.stage),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        with_text=config.stage == "tvilfm",
        llm_aug=d.llm_aug,
        llm_aug_prob=d.llm_aug_prob,
        image_size=tuple(d.image_size),
        crop_padding=d.crop_padding,
    )
