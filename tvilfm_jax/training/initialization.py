"""Where a fresh run's start variables come from: `config.init.checkpoint` (a model artifact) or
a random initialisation from the seed."""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import numpy as np
from absl import logging

from tvilfm_jax import artifacts, run_layout
from tvilfm_jax.models.tvilfm import ModelConfig, add_backup, init_variables
from tvilfm_jax.training.config import ConfigError


def load_init_variables(directory: str, config: ModelConfig) -> dict:
    """Variables (numpy) of a model artifact, shaped for `config`.

    The stored ModelConfig must build the same architecture (compute dtype aside); a stage-2
    model (`config.backup`) started from a checkpoint without backups gets them copied from
    gem/neck (docs/original.md §1.7), one with backups (an official stage-2 checkpoint) keeps its own.
    """
    stored = artifacts.load_model_config(directory)
    differences = stored.architecture_differences(config)
    if differences:
        raise ValueError(f"init.checkpoint {directory}: its model differs from the configured one: "
                         f"{'; '.join(differences)} (stored vs configured)")
    if stored.backup and not config.backup:
        raise ValueError(f"init.checkpoint {directory} is a stage-2 checkpoint (it has backup_gem/backup_neck); "
                         f"stage 'base' starts from a stage-1 or converted ImageNet/CLIP checkpoint")
    _, variables = artifacts.load_model(directory)
    if config.backup and not stored.backup:
        logging.info("init.checkpoint %s has no backups: copying gem/neck to backup_gem/backup_neck", directory)
        variables = jax.tree_util.tree_map(np.asarray, add_backup(variables))
    return {k: dict(v) for k, v in variables.items()}


def _from_checkpoint(checkpoint: str, config: ModelConfig) -> dict:
    """`load_init_variables` of config.init.checkpoint; ConfigError naming it when it is a training
    workdir, missing, unreadable, or of another model."""
    path = os.path.abspath(os.path.expanduser(checkpoint))
    if os.path.isfile(run_layout.path(path, run_layout.RUN_FILE)):
        old = run_layout.old_layout_problem(path)
        if old:
            raise ConfigError(f"config.init.checkpoint {path}: {old}")
        export = run_layout.model_dir(path, "last")
        raise ConfigError(f"config.init.checkpoint {path} is a training workdir, not a model checkpoint: pass "
                          f"its export {export}" + ("" if os.path.isdir(export) else " (that run has not "
                                                    "finished yet)"))
    try:
        return load_init_variables(path, config)
    except (FileNotFoundError, ValueError) as err:
        text = str(err)
        raise ConfigError(text if text.startswith("init.checkpoint") else f"config.init.checkpoint {path}: {text}"
                          ) from None


def initial_variables(cfg: Any, config: ModelConfig) -> dict:
    """Host (numpy) start variables of a run of experiment config `cfg` building model `config`:
    `cfg.init.checkpoint`, or a fresh init from `cfg.seed` (stage 1)."""
    if cfg.init.checkpoint:
        return _from_checkpoint(cfg.init.checkpoint, config)
    logging.warning("stage %s starts from a random initialisation (config.init.checkpoint is empty); the paper "
                    "starts from ImageNet ResNet-50 + CLIP RN50 text weights (python -m tvilfm_jax.convert)",
                    cfg.stage)
    # On one device, whatever the mesh: the same program (and values) for every device count
    # and process, so it compiles once and persistent compilation caches hit.
    init = jax.jit(functools.partial(init_variables, config, image_hw=tuple(cfg.data.image_size)))
    return jax.device_get(init(jax.random.key(cfg.seed)))
