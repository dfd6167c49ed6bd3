"""Preparing the TFDS datasets an experiment names: data_dir resolution and on-the-fly synthetic builds.

Used by training (`training.inputs`), evaluation (`evaluate`) and the demo alike, so none of
them imports another's module for it. Real datasets are built beforehand with `tfds build`;
the synthetic ones are built here on request (`config.data.build_synthetic`):

    ensure_built(config.data)                  # builds synthetic/<config> if it is missing
    build_synthetic("synthetic/sysu_tiny", d)  # the same, one process, no config
"""

from __future__ import annotations

import os
from typing import Any

import jax
from absl import logging

from tvilfm_jax.data.datasets import SYNTHETIC_PREFIX


def data_dir(data_cfg: Any) -> str | None:
    """`config.data.data_dir` with "~" expanded; None ("" in the config) means TFDS's default."""
    return os.path.expanduser(data_cfg.data_dir) if data_cfg.data_dir else None


def is_built(name: str, data_dir: str | None) -> bool:
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir).is_prepared()
    except Exception:  # noqa: BLE001 - an unregistered name simply is not built yet
        return False


def build_synthetic(name: str, data_dir: str | None) -> None:
    """Builds synthetic/<config> into `data_dir` (array_record, no TensorFlow) if not yet there."""
    config = name[len(SYNTHETIC_PREFIX):]
    from tfds_builders.synthetic import synthetic_dataset_builder  # registers "synthetic"

    builder = synthetic_dataset_builder.Builder(config=config, data_dir=data_dir)
    if not builder.is_prepared():
        logging.info("building %s into %s", name, builder.data_dir)
        builder.download_and_prepare(file_format="array_record")


def ensure_built(data_cfg: Any) -> None:
    """With `build_synthetic`, builds a missing synthetic dataset: process 0 first, then any
    process whose data_dir still lacks it (hosts without a shared file system)."""
    name = data_cfg.name
    if not data_cfg.build_synthetic:
        return
    if not name.startswith(SYNTHETIC_PREFIX):
        raise ValueError(f"config.data.build_synthetic only builds synthetic/* datasets, not {name!r}; "
                         f"build real datasets with `tfds build` (see README)")
    where = data_dir(data_cfg)
    if jax.process_index() == 0:
        build_synthetic(name, where)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("tfds_builders.prepare.ensure_built")
        if not is_built(name, where):
            build_synthetic(name, where)
