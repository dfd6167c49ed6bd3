"""CE and WRT against a PyTorch computation of docs/original.md §4.1-4.2 on random features/labels."""

import numpy as np
import pytest

import jax.numpy as jnp

from tvilfm_jax import losses

import torch
pytestmark = pytest.mark.torch

# The original's AGW WRT, ending in its SoftMarginLoss (inf past a margin of ~88).
from benchmarks.torch_reference import wrt_loss_original_overflowing as torch_wrt  # noqa: E402


def batch(seed, ids=8, k=4, groups=3, dim=64, scale=1.0):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.repeat(rng.choice(100, ids, replace=False), k), groups)
    feats = (rng.standard_normal((labels.size, dim)) * scale).astype(np.float32)
    return feats, labels.astype(np.int32)


@pytest.mark.parametrize("seed,dim,scale", [(0, 64, 1.0), (1, 2048, 0.05), (2, 256, 0.3), (3, 2048, 0.01)])
def test_wrt_matches_torch(seed, dim, scale):
    feats, labels = batch(seed, dim=dim, scale=scale)
    ours = float(losses.weighted_regularized_triplet(jnp.asarray(feats), jnp.asarray(labels)))
    ref = float(torch_wrt(torch.from_numpy(feats), torch.from_numpy(labels).long()))
    assert np.isfinite(ref)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_wrt_stays_finite_where_the_original_overflows():
    # Identical negatives and far-apart positives: d+ - d- >> 88, where log(1+exp(.)) is inf in fp32.
    feats = np.zeros((4, 8), np.float32)
    feats[0, 0], feats[1, 0] = 100.0, -100.0
    labels = np.array([0, 0, 1, 1], np.int32)
    ref = float(torch_wrt(torch.from_numpy(feats), torch.from_numpy(labels).long()))
    ours = float(losses.weighted_regularized_triplet(jnp.asarray(feats), jnp.asarray(labels)))
    assert np.isinf(ref)
    assert np.isfinite(ours) and ours > 50


def test_wrt_gradient_matches_torch():
    import jax

    feats, labels = batch(5, dim=32)
    g = jax.grad(losses.weighted_regularized_triplet)(jnp.asarray(feats), jnp.asarray(labels))
    xt = torch.from_numpy(feats).requires_grad_(True)
    torch_wrt(xt, torch.from_numpy(labels).long()).backward()
    np.testing.assert_allclose(np.asarray(g), xt.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_cross_entropy_and_accuracy_match_torch():
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((96, 395)) * 3).astype(np.float32)
    labels = rng.integers(0, 395, 96).astype(np.int32)
    labels[:10] = logits[:10].argmax(1)  # make accuracy non-trivial
    ours = float(losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
    ref = float(torch.nn.CrossEntropyLoss()(torch.from_numpy(logits), torch.from_numpy(labels).long()))
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    acc = float(losses.accuracy(jnp.asarray(logits), jnp.asarray(labels)))
    assert acc == pytest.approx(float((logits.argmax(1) == labels).mean()))


def test_pairwise_distances_of_features_sharing_a_large_component_match_fp64():
    """Positive features with a large common component (as GeM's): the distances stay accurate
    (|a|^2+|b|^2-2ab on the raw rows loses ~3 digits here: max error 2.5e-3 at distances ~3)."""
    rng = np.random.default_rng(0)
    common = rng.uniform(0.5, 1.5, 2048)
    noise = 0.05 * rng.standard_normal((96, 2048))
    off = ~np.eye(len(noise), dtype=bool)
    for shift in (0.0, 10.0):
        x = (common + shift + noise).astype(np.float32)
        diff = x.astype(np.float64)[:, None, :] - x.astype(np.float64)[None, :, :]
        ref = np.sqrt((diff * diff).sum(-1))
        got = np.asarray(losses.pairwise_distances(jnp.asarray(x)), np.float64)
        assert np.abs(got - ref)[off].max() < 1e-5 * ref[off].mean(), shift
