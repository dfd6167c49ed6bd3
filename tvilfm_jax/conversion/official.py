"""Released TVI-LFM checkpoints (`CLIP2ReID` state_dicts, docs/original.md §1.9) -> `TVILFM` variables.

Stage-1 (base) and stage-2 checkpoints share one layout; stage-2 ones add `backup_pool.p` and
`backup_classifier.*`, which need `ModelConfig.backup=True`. `logit_scale` (unused by any loss,
docs/original.md §1.8) and BN `num_batches_tracked` counters are dropped on purpose; every other key must be
consumed, and every expected key must be present with the expected shape.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from tvilfm_jax.conversion.clip_text import text_params_from_torch
from tvilfm_jax.conversion.common import StateDict, dense_kernel, load_torch_checkpoint
from tvilfm_jax.conversion.resnet import batchnorm_from_torch, body_from_torch, stem_from_torch
from tvilfm_jax.models.tvilfm import ModelConfig

OFFICIAL_IGNORED = ("logit_scale", "*num_batches_tracked")

_VISUAL = "base_model.visual."


def _neck_from_torch(sd: StateDict, key: str, config: ModelConfig) -> tuple[dict, dict]:
    """`{key}.BN.*` + `{key}.classifier.weight` -> (params, batch_stats) of `BNNeck`."""
    d = config.embed_dim
    bn_params, bn_stats = batchnorm_from_torch(sd, f"{key}.BN", d)
    classifier = dense_kernel(sd.take(f"{key}.classifier.weight", (config.num_classes, d)))
    return {"bn": bn_params, "classifier": {"kernel": classifier}}, {"bn": bn_stats}


def official_variables_from_torch(sd: StateDict, config: ModelConfig) -> dict[str, dict]:
    """Official-layout keys (relative to `sd.prefix`) -> {"params", "batch_stats"} of `TVILFM(config)`.

    Does not check for leftovers; `convert_official` does.
    """
    width = config.resnet_width
    params: dict[str, Any] = {"visual": {}}
    stats: dict[str, Any] = {"visual": {}}
    for stem, prefix in (("rgb_stem", "rgb_model"), ("ir_stem", "ir_model")):
        key = f"{_VISUAL}{prefix}.resnet_conv"
        params["visual"][stem], stats["visual"][stem] = stem_from_torch(sd, f"{key}.0", f"{key}.1", width)
    layers = [f"{_VISUAL}shared_model.resnet_conv.{i}" for i in range(4)]
    params["visual"]["body"], stats["visual"]["body"] = body_from_torch(sd, layers, config.resnet_blocks, width)
    params["gem"] = {"p": sd.take(f"{_VISUAL}GEM.p", (1,))}
    params["text"] = text_params_from_torch(sd.scoped("base_model."), config.text)
    params["neck"], stats["neck"] = _neck_from_torch(sd, "classifier", config)
    if config.backup:
        params["backup_gem"] = {"p": sd.take("backup_pool.p", (1,))}
        params["backup_neck"], stats["backup_neck"] = _neck_from_torch(sd, "backup_classifier", config)
    return {"params": params, "batch_stats": stats}


def has_backup(tensors: Mapping[str, Any]) -> bool:
    """Whether a checkpoint is a stage-2 one (carries backup_pool / backup_classifier)."""
    return any(k.removeprefix("module.").startswith(("backup_pool.", "backup_classifier.")) for k in tensors)


def convert_official(checkpoint: str | os.PathLike | Mapping[str, np.ndarray], config: ModelConfig) -> dict[str, dict]:
    """An official TVI-LFM `.pth` (path or {key: array}) -> `TVILFM(config)` variables.

    A checkpoint saved from `nn.DataParallel` (every key under `module.`) is read transparently.
    Raises ConversionError naming the first missing/mis-shaped key, or all unexpected keys.
    """
    if isinstance(checkpoint, Mapping):
        tensors, source = dict(checkpoint), "official state_dict"
    else:
        tensors, source = load_torch_checkpoint(checkpoint), os.fspath(checkpoint)
    prefix = "module." if tensors and all(k.startswith("module.") for k in tensors) else ""
    sd = StateDict(tensors, source=source, prefix=prefix)
    variables = official_variables_from_torch(sd, config)
    sd.finish(ignore=[prefix + p for p in OFFICIAL_IGNORED])
    return variables
