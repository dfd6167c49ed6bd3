"""Generalised-mean pooling with one trainable exponent (docs/original.md §1.3)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class GeM(nn.Module):
    """`(mean_{h,w} clamp(x, eps)^p)^(1/p)`: [N,H,W,C] -> [N,C] in fp32.

    `p` is a parameter of shape [1] (as in the released checkpoints), initialised to 3. The pow
    runs in fp32 whatever the input dtype: x^3 of bf16 activations would lose most of its bits.
    """

    p_init: float = 3.0
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        p = self.param("p", nn.initializers.constant(self.p_init), (1,), jnp.float32)
        x = jnp.maximum(x.astype(jnp.float32), self.epsilon)
        return jnp.mean(x ** p, axis=(1, 2)) ** (1.0 / p)
