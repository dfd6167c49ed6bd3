"""Identity sampler (docs/original.md §5.6): batch structure, alignment, epoch length, determinism, hosts."""

import numpy as np
import pytest

from tvilfm_jax.data import sampler

P, K = 8, 4


def make_labels(seed=0, num_ids=20, n_rgb=310, n_ir=170):
    """Shuffled labels; every identity has >= 1 sample per modality, some exactly one."""
    rng = np.random.default_rng(seed)
    rgb = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, n_rgb - num_ids)])
    ir = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids // 2, n_ir - num_ids)])
    return rng.permutation(rgb), rng.permutation(ir)


def test_steps_per_epoch_is_floor_plus_one():
    assert sampler.steps_per_epoch(310, 170, 8, 4) == 310 // 32 + 1 == 10
    assert sampler.steps_per_epoch(64, 100, 8, 4) == 100 // 32 + 1
    assert sampler.steps_per_epoch(64, 32, 8, 4) == 3  # exact multiples still get the +1


def test_every_batch_has_p_distinct_ids_times_k_aligned_across_modalities():
    labels_rgb, labels_ir = make_labels()
    idx_rgb, idx_ir = sampler.identity_epoch(labels_rgb, labels_ir, P, K, seed=1, epoch=0)
    steps = sampler.steps_per_epoch(len(labels_rgb), len(labels_ir), P, K)
    assert idx_rgb.shape == idx_ir.shape == (steps * P * K,)
    assert idx_rgb.dtype == np.int64
    assert 0 <= idx_rgb.min() and idx_rgb.max() < len(labels_rgb)
    assert 0 <= idx_ir.min() and idx_ir.max() < len(labels_ir)
    lab_rgb, lab_ir = labels_rgb[idx_rgb], labels_ir[idx_ir]
    np.testing.assert_array_equal(lab_rgb, lab_ir)  # same identity position by position
    for batch in lab_rgb.reshape(steps, P, K):
        assert (batch == batch[:, :1]).all()  # K consecutive positions per identity
        assert len(np.unique(batch[:, 0])) == P  # P distinct identities


def test_identities_with_a_single_image_are_drawn_with_replacement():
    labels = np.repeat(np.arange(10), [1, 1, 1, 1, 1, 5, 5, 5, 5, 5])
    idx_rgb, _ = sampler.identity_epoch(labels, labels, 5, 4, seed=0, epoch=0)
    for group in labels[idx_rgb].reshape(-1, 5, 4):
        for ids in group:
            assert (ids == ids[0]).all()
    singles = np.isin(labels[idx_rgb], np.arange(5))
    assert singles.any()
    # Each single-image identity maps to its one sample index every time.
    for ident in range(5):
        assert set(idx_rgb[labels[idx_rgb] == ident].tolist()) <= {int(np.flatnonzero(labels == ident)[0])}


def test_determinism_and_dependence_on_seed_and_epoch():
    labels_rgb, labels_ir = make_labels()
    a = sampler.identity_epoch(labels_rgb, labels_ir, P, K, seed=5, epoch=3)
    b = sampler.identity_epoch(labels_rgb.copy(), labels_ir.copy(), P, K, seed=5, epoch=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for seed, epoch in ((5, 4), (6, 3)):
        c = sampler.identity_epoch(labels_rgb, labels_ir, P, K, seed=seed, epoch=epoch)
        assert not np.array_equal(a[0], c[0])


def test_sampling_is_roughly_uniform_over_identities_and_images():
    labels = np.repeat(np.arange(12), 6)
    counts_id = np.zeros(12)
    counts_img = np.zeros(labels.size)
    for epoch in range(200):
        idx, _ = sampler.identity_epoch(labels, labels, 4, 2, seed=0, epoch=epoch)
        counts_id += np.bincount(labels[idx], minlength=12)
        counts_img += np.bincount(idx, minlength=labels.size)
    assert counts_id.min() / counts_id.max() > 0.85
    assert counts_img.min() / counts_img.max() > 0.6


def test_process_shares_partition_each_global_batch():
    labels_rgb, labels_ir = make_labels()
    idx_rgb, _ = sampler.identity_epoch(labels_rgb, labels_ir, P, K, seed=1, epoch=0)
    global_batches = idx_rgb.reshape(-1, P * K)
    for count in (1, 2, 4, 8):
        shares = [sampler.process_share(idx_rgb, P * K, p, count) for p in range(count)]
        assert all(s.shape == (global_batches.shape[0], P * K // count) for s in shares)
        np.testing.assert_array_equal(np.concatenate(shares, axis=1), global_batches)


def test_bad_arguments_raise_clear_errors():
    labels_rgb, labels_ir = make_labels()
    with pytest.raises(ValueError, match="same identities"):
        sampler.identity_epoch(labels_rgb, np.where(labels_ir == 3, 99, labels_ir), P, K, 0, 0)
    with pytest.raises(ValueError, match="ids_per_batch"):
        sampler.identity_epoch(labels_rgb, labels_ir, 21, K, 0, 0)
    with pytest.raises(ValueError, match="1-D integer"):
        sampler.identity_epoch(labels_rgb.astype(float), labels_ir, P, K, 0, 0)
    idx, _ = sampler.identity_epoch(labels_rgb, labels_ir, P, K, 0, 0)
    with pytest.raises(ValueError, match="divisible"):
        sampler.process_share(idx, P * K, 0, 3)
    with pytest.raises(ValueError, match="process_index"):
        sampler.process_share(idx, P * K, 2, 2)
