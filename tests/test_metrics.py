"""Retrieval metrics: hand-made cases per protocol rule, and agreement with the reference."""

import jax.numpy as jnp
import numpy as np
import pytest

from tvilfm_jax.eval.metrics import (
    average_results,
    evaluate,
    format_row,
    per_query_stats,
    summarize,
)
from tvilfm_jax.eval.reference_metrics import reference_evaluate


def _both(sim, q_pids, g_pids, q_cams, g_cams, protocol, max_rank=5):
    """Runs both jitted kernels and the reference; checks they agree; returns the metric."""
    sim = np.asarray(sim, np.float32)
    ref = reference_evaluate(sim, q_pids, g_pids, q_cams, g_cams, protocol, max_rank=max_rank)
    for method in ("compare", "sort"):
        got = evaluate(sim, q_pids, g_pids, q_cams, g_cams, protocol, max_rank, method=method)
        np.testing.assert_allclose(got["cmc"], ref["cmc"], atol=1e-12, err_msg=method)
        assert got["mAP"] == pytest.approx(ref["mAP"], abs=1e-6), method
        assert got["mINP"] == pytest.approx(ref["mINP"], abs=1e-6), method
    return got


# Gallery shared by the SYSU camera cases; listed in descending similarity.
SYSU_G_PIDS = np.array([1, 3, 3, 1, 2])
SYSU_G_CAMS = np.array([2, 1, 5, 4, 2])
SYSU_SIM = np.array([[0.9, 0.8, 0.75, 0.6, 0.5]])


def test_sysu_no_removal_for_cam6_query():
    # Ranked pids [1, 3, 3, 1, 2]: first hit at rank 1; hits at ranks 1 and 4.
    r = _both(SYSU_SIM, [1], SYSU_G_PIDS, [6], SYSU_G_CAMS, "sysu")
    np.testing.assert_array_equal(r["cmc"], [1, 1, 1, 1, 1])
    assert r["mAP"] == pytest.approx((1 / 1 + 2 / 4) / 2)
    assert r["mINP"] == pytest.approx(2 / 4)


def test_sysu_cam3_query_drops_every_cam2_image_only():
    # Both cam-2 images go (the true match pid 1 and the impostor pid 2); cams 1, 4, 5 stay:
    # kept ranked pids [3, 3, 1] -> unique [3, 1] -> CMC rank 2; the hit is 3rd of the kept.
    r = _both(SYSU_SIM, [1], SYSU_G_PIDS, [3], SYSU_G_CAMS, "sysu")
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1, 1])
    assert r["mAP"] == pytest.approx(1 / 3)
    assert r["mINP"] == pytest.approx(1 / 3)
    # Both queries together: CMC and the means over valid queries.
    r2 = _both(np.repeat(SYSU_SIM, 2, 0), [1, 1], SYSU_G_PIDS, [3, 6], SYSU_G_CAMS, "sysu")
    np.testing.assert_allclose(r2["cmc"], [0.5, 1, 1, 1, 1])
    assert r2["mAP"] == pytest.approx((1 / 3 + 0.75) / 2)
    assert r2["mINP"] == pytest.approx((1 / 3 + 0.5) / 2)


def test_sysu_other_query_cams_remove_nothing():
    for cam in (1, 2, 4, 5, 6):
        r = _both(SYSU_SIM, [1], SYSU_G_PIDS, [cam], SYSU_G_CAMS, "sysu")
        assert r["mAP"] == pytest.approx(0.75), cam


def test_llcm_removes_same_pid_and_same_cam_only():
    g_pids = np.array([1, 2, 1, 1])
    g_cams = np.array([4, 4, 5, 4])
    sim = np.array([[0.9, 0.8, 0.7, 0.6]])
    # Query pid 1 cam 4: the two pid-1 cam-4 images go; pid 2 on cam 4 stays -> [2, 1].
    r = _both(sim, [1], g_pids, [4], g_cams, "llcm")
    np.testing.assert_array_equal(r["cmc"], [0, 1, 1, 1, 1])
    assert r["mAP"] == pytest.approx(1 / 2)
    assert r["mINP"] == pytest.approx(1 / 2)
    # The SYSU rule removes nothing here: [1, 2, 1, 1].
    r = _both(sim, [1], g_pids, [4], g_cams, "sysu")
    np.testing.assert_array_equal(r["cmc"], [1, 1, 1, 1, 1])
    assert r["mAP"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert r["mINP"] == pytest.approx(3 / 4)


def test_deduplicated_cmc_vs_plain_cmc():
    # Ranked pids [2, 2, 2, 1]: unique [2, 1] puts the hit at rank 2, the plain list at 4.
    sim = np.array([[0.9, 0.8, 0.7, 0.6]])
    g_pids, g_cams = np.array([2, 2, 2, 1]), np.array([1, 4, 5, 1])
    dedup = _both(sim, [1], g_pids, [6], g_cams, "sysu")
    plain = _both(sim, [1], g_pids, [6], g_cams, "regdb")
    np.testing.assert_array_equal(dedup["cmc"], [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(plain["cmc"], [0, 0, 0, 1, 1])
    for r in (dedup, plain):  # AP/INP are never de-duplicated
        assert r["mAP"] == pytest.approx(1 / 4)
        assert r["mINP"] == pytest.approx(1 / 4)


def test_regdb_ignores_cameras_and_ranks_by_similarity():
    # Gallery given out of order; ranked pids are [1, 2, 1, 3, 1] (hits at ranks 1, 3, 5).
    g_pids = np.array([3, 1, 1, 2, 1])
    sim = np.array([[0.4, 0.1, 0.9, 0.7, 0.5]])
    r = _both(sim, [1], g_pids, None, None, "regdb")
    np.testing.assert_array_equal(r["cmc"], [1, 1, 1, 1, 1])
    assert r["mAP"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert r["mINP"] == pytest.approx(3 / 5)
    # Same cams for query and gallery would trigger removal in llcm, never in regdb.
    same = evaluate(sim, [1], g_pids, [1], np.ones(5, int), "regdb", max_rank=5)
    assert same["mAP"] == pytest.approx(r["mAP"])


def test_queries_without_a_match_are_skipped():
    sim = np.array([[0.9, 0.8, 0.1], [0.9, 0.8, 0.1], [0.2, 0.9, 0.8]])
    g_pids, g_cams = np.array([1, 2, 3]), np.array([2, 1, 1])
    # q0: pid 1 found at rank 1. q1: pid 9 absent. q2: pid 1 only on cam 2, removed (cam 3).
    r = _both(sim, [1, 9, 1], g_pids, [6, 6, 3], g_cams, "sysu")
    np.testing.assert_array_equal(r["cmc"], [1, 1, 1, 1, 1])
    assert r["num_valid"] == 1
    assert r["mAP"] == 1.0 and r["mINP"] == 1.0
    _, ap, inp, valid = per_query_stats(sim, [1, 9, 1], g_pids, [6, 6, 3], g_cams, "sysu")
    np.testing.assert_array_equal(valid, [True, False, False])
    np.testing.assert_array_equal(ap, [1, 0, 0])
    np.testing.assert_array_equal(inp, [1, 0, 0])
    with pytest.raises(ValueError, match="no query identity"):
        evaluate(sim[1:], [9, 1], g_pids, [6, 3], g_cams, "sysu")


def test_ties_are_broken_by_gallery_index():
    # Equal scores: the lower gallery index ranks first.
    r = _both([[0.5, 0.5]], [1], [2, 1], [6], [1, 1], "sysu")
    np.testing.assert_array_equal(r["cmc"][:2], [0, 1])
    assert r["mAP"] == pytest.approx(0.5)
    r = _both([[0.5, 0.5]], [1], [1, 2], [6], [1, 1], "sysu")
    assert r["cmc"][0] == 1 and r["mAP"] == 1.0
    # +0.0 and -0.0 tie as well.
    r = _both([[0.0, -0.0, 0.3]], [1], [2, 1, 3], None, None, "regdb")
    np.testing.assert_array_equal(r["cmc"][:3], [0, 0, 1])
    assert r["mAP"] == pytest.approx(1 / 3)
    # A tie with the first hit: index 0 (pid 3) comes before it, index 2 (pid 4) after.
    r = _both([[0.7, 0.7, 0.7, 0.9]], [1], [3, 1, 4, 2], [6], [1, 1, 1, 1], "sysu")
    np.testing.assert_array_equal(r["cmc"][:4], [0, 0, 1, 1])


def test_cmc_is_extended_flat_past_the_gallery():
    r = _both([[0.9, 0.1, 0.5]], [1], [2, 1, 2], [6], [1, 1, 4], "sysu", max_rank=20)
    assert r["cmc"].shape == (20,)
    np.testing.assert_array_equal(r["cmc"], [0] + [1] * 19)
    r = _both([[0.9, 0.1, 0.5]], [1], [2, 1, 2], None, None, "regdb", max_rank=20)
    np.testing.assert_array_equal(r["cmc"], [0, 0] + [1] * 18)


@pytest.mark.parametrize("protocol", ["sysu", "regdb", "llcm"])
def test_random_agreement_with_reference(protocol):
    rng = np.random.default_rng({"sysu": 0, "regdb": 1, "llcm": 2}[protocol])
    num_q, num_g = 61, 47
    q_pids, g_pids = rng.integers(0, 14, num_q), rng.integers(0, 12, num_g)
    q_cams, g_cams = rng.choice([3, 6], num_q), rng.integers(1, 7, num_g)
    # Rounded scores produce many ties; a bonus for true matches makes ranks non-trivial.
    sim = rng.normal(size=(num_q, num_g)) + 0.8 * (q_pids[:, None] == g_pids[None, :])
    sim = np.round(sim, 1).astype(np.float32)
    ref = reference_evaluate(sim, q_pids, g_pids, q_cams, g_cams, protocol, max_rank=20)
    assert 0 < ref["cmc"][0] < ref["cmc"][-1]
    cases = [  # 7 and 16 do not divide 61
        (sim, None, "compare"),
        (jnp.asarray(sim), 16, "compare"),
        (sim, 7, "sort"),
        (jnp.asarray(sim), None, "sort"),
    ]
    for arr, chunk, method in cases:
        got = evaluate(
            arr, q_pids, g_pids, q_cams, g_cams, protocol, 20, chunk_size=chunk, method=method
        )
        np.testing.assert_allclose(got["cmc"], ref["cmc"], atol=1e-6)
        assert abs(got["mAP"] - ref["mAP"]) <= 1e-6
        assert abs(got["mINP"] - ref["mINP"]) <= 1e-6


@pytest.mark.parametrize("protocol", ["sysu", "regdb", "llcm"])
def test_compare_kernel_in_small_blocks_matches_sort_and_reference(monkeypatch, protocol):
    # A tiny block makes the compare kernel loop over many blocks plus a remainder within
    # each chunk; scores on a coarse grid give exact ties (incl. -0.0 vs 0.0) everywhere.
    rng = np.random.default_rng(4)
    num_q, num_g = 37, 53
    q_pids, g_pids = rng.integers(0, 9, num_q), rng.integers(0, 8, num_g)
    per_pid = np.bincount(g_pids)
    width = per_pid.max()
    table = max(num_g, np.count_nonzero(per_pid) * width) * width  # elements per query
    monkeypatch.setattr("tvilfm_jax.eval.metrics._COMPARE_BLOCK_ELEMENTS", 3 * table)
    q_cams, g_cams = rng.choice([3, 6], num_q), rng.integers(1, 7, num_g)
    sim = rng.integers(-3, 4, (num_q, num_g)) * 0.25 + 0.5 * (q_pids[:, None] == g_pids)
    sim = np.where(rng.random(sim.shape) < 0.1, -0.0, sim).astype(np.float32)
    args = (sim, q_pids, g_pids, q_cams, g_cams, protocol)
    ref = reference_evaluate(*args, max_rank=20)
    for chunk in (None, 10):
        cmp = per_query_stats(*args, chunk_size=chunk, method="compare")
        srt = per_query_stats(*args, chunk_size=chunk, method="sort")
        for a, b in zip(cmp, srt):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
        got = summarize(*cmp, max_rank=20)
        np.testing.assert_allclose(got["cmc"], ref["cmc"], atol=1e-12)
        assert abs(got["mAP"] - ref["mAP"]) <= 1e-6
        assert abs(got["mINP"] - ref["mINP"]) <= 1e-6


def test_string_pids_and_a_large_pid_group_agree():
    # One pid owns 200 of 320 gallery images: past the compare kernel's table bound, so
    # "auto" sorts; both kernels must still agree with the reference.
    rng = np.random.default_rng(3)
    names = np.array([f"id{i:03d}" for i in range(40)])
    g_pids = np.concatenate([np.full(200, "id000"), rng.choice(names[:30], 120)])
    q_pids = rng.choice(names, 90)
    q_cams, g_cams = rng.choice([3, 6], 90), rng.integers(1, 6, 320)
    sim = rng.normal(size=(90, 320)).astype(np.float32)
    for protocol in ("sysu", "llcm"):
        ref = reference_evaluate(sim, q_pids, g_pids, q_cams, g_cams, protocol)
        for method in ("auto", "compare"):
            got = evaluate(sim, q_pids, g_pids, q_cams, g_cams, protocol, method=method)
            np.testing.assert_allclose(got["cmc"], ref["cmc"], atol=1e-6)
            assert abs(got["mAP"] - ref["mAP"]) <= 1e-6
            assert abs(got["mINP"] - ref["mINP"]) <= 1e-6


def test_bad_input_is_rejected_with_clear_errors():
    sim = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="protocol"):
        evaluate(sim, [1, 2], [1, 2, 3], [1, 1], [1, 1, 1], "market")
    with pytest.raises(ValueError, match=r"g_pids must have shape \(3,\)"):
        evaluate(sim, [1, 2], [1, 2], [1, 1], [1, 1, 1], "sysu")
    with pytest.raises(ValueError, match="needs q_cams and g_cams"):
        evaluate(sim, [1, 2], [1, 2, 3], None, None, "sysu")
    with pytest.raises(ValueError, match="integer camera ids"):
        evaluate(sim, [1, 2], [1, 2, 3], [1.5, 1], [1, 1, 1], "llcm")
    with pytest.raises(ValueError, match="2-D"):
        evaluate(np.zeros(3), [1], [1, 2, 3], [1], [1, 1, 1], "sysu")
    with pytest.raises(ValueError, match="method"):
        evaluate(sim, [1, 2], [1, 2, 3], [1, 1], [1, 1, 1], "sysu", method="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate(sim, [1, 2], [1, 2, 3], [1, 1], [1, 1, 1], "sysu", chunk_size=0)
    for value in (np.nan, np.inf, -np.inf):
        bad = sim.copy()
        bad[1, 2] = value
        for method in ("compare", "sort"):
            with pytest.raises(ValueError, match="NaN or infinite"):
                evaluate(bad, [1, 2], [1, 2, 3], [1, 1], [1, 1, 1], "sysu", method=method)


def test_average_results_and_format_row():
    a = {"cmc": np.array([0.5, 1.0]), "mAP": 0.4, "mINP": 0.2}
    b = {"cmc": np.array([0.7, 0.8]), "mAP": 0.6, "mINP": 0.4}
    m = average_results([a, b])
    np.testing.assert_allclose(m["cmc"], [0.6, 0.9])
    assert m["mAP"] == pytest.approx(0.5) and m["mINP"] == pytest.approx(0.3)
    assert m["num_trials"] == 2
    # Population std over the trials, laid out as the mean; one trial has none.
    np.testing.assert_allclose(m["std"]["cmc"], [0.1, 0.1])
    assert m["std"]["mAP"] == pytest.approx(0.1) and m["std"]["mINP"] == pytest.approx(0.1)
    one = average_results([a])
    assert one["std"]["mAP"] == one["std"]["mINP"] == 0.0 and not one["std"]["cmc"].any()
    row = format_row("Fusion", m, ranks=(1, 2))
    assert row.startswith("Fusion") and "R1  60.00 ± 10.00" in row and "R2  90.00 ± 10.00" in row
    assert "mAP  50.00 ± 10.00" in row and "mINP  30.00 ± 10.00" in row
    assert "±" not in format_row("one trial", a, ranks=(1, 2))  # a single result has no spread to show
    with pytest.raises(ValueError, match="rank 5"):
        format_row("x", m, ranks=(5,))
    with pytest.raises(ValueError, match="one length"):
        average_results([a, {"cmc": np.ones(3), "mAP": 0, "mINP": 0}])
