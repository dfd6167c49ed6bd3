"""Batch normalisation that behaves exactly like PyTorch's `BatchNorm{1,2}d`.

Flax's `nn.BatchNorm` updates the running variance with the *biased* batch variance, while
PyTorch uses the unbiased one (n / (n - 1)); released checkpoints and stage-2 "drifting" visual
statistics (docs/original.md §3.5) only match if we do what PyTorch does. Variable names follow Flax
(`params/{scale,bias}`, `batch_stats/{mean,var}`) so converted checkpoints read naturally.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any  # a jnp dtype such as jnp.float32 or jnp.bfloat16


class BatchNorm(nn.Module):
    """BatchNorm over the last axis, statistics over all other axes.

    Train mode (`use_running_average=False`) normalises with the biased batch variance and, unless
    the module is being initialised, updates `batch_stats` as PyTorch does:
    `mean <- (1 - m) * mean + m * batch_mean`, `var <- (1 - m) * var + m * unbiased_batch_var`.
    Eval mode normalises with the running statistics. Statistics and normalisation run in fp32;
    the result is cast to `dtype`.

    Attributes:
      momentum: PyTorch convention (weight of the new batch), 0.1 by default.
      epsilon: added to the variance, 1e-5 as in PyTorch.
      dtype: output dtype (e.g. bf16 activations); params and statistics stay fp32.
    """

    use_running_average: bool | None = None
    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, use_running_average: bool | None = None) -> jnp.ndarray:
        """x: [..., C] -> [..., C] in `dtype`."""
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))

        x32 = x.astype(jnp.float32)
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            count = math.prod(x.shape[:-1])
            if count < 2:
                raise ValueError(
                    f"BatchNorm in train mode needs more than one value per channel, got input shape {x.shape}"
                )
            mean = jnp.mean(x32, axis=axes)
            # Two-pass variance: E[x^2] - E[x]^2 loses precision on large activations.
            var = jnp.mean(jnp.square(x32 - mean), axis=axes)
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * var * (count / (count - 1))
        y = (x32 - mean) * (scale * jnp.reciprocal(jnp.sqrt(var + self.epsilon))) + bias
        return y.astype(self.dtype)
