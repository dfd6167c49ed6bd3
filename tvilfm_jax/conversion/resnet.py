"""torchvision ResNet-50 (v1.5) state_dicts -> `DualResNet` variables.

The torchvision stem (`conv1`, `bn1`) is copied into both modality stems, as the original builds
each stem from its own ImageNet instance (docs/original.md §1.2); `layer1..4` become the shared body. The
helpers taking key prefixes are shared with the official TVI-LFM layout (`official.py`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence

import numpy as np

from tvilfm_jax.conversion.common import StateDict, conv_kernel, load_torch_checkpoint
from tvilfm_jax.models.resnet import EXPANSION, LAYER_STRIDES, RESNET50_BLOCKS

Variables = dict[str, dict]

# Keys a torchvision classification checkpoint carries that the re-id backbone has no use for.
TORCHVISION_IGNORED = ("fc.weight", "fc.bias", "*num_batches_tracked")


def conv_from_torch(sd: StateDict, key: str, out_ch: int, in_ch: int, k: int) -> dict:
    """`{key}.weight` [O,I,k,k] -> {"kernel": [k,k,I,O]}."""
    return {"kernel": conv_kernel(sd.take(f"{key}.weight", (out_ch, in_ch, k, k)))}


def batchnorm_from_torch(sd: StateDict, key: str, features: int) -> tuple[dict, dict]:
    """BatchNorm `{key}.{weight,bias,running_mean,running_var}` -> (params, batch_stats)."""
    shape = (features,)
    params = {"scale": sd.take(f"{key}.weight", shape), "bias": sd.take(f"{key}.bias", shape)}
    stats = {"mean": sd.take(f"{key}.running_mean", shape), "var": sd.take(f"{key}.running_var", shape)}
    return params, stats


def stem_from_torch(sd: StateDict, conv_key: str, bn_key: str, width: int) -> tuple[dict, dict]:
    """Stem conv + BN -> (params, batch_stats) of `Stem`."""
    bn_params, bn_stats = batchnorm_from_torch(sd, bn_key, width)
    return {"conv": conv_from_torch(sd, conv_key, width, 3, 7), "bn": bn_params}, {"bn": bn_stats}


def body_from_torch(sd: StateDict, layer_keys: Sequence[str], blocks: Sequence[int],
                    width: int) -> tuple[dict, dict]:
    """layer1..4 (torch prefixes `layer_keys[i]`, blocks `{prefix}.{j}`) -> `Body` variables."""
    params, stats = {}, {}
    in_ch = width
    for i, (layer_key, count, stride) in enumerate(zip(layer_keys, blocks, LAYER_STRIDES)):
        planes = width * 2**i
        out_ch = planes * EXPANSION
        for j in range(count):
            key = f"{layer_key}.{j}"
            p, s = {}, {}
            for name, (o, c, k) in {"conv1": (planes, in_ch, 1), "conv2": (planes, planes, 3),
                                    "conv3": (out_ch, planes, 1)}.items():
                p[name] = conv_from_torch(sd, f"{key}.{name}", o, c, k)
            for n, feats in (("bn1", planes), ("bn2", planes), ("bn3", out_ch)):
                p[n], s[n] = batchnorm_from_torch(sd, f"{key}.{n}", feats)
            if j == 0 and (stride != 1 or in_ch != out_ch):
                p["downsample_conv"] = conv_from_torch(sd, f"{key}.downsample.0", out_ch, in_ch, 1)
                p["downsample_bn"], s["downsample_bn"] = batchnorm_from_torch(sd, f"{key}.downsample.1", out_ch)
            params[f"layer{i + 1}_{j}"], stats[f"layer{i + 1}_{j}"] = p, s
            in_ch = out_ch
    return params, stats


def dual_resnet_from_torchvision(sd: StateDict, blocks: Sequence[int] = RESNET50_BLOCKS,
                                 width: int = 64) -> Variables:
    """torchvision-layout keys (relative to `sd.prefix`) -> {"params", "batch_stats"} of `DualResNet`.

    Does not check for leftover keys; callers decide what may remain (see `convert_torchvision_resnet`).
    """
    stem_p, stem_s = stem_from_torch(sd, "conv1", "bn1", width)
    body_p, body_s = body_from_torch(sd, [f"layer{i}" for i in range(1, 5)], blocks, width)
    # Separate arrays per stem: the two stems train apart from here on.
    return {
        "params": {"rgb_stem": copy.deepcopy(stem_p), "ir_stem": stem_p, "body": body_p},
        "batch_stats": {"rgb_stem": copy.deepcopy(stem_s), "ir_stem": stem_s, "body": body_s},
    }


def convert_torchvision_resnet(checkpoint: str | os.PathLike | Mapping[str, np.ndarray],
                               blocks: Sequence[int] = RESNET50_BLOCKS, width: int = 64) -> Variables:
    """A torchvision ResNet checkpoint (path or {key: array}) -> `DualResNet` variables.

    Every key except the ImageNet `fc` head and `num_batches_tracked` counters must be used, and
    every expected key must be present with the expected shape; otherwise ConversionError.
    """
    if isinstance(checkpoint, Mapping):
        sd = StateDict(checkpoint, source="torchvision state_dict")
    else:
        sd = StateDict(load_torch_checkpoint(checkpoint), source=os.fspath(checkpoint))
    variables = dual_resnet_from_torchvision(sd, blocks, width)
    sd.finish(ignore=TORCHVISION_IGNORED)
    return variables
