"""Dual-stem ResNet ("Dual_Resnet", docs/original.md §1.2): two modality stems and one shared body.

Stems are conv7x7/2 -> BN -> maxpool3x3/2 with NO ReLU (faithful to the released code,
docs/original.md §10.2 item 13). The body is torchvision's layer1-4 of v1.5 bottlenecks (stride on the 3x3 conv)
with the last stride set to 1, so a 288x144 image gives an 18x9 map. Images are NHWC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tvilfm_jax.models.batchnorm import BatchNorm

Dtype = Any


def conv_init(key: jax.Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> jax.Array:
    """torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu") for an HWIO kernel:
    an untruncated normal of variance 2 / (kH * kW * O).

    Drawn as a flat vector and reshaped: XLA:CPU takes ~10 s to compile a 4-D threefry draw
    (vs ~1 s flat), which made initialising a ResNet take minutes.
    """
    kh, kw, _, out = shape
    std = math.sqrt(2.0 / (kh * kw * out))
    return (std * jax.random.normal(key, (math.prod(shape),), jnp.float32)).reshape(shape).astype(dtype)


RESNET50_BLOCKS = (3, 4, 6, 3)
EXPANSION = 4
# Stride of the first block of layer1..4; layer4 keeps stride 1 ("last stride 1").
LAYER_STRIDES = (1, 2, 2, 1)


def feature_dim(width: int) -> int:
    """Channels of the body output: 4 (bottleneck expansion) x 8 x base width (2048 for 64)."""
    return EXPANSION * 8 * width


class Stem(nn.Module):
    """conv7x7 s2 p3 (no bias) -> BN -> maxpool 3x3 s2 p1. [N,H,W,3] -> [N,H/4,W/4,width]."""

    width: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = nn.Conv(self.width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                    kernel_init=conv_init, dtype=self.dtype, name="conv")(x)
        x = BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn")(x)
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class Bottleneck(nn.Module):
    """torchvision v1.5 bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4), projection shortcut if needed.

    [N,H,W,Cin] -> [N,H/s,W/s,4*planes].
    """

    planes: int
    strides: int = 1
    downsample: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        def conv(features, kernel, strides, name):
            pad = (kernel - 1) // 2
            return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                           padding=((pad, pad), (pad, pad)), use_bias=False, kernel_init=conv_init,
                           dtype=self.dtype, name=name)

        def bn(name):
            return BatchNorm(use_running_average=not train, dtype=self.dtype, name=name)

        out = nn.relu(bn("bn1")(conv(self.planes, 1, 1, "conv1")(x)))
        out = nn.relu(bn("bn2")(conv(self.planes, 3, self.strides, "conv2")(out)))
        out = bn("bn3")(conv(self.planes * EXPANSION, 1, 1, "conv3")(out))
        shortcut = x
        if self.downsample:
            shortcut = bn("downsample_bn")(conv(self.planes * EXPANSION, 1, self.strides, "downsample_conv")(x))
        return nn.relu(out + shortcut)


class Body(nn.Module):
    """Shared layer1-4. [N,H/4,W/4,width] -> [N,H/16,W/16,32*width].

    Submodules are named `layer{i}_{j}` (torchvision `layer{i}.{j}`).
    """

    blocks: Sequence[int] = RESNET50_BLOCKS
    width: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        in_features = self.width
        for i, (count, stride) in enumerate(zip(self.blocks, LAYER_STRIDES)):
            planes = self.width * 2**i
            for j in range(count):
                first = j == 0
                x = Bottleneck(planes, strides=stride if first else 1,
                               downsample=first and (stride != 1 or in_features != planes * EXPANSION),
                               dtype=self.dtype, name=f"layer{i + 1}_{j}")(x, train)
                in_features = planes * EXPANSION
        return x


def _present(x: jnp.ndarray | None) -> bool:
    return x is not None and x.shape[0] > 0


class DualResNet(nn.Module):
    """Modality-specific stems + one shared body (docs/original.md §1.2, "1/3" routing of §3.2).

    `__call__(rgb, ir, train)`: rgb [Nr,H,W,3] and ir [Ni,H,W,3] (either may be None or empty)
    -> feature map [Nr+Ni, H/16, W/16, 32*width], RGB rows first. The body runs once on the
    concatenation, so in train mode its BN statistics cover all Nr+Ni images, while each stem's
    BN sees only its own modality.
    """

    blocks: Sequence[int] = RESNET50_BLOCKS
    width: int = 64
    dtype: Dtype = jnp.float32

    def setup(self):
        if len(self.blocks) != 4 or any(b < 1 for b in self.blocks):
            raise ValueError(f"resnet blocks must be four positive counts, got {tuple(self.blocks)}")
        self.rgb_stem = Stem(self.width, dtype=self.dtype)
        self.ir_stem = Stem(self.width, dtype=self.dtype)
        self.body = Body(tuple(self.blocks), self.width, dtype=self.dtype)

    def __call__(self, rgb: jnp.ndarray | None, ir: jnp.ndarray | None, train: bool = False) -> jnp.ndarray:
        parts = []
        if _present(rgb):
            parts.append(self.rgb_stem(rgb, train))
        if _present(ir):
            parts.append(self.ir_stem(ir, train))
        if not parts:
            raise ValueError("DualResNet needs at least one non-empty image batch (rgb or ir)")
        x = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)
        return self.body(x, train)
