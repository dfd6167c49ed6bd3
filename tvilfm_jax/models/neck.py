"""BN-neck and bias-free identity classifier ("Classifier", docs/original.md §1.5)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tvilfm_jax.models.batchnorm import BatchNorm


def l2_normalize(x: jnp.ndarray) -> jnp.ndarray:
    """x / ||x||_2 along the last axis, with no epsilon (as the original)."""
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class BNNeck(nn.Module):
    """BatchNorm1d(D) (gamma 1, beta 0, both trained) + Linear(D -> C, no bias, N(0, 0.001)).

    `__call__(x [N,D], train)`:
      train -> (x unchanged [N,D] (the pre-BN features the WRT loss uses), logits [N,C]),
               BN with batch statistics over all N rows, running statistics updated;
      eval  -> L2-normalised BN(x) [N,D] with running statistics.
    Everything here is fp32: it is tiny and feeds the losses and the retrieval scores. The
    classifier's matmul runs at Precision.HIGHEST, so GPUs do not run it as TF32.
    """

    num_classes: int

    def setup(self):
        self.bn = BatchNorm()
        self.classifier = nn.Dense(self.num_classes, use_bias=False, precision=jax.lax.Precision.HIGHEST,
                                   kernel_init=nn.initializers.normal(0.001))

    def __call__(self, x: jnp.ndarray, train: bool):
        x = x.astype(jnp.float32)
        if train:
            return x, self.classifier(self.bn(x, use_running_average=False))
        return l2_normalize(self.bn(x, use_running_average=True))
