"""Training losses of TVI-LFM (docs/original.md §4.1-4.3), computed in fp32 whatever the compute dtype.

Both losses take the *pre-BN* feature rows of one step: [3B, D] in stage 1, [5B, D] in stage 2.
The WRT distance matmul runs at Precision.HIGHEST (full fp32): XLA's default lets GPUs run fp32
dots as TF32 (10-bit mantissa), ~1e-3 relative error in the distances of features that share a
large common component, such as the non-negative GeM features. (The identity logits come from
the neck's classifier, which is HIGHEST too, models/neck.py.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean identity cross-entropy without label smoothing.

    Args:
      logits: [N, C] classifier outputs.
      labels: [N] int class indices in [0, C).
    Returns:
      scalar fp32.
    """
    logits = logits.astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return -jnp.mean(picked)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of rows whose argmax equals the label. logits [N, C], labels [N] -> scalar."""
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def pairwise_distances(x: jax.Array) -> jax.Array:
    """Euclidean distances as AGW computes them, sqrt(max(|a|^2+|b|^2-2ab, 1e-12)): [N,D] -> [N,N].

    The rows are centred on their mean first. Distances do not change under a common shift, but
    the cancellation in |a|^2+|b|^2-2ab does: its rounding error scales with |a|^2, so features
    sharing a large component (GeM features are all positive) lose digits without it.
    """
    x = x - jnp.mean(x, axis=0, keepdims=True)
    sq = jnp.sum(x * x, axis=-1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.sqrt(jnp.maximum(d2, 1e-12))


def weighted_regularized_triplet(features: jax.Array, labels: jax.Array) -> jax.Array:
    """WRT loss of AGW exactly as the original computes it (docs/original.md §4.2).

    Positives include the diagonal; both softmax denominators carry +1e-6; the negative branch
    is not max-shifted (the original's shift is always zero), so with large un-normalised
    features its denominator is dominated by the 1e-6, a behaviour kept on purpose. The
    soft-margin term uses a stable softplus, equal to the original wherever it is finite.

    Args:
      features: [N, D] pre-BN features (any float dtype; computed in fp32).
      labels: [N] int identity labels.
    Returns:
      scalar fp32.
    """
    x = features.astype(jnp.float32)
    dist = pairwise_distances(x)
    same = (labels[:, None] == labels[None, :]).astype(jnp.float32)
    diff = 1.0 - same

    dist_ap = dist * same
    dist_an = dist * diff
    shift = jnp.max(dist_ap, axis=1, keepdims=True)
    exp_ap = jnp.exp(dist_ap - shift) * same
    w_ap = exp_ap / (jnp.sum(exp_ap, axis=1, keepdims=True) + 1e-6)
    exp_an = jnp.exp(-dist_an) * diff
    w_an = exp_an / (jnp.sum(exp_an, axis=1, keepdims=True) + 1e-6)

    furthest_positive = jnp.sum(dist_ap * w_ap, axis=1)
    closest_negative = jnp.sum(dist_an * w_an, axis=1)
    return jnp.mean(jax.nn.softplus(furthest_positive - closest_negative))
