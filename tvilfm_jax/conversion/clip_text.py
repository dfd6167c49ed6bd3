"""OpenAI CLIP text tower (PyTorch key names) -> `CLIPTextEncoder` params.

Key names are OpenAI CLIP's (docs/original.md §1.9), relative to the StateDict's prefix; the official
TVI-LFM checkpoints hold the same keys under `base_model.` with the projection already widened.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from tvilfm_jax.conversion.common import ConversionError, StateDict, dense_kernel, load_torch_checkpoint
from tvilfm_jax.models.text import TextConfig

Params = dict[str, Any]

# Everything in an OpenAI CLIP checkpoint that the text tower does not use (docs/original.md §1.4): the image
# tower, the contrastive temperature, and the scalar hyper-parameters stored in the JIT archives.
OPENAI_NON_TEXT_KEYS = ("visual.*", "logit_scale", "input_resolution", "context_length", "vocab_size")


def _f32(x: np.ndarray) -> np.ndarray:
    # OpenAI's JIT weights are fp16; the model keeps fp32 params.
    return np.asarray(x, dtype=np.float32)


def _layer_norm(sd: StateDict, key: str, width: int) -> Params:
    return {"scale": _f32(sd.take(f"{key}.weight", (width,))), "bias": _f32(sd.take(f"{key}.bias", (width,)))}


def _linear(sd: StateDict, key: str, out_dim: int, in_dim: int) -> Params:
    return {"kernel": _f32(dense_kernel(sd.take(f"{key}.weight", (out_dim, in_dim)))),
            "bias": _f32(sd.take(f"{key}.bias", (out_dim,)))}


def _block(sd: StateDict, w: int) -> Params:
    in_w = _f32(sd.take("attn.in_proj_weight", (3 * w, w)))
    in_b = _f32(sd.take("attn.in_proj_bias", (3 * w,)))
    # PyTorch MHA packs q, k, v row-wise into one [3W, W] in-projection.
    attn = {name: {"kernel": dense_kernel(in_w[i * w:(i + 1) * w]), "bias": in_b[i * w:(i + 1) * w]}
            for i, name in enumerate(("q_proj", "k_proj", "v_proj"))}
    attn["out_proj"] = _linear(sd, "attn.out_proj", w, w)
    return {
        "ln_1": _layer_norm(sd, "ln_1", w),
        "attn": attn,
        "ln_2": _layer_norm(sd, "ln_2", w),
        "mlp": {"c_fc": _linear(sd, "mlp.c_fc", 4 * w, w), "c_proj": _linear(sd, "mlp.c_proj", w, 4 * w)},
    }


def _tower_params(sd: StateDict, config: TextConfig) -> Params:
    """Everything but `text_projection`."""
    w = config.width
    params: Params = {
        "token_embedding": {"embedding": _f32(sd.take("token_embedding.weight", (config.vocab_size, w)))},
        "positional_embedding": _f32(sd.take("positional_embedding", (config.context_length, w))),
    }
    for i in range(config.layers):
        params[f"resblocks_{i}"] = _block(sd.scoped(f"transformer.resblocks.{i}."), w)
    params["ln_final"] = _layer_norm(sd, "ln_final", w)
    return params


def text_params_from_torch(sd: StateDict, config: TextConfig) -> Params:
    """OpenAI-named text keys (relative to `sd.prefix`) -> `CLIPTextEncoder(config)` params.

    `text_projection` must already be [width, embed_dim]. Keys are marked as used in `sd`, so
    the caller can `sd.finish()` to catch leftovers. Returns the module's params (no 'params'
    wrapper). Raises ConversionError naming any missing or mis-shaped key.
    """
    params = _tower_params(sd, config)
    params["text_projection"] = _f32(sd.take("text_projection", (config.width, config.embed_dim)))
    return params


def widen_projection(w: np.ndarray, out_dim: int = 2048) -> np.ndarray:
    """Resizes a projection [width, in_dim] -> [width, out_dim] the way the original loads CLIP's.

    That is PyTorch's bilinear interpolation with align_corners=False on a height-1 image, i.e.
    linear interpolation along the output axis with half-pixel centres and edge clamping, then
    a round trip through fp16 (docs/original.md §1.4). Returns float32.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ConversionError(f"text_projection must be 2-D [width, dim], got shape {w.shape}")
    in_dim = w.shape[1]
    # PyTorch's CPU kernel, step by step in fp32 with its fused multiply-adds (emulated in fp64,
    # where each product of two fp32 numbers is exact), so the result matches it bit for bit:
    # source index fma(in/out, j + 0.5, -0.5) clamped at 0, then fma(1 - f, w[lo], f * w[hi]).
    scale = np.float64(np.float32(in_dim) / np.float32(out_dim))
    centres = np.arange(out_dim, dtype=np.float32) + np.float32(0.5)
    src = np.maximum(scale * centres - 0.5, 0.0).astype(np.float32)
    lo = src.astype(np.int64)
    hi = np.minimum(lo + 1, in_dim - 1)
    frac = src - lo.astype(np.float32)
    near = (np.float32(1) - frac).astype(np.float64) * w[:, lo]
    out = (near + (frac * w[:, hi]).astype(np.float64)).astype(np.float32)
    return out.astype(np.float16).astype(np.float32)


def convert_openai_clip(path_or_tensors: str | os.PathLike | Mapping[str, Any], config: TextConfig) -> Params:
    """OpenAI CLIP checkpoint (e.g. the `RN50.pt` JIT archive, or its state_dict) -> text params.

    The image tower, `logit_scale` and the stored hyper-parameters are ignored on purpose; any
    other key that the text tower does not consume raises. The projection is widened with
    `widen_projection` when its width differs from `config.embed_dim` (1024 -> 2048 for RN50).
    Mapping values may be numpy arrays or torch tensors.
    """
    if isinstance(path_or_tensors, Mapping):
        tensors = {k: _as_numpy(v) for k, v in path_or_tensors.items()}
        source = "state_dict"
    else:
        tensors = load_torch_checkpoint(path_or_tensors)
        source = os.fspath(path_or_tensors)
    sd = StateDict(tensors, source=source)
    params = _tower_params(sd, config)
    proj = sd.take("text_projection")
    if proj.ndim != 2 or proj.shape[0] != config.width:
        raise ConversionError(
            f"{source}: key 'text_projection' has shape {tuple(proj.shape)}, expected ({config.width}, N)")
    proj = _f32(proj)
    params["text_projection"] = proj if proj.shape[1] == config.embed_dim else widen_projection(proj, config.embed_dim)
    sd.finish(ignore=OPENAI_NON_TEXT_KEYS)
    return params


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; avoids importing torch for numpy inputs
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        return value.numpy()
    return np.asarray(value)
