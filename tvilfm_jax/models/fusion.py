"""Fusion of the IR image feature with caption features (docs/original.md §1.6). No weights.

All inputs are pre-BN features [B,D]; the fused feature goes through the shared BN-neck.
"""

from __future__ import annotations

import jax.numpy as jnp

FUSIONS = ("sff", "add")


def semantic_filtered_fusion(f_ir: jnp.ndarray, t_rgb: jnp.ndarray, t_ir: jnp.ndarray) -> jnp.ndarray:
    """SFF: `f_IR + T(RGB caption) - T(IR caption)`; removing T(IR caption) keeps only what the
    RGB caption adds beyond what is visible in IR (mostly colour). [B,D] x3 -> [B,D]."""
    return f_ir + t_rgb - t_ir


def additive_fusion(f_ir: jnp.ndarray, t_rgb: jnp.ndarray) -> jnp.ndarray:
    """Plain add (training without --Feat_Filter): `f_IR + T(RGB caption)`. [B,D] x2 -> [B,D]."""
    return f_ir + t_rgb


def fuse(kind: str, f_ir: jnp.ndarray, t_rgb: jnp.ndarray, t_ir: jnp.ndarray | None) -> jnp.ndarray:
    """Dispatches on `kind` in FUSIONS; `t_ir` is required for "sff" and ignored for "add"."""
    if kind == "sff":
        if t_ir is None:
            raise ValueError("SFF fusion needs the IR-caption text feature t_ir")
        return semantic_filtered_fusion(f_ir, t_rgb, t_ir)
    if kind == "add":
        return additive_fusion(f_ir, t_rgb)
    raise ValueError(f"unknown fusion {kind!r}; expected one of {FUSIONS}")
