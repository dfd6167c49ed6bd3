"""k-reciprocal re-ranking (tvilfm_jax.eval.rerank) against a loop-by-loop NumPy reading of the
paper (Zhong et al., CVPR 2017), and as an evaluation option through the real scoring path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvilfm_jax.configs import synthetic
from tvilfm_jax.data.synthetic import write_tree
from tvilfm_jax.eval import metrics, rerank, scoring
from tvilfm_jax.eval import report as report_lib
from tvilfm_jax.eval.runner import Evaluator
from tvilfm_jax.eval.settings import EvalSettings, settings_from_config
from tvilfm_jax.eval.testset import from_layout
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig, add_backup, init_variables

# The two sides agree on every neighbour set (same float32 distances, same tie rule); what is
# left is float32 summation order in V, its expansion and the Jaccard sums.
TOL = 2e-5


def reference_rerank(sim_qg, sim_qq, sim_gg, k1=20, k2=6, lam=0.3):
    """-d* [Q, G], written from the paper's definitions with plain loops and Python sets."""
    sim = np.block([[sim_qq, sim_qg], [sim_qg.T, sim_gg]]).astype(np.float32)
    n, q = len(sim), len(sim_qg)
    d = np.maximum(np.float32(2) - np.float32(2) * sim, np.float32(0))
    d = d / d.max(axis=1, keepdims=True)

    def nearest(p, k):  # N(p, k): p first, then by distance, ties by index
        others = [j for j in np.argsort(d[p], kind="stable") if j != p]
        return [p, *others][:k]

    def reciprocal(p, k):  # R(p, k)
        return {g for g in nearest(p, k + 1) if p in nearest(g, k + 1)}

    v = np.zeros((n, n))
    for p in range(n):
        r = reciprocal(p, k1)
        expanded = set(r)
        for c in r:
            half = reciprocal(c, round(k1 / 2))
            if 3 * len(r & half) >= 2 * len(half):
                expanded |= half
        members = sorted(expanded)
        w = np.exp(-d[p, members].astype(np.float64))
        v[p, members] = w / w.sum()
    v_qe = np.stack([np.mean([v[g] for g in nearest(p, k2)], axis=0) for p in range(n)])
    out = np.zeros((q, n - q))
    for i in range(q):
        for j in range(n - q):
            a, b = v_qe[i], v_qe[q + j]
            jaccard = 1 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
            out[i, j] = -((1 - lam) * jaccard + lam * d[i, q + j])
    return out


def _unit(rng, n, dim):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sims(a, b):
    return (a @ a.T, b @ b.T, a @ b.T)


@pytest.mark.parametrize("q, g, dim, k1, k2, lam", [
    (7, 12, 4, 20, 6, 0.3),   # k1 + 1 > N: every set clamped to N
    (15, 9, 3, 5, 3, 0.3),    # Q > G, low dimension: many overlapping neighbourhoods
    (24, 30, 6, 7, 2, 0.5),   # odd k1 (round(3.5) = 4)
    (40, 25, 8, 20, 6, 0.3),  # the paper's defaults
    (10, 16, 5, 4, 1, 0.0),   # k2 = 1 (no expansion), Jaccard only
])
def test_matches_the_reference(q, g, dim, k1, k2, lam):
    rng = np.random.default_rng(q * 100 + g)
    a, b = _unit(rng, q, dim), _unit(rng, g, dim)
    qq, gg, qg = _sims(a, b)
    got = np.asarray(rerank.rerank(qg, qq, gg, k1=k1, k2=k2, lambda_=lam))
    assert got.shape == (q, g) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_rerank(qg, qq, gg, k1, k2, lam), atol=TOL, rtol=0)


def test_ties_and_duplicates():
    """Similarities on a coarse grid (exact in float32): many tied distances, and two duplicate
    items at distance 0; the tie rule (lower index first, an item first in its own list) decides."""
    rng = np.random.default_rng(3)
    q, g = 11, 17
    x = np.round(_unit(rng, q + g, 3) * 2) / 2
    x[5] = x[q + 2]  # a query identical to a gallery item
    sim = np.clip(np.round(x @ x.T * 4) / 4, -1, 1).astype(np.float32)
    qq, gg, qg = sim[:q, :q], sim[q:, q:], sim[:q, q:]
    for k1, k2 in ((6, 3), (20, 6)):
        got = np.asarray(rerank.rerank(qg, qq, gg, k1=k1, k2=k2, lambda_=0.3))
        np.testing.assert_allclose(got, reference_rerank(qg, qq, gg, k1, k2, 0.3), atol=TOL, rtol=0)


def test_lambda_one_keeps_the_original_ranking():
    """lambda = 1 leaves only the row-normalised original distance: the ranking of each row is
    the cosine ranking."""
    rng = np.random.default_rng(5)
    a, b = _unit(rng, 9, 6), _unit(rng, 14, 6)
    qq, gg, qg = _sims(a, b)
    got = np.asarray(rerank.rerank(qg, qq, gg, lambda_=1.0))
    np.testing.assert_array_equal(np.argsort(-got, axis=1, kind="stable"), np.argsort(-qg, axis=1, kind="stable"))


def test_settings_default_off_and_validated():
    assert not EvalSettings().rerank
    config = synthetic.get_config("stage=tvilfm")
    settings = settings_from_config(config)
    assert (settings.rerank, settings.rerank_k1, settings.rerank_k2, settings.rerank_lambda) == (False, 20, 6, 0.3)
    with config.unlocked():
        config.eval.rerank = True
        config.eval.rerank_k1 = 4
    assert settings_from_config(config).rerank and settings_from_config(config).rerank_k1 == 4
    for bad, key in (({"rerank_k1": 0}, "eval.rerank_k1"), ({"rerank_k2": 1.5}, "eval.rerank_k2"),
                     ({"rerank_lambda": 1.2}, "eval.rerank_lambda"), ({"rerank": 1}, "eval.rerank")):
        with pytest.raises(ValueError, match=key):
            EvalSettings(**bad)


HW = (32, 16)
CONFIG = ModelConfig(num_classes=2, resnet_blocks=(1, 1, 1, 1), resnet_width=4,
                     text=TextConfig(width=32, layers=1, heads=2, embed_dim=128), backup=True)


def test_evaluation_with_rerank_through_the_scoring_path(tmp_path):
    """Every modality of both LLCM directions, re-ranked by the evaluator, equals the NumPy
    reference applied to the evaluator's embeddings (MER: their unit sum); with the option off,
    the plain cosine scores (MER: the sum of three)."""
    root = tmp_path / "llcm"
    write_tree(root, "llcm", seed=2, num_train_ids=2, num_test_ids=4, images_per_cam=1, image_size=(48, 24))
    test = from_layout(root, "llcm", synthetic=True)
    variables = jax.jit(lambda key: add_backup(init_variables(CONFIG, key, HW)))(jax.random.key(0))
    plain_settings = EvalSettings(flip=(False,), trials=(1,), image_size=HW, batch_size=16, recipe="clean")
    k1, k2, lam = 6, 3, 0.3
    rerank_settings = plain_settings.replace(rerank=True, rerank_k1=k1, rerank_k2=k2, rerank_lambda=lam)
    evaluator = Evaluator(test, TVILFM(CONFIG), plain_settings, progress=False)
    feats = scoring.extract(evaluator.extractor, variables, test, plain_settings, evaluator.texts)
    plain, _ = scoring.score(evaluator.extractor, variables, test, plain_settings, evaluator.texts, feats)
    reranked, _ = scoring.score(evaluator.extractor, variables, test, rerank_settings, evaluator.texts, feats)

    key, _ = evaluator.texts.lookup("paper", "all", 1)
    rgb_rows, ir_rows = evaluator.texts.rows[key]
    q = evaluator.extractor.query_embeddings(variables, feats.query.with_tta(False), feats.captions[rgb_rows],
                                             feats.captions[ir_rows])
    g = evaluator.extractor.gallery_embeddings(variables, feats.gallery.with_tta(False))
    idx = test.gallery_indices("all", 1)
    q, g = {k: np.asarray(v) for k, v in q.items()}, {k: np.asarray(v)[idx] for k, v in g.items()}
    ir = (test.query.pids, test.query.cams)
    rgb = (test.gallery.pids[idx], test.gallery.cams[idx])
    mer = q["fusion"] + q["ir_current"] + q["text"]
    i2v = {"ir": (q["ir"], g["ir"]), "text": (q["text"], g["current"]), "fusion": (q["fusion"], g["current"]),
           "mer": (mer / np.linalg.norm(mer, axis=1, keepdims=True), g["current"])}
    v2i = {"ir": (g["ir"], q["ir"]), "text": (g["current"], q["text"]), "fusion": (g["current"], q["fusion"])}
    for key, pairs, (qs, gs) in (("llcm-i2v/paper/noflip", i2v, (ir, rgb)), ("llcm-v2i/paper/noflip", v2i, (rgb, ir))):
        assert list(reranked[key]) == list(pairs)
        for m, (a, b) in pairs.items():
            args = (qs[0], gs[0], qs[1], gs[1], "llcm")
            expect = metrics.evaluate(reference_rerank(a @ b.T, a @ a.T, b @ b.T, k1, k2, lam), *args)
            got = reranked[key][m].per_trial[0]
            np.testing.assert_allclose(got["cmc"], expect["cmc"], atol=1e-12, err_msg=f"{key} {m}")
            assert got["mAP"] == pytest.approx(expect["mAP"], abs=1e-6), f"{key} {m}"
            sim = (q["fusion"] @ b.T + q["ir_current"] @ b.T + q["text"] @ b.T) if m == "mer" else a @ b.T
            assert plain[key][m].per_trial[0]["mAP"] == pytest.approx(metrics.evaluate(sim, *args)["mAP"], abs=1e-6)
    assert any(reranked[k][m].mean["mAP"] != plain[k][m].mean["mAP"] for k in plain for m in plain[k])
    # The report says when (and how) its numbers are re-ranked.
    for settings, results, info in ((plain_settings, plain, None),
                                    (rerank_settings, reranked, {"k1": k1, "k2": k2, "lambda": lam})):
        report = report_lib.build_report(test, settings, results)
        assert (report["rerank"] and {k: report["rerank"][k] for k in info}) == info
        assert ("re-ranked: k1=6, k2=3, lambda=0.3" in report_lib.markdown(report)) == (info is not None)
