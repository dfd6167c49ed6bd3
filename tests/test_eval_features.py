"""Feature extraction and scoring (tvilfm_jax.eval.features / scoring) against the model itself."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tvilfm_jax.data.synthetic import write_tree
from tvilfm_jax.data.tokenizer import tokenize
from tvilfm_jax.data.transforms import normalize
from tvilfm_jax.eval import metrics, scoring, texts
from tvilfm_jax.eval.features import FeatureExtractor
from tvilfm_jax.eval.runner import Evaluator
from tvilfm_jax.eval.settings import PROTOCOLS, EvalSettings
from tvilfm_jax.data.images import resize
from tvilfm_jax.eval.testset import from_layout
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig, add_backup, init_variables

HW = (32, 16)
CONFIG = ModelConfig(num_classes=2, resnet_blocks=(1, 1, 1, 1), resnet_width=4,
                     text=TextConfig(width=32, layers=1, heads=2, embed_dim=128), backup=True)


def _perturb(variables, seed=1):
    """Random BN statistics and neck parameters, so that current and backup necks differ and
    BN is not the identity."""
    rng = np.random.default_rng(seed)
    out = jax.tree_util.tree_map(np.asarray, variables)
    for head in ("neck", "backup_neck"):
        stats = out["batch_stats"][head]["bn"]
        stats["mean"] = rng.normal(0, 0.1, stats["mean"].shape).astype(np.float32)
        stats["var"] = rng.uniform(0.5, 2.0, stats["var"].shape).astype(np.float32)
        params = out["params"][head]["bn"]
        params["scale"] = rng.uniform(0.5, 1.5, params["scale"].shape).astype(np.float32)
        params["bias"] = rng.normal(0, 0.1, params["bias"].shape).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def model_and_variables():
    # Jitted: eager init compiles op by op, several times slower on CPU.
    variables = jax.jit(lambda key: add_backup(init_variables(CONFIG, key, HW)))(jax.random.key(0))
    return TVILFM(CONFIG), _perturb(variables)


def _method(model, name):
    """A jitted `model.apply(variables, *args, method=name)`: the reference path."""
    return jax.jit(lambda variables, *args: model.apply(variables, *args, method=name))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (7, *HW, 3), dtype=np.uint8)


def _normalised(images):
    return jnp.asarray(np.stack([normalize(resize(im, HW)) for im in images]))


def _close(a, b, tol=2e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def test_batched_extraction_equals_unbatched(model_and_variables, images):
    model, variables = model_and_variables
    full = FeatureExtractor(model, batch_size=64, image_size=HW, progress=False)
    a = full.image_features(variables, images, "ir", flip=True)
    b = FeatureExtractor(model, batch_size=3, image_size=HW, progress=False).image_features(
        variables, images, "ir", flip=True)
    one = FeatureExtractor(model, batch_size=1, image_size=HW, progress=False)
    singles = [one.image_features(variables, images[i:i + 1], "ir") for i in (0, 6)]
    for key in ("current", "backup", "current_flip", "backup_flip"):
        assert getattr(a, key).shape == (7, CONFIG.embed_dim)
        _close(getattr(a, key), getattr(b, key))
    for i, single in zip((0, 6), singles):
        _close(single.current[0], a.current[i])
        _close(single.backup[0], a.backup[i])
    # The flip features are those of the mirrored images; TTA averages them before the neck.
    mirrored = full.image_features(variables, images[:, :, ::-1], "ir")
    _close(a.current_flip, mirrored.current)
    _close(a.with_tta(True).current, (a.current + mirrored.current) / 2)
    assert not np.allclose(a.current, mirrored.current, atol=1e-3)
    # A batch spread over a (here one-device) mesh, as the trainer may ask for.
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    sharded = FeatureExtractor(model, batch_size=4, image_size=HW, sharding=NamedSharding(mesh, P("data")),
                               progress=False).image_features(variables, images, "ir")
    _close(sharded.current, a.current)
    # Caption features too: batch size does not change them.
    captions = ["a man in a red shirt", "a woman with long hair", "a person", "blue jeans", "a bag"]
    _close(full.text_features(variables, captions),
           FeatureExtractor(model, batch_size=2, image_size=HW, progress=False).text_features(variables, captions))


def test_embeddings_and_scores_match_the_model(model_and_variables, images):
    model, variables = model_and_variables
    ex = FeatureExtractor(model, batch_size=64, image_size=HW, progress=False)
    rgb, ir = images[:4], images[4:]
    rgb_caps = ["a man in a red shirt and black pants", "a woman in a yellow dress", "a man with a green bag"]
    ir_caps = ["a man in a shirt and pants", "a woman in a dress", "a man with a bag"]

    g_ref = _method(model, "gallery_embeddings")(variables, _normalised(rgb))
    q_ref = _method(model, "query_embeddings")(variables, _normalised(ir), jnp.asarray(tokenize(rgb_caps)),
                                               jnp.asarray(tokenize(ir_caps)))
    g = ex.gallery_embeddings(variables, ex.image_features(variables, rgb, "rgb"))
    t = ex.text_features(variables, rgb_caps + ir_caps)
    q = ex.query_embeddings(variables, ex.image_features(variables, ir, "ir"), t[:3], t[3:])
    for key in ("current", "ir"):
        _close(g[key], g_ref[key])
    for key in ("ir", "text", "fusion"):
        _close(q[key], q_ref[key])
    assert not np.allclose(q["ir"], q["ir_current"], atol=1e-3)  # the backup neck differs

    sims = scoring._score_trial(PROTOCOLS["sysu-all"], ("ir", "text", "fusion", "mer"), "paper", g, q)
    assert sims["mer"].shape == (3, 4)
    # MER is the sum of the three cosine score matrices (fusion, IR through the current neck, text) ...
    three = q["fusion"] @ g["current"].T + q["ir_current"] @ g["current"].T + q["text"] @ g["current"].T
    _close(sims["mer"], three)
    # ... which equals the model's un-renormalised summed query against the current gallery.
    _close(sims["mer"], q_ref["mer"] @ g_ref["current"].T)
    _close(sims["ir"], q_ref["ir"] @ g_ref["ir"].T)
    # The swapped direction scores G Q^T; "paper" pairs current RGB with backup IR (docs/original.md §6.5).
    swapped = scoring._score_trial(PROTOCOLS["regdb-v2t"], ("ir", "fusion"), "paper", g, q)
    _close(swapped["fusion"], g["current"] @ q["fusion"].T)
    _close(swapped["ir"], g["current"] @ q["ir"].T)
    clean = scoring._score_trial(PROTOCOLS["regdb-v2t"], ("ir",), "clean", g, q)
    _close(clean["ir"], g["ir"] @ q["ir"].T)


def test_ir_only_sff_fusion_is_the_ir_feature(model_and_variables, images):
    """Documented meaning of ir_only: with SFF the two caption terms cancel exactly."""
    model, variables = model_and_variables
    ex = FeatureExtractor(model, batch_size=64, image_size=HW, progress=False)
    caps = ["a man in a shirt", "a woman with a bag", "a person walking"]
    t = ex.text_features(variables, caps)
    q = ex.query_embeddings(variables, ex.image_features(variables, images[:3], "ir"), t, t)
    _close(q["fusion"], q["ir_current"])
    add_model = TVILFM(dataclasses.replace(CONFIG, fusion="add"))
    q_add = FeatureExtractor(add_model, 64, HW, progress=False).query_embeddings(
        variables, ex.image_features(variables, images[:3], "ir"), t, t)
    assert not np.allclose(q_add["fusion"], q_add["ir_current"], atol=1e-3)


@pytest.fixture(scope="module")
def llcm(tmp_path_factory):
    root = tmp_path_factory.mktemp("llcm")
    write_tree(root, "llcm", seed=2, num_train_ids=2, num_test_ids=4, images_per_cam=2, image_size=(48, 24))
    return from_layout(root, "llcm", synthetic=True)


def test_evaluator_equals_a_direct_computation(model_and_variables, llcm):
    """Every piece together (texts, gallery indices, directions, metrics) against the model's own
    embedding methods and `metrics.evaluate`, on a synthetic LLCM test set."""
    model, variables = model_and_variables
    settings = EvalSettings(text_sources=("non_gallery", "paper"), flip=(False,), trials=(0, 4), image_size=HW,
                            batch_size=8, recipe="paper", ranking_worst=2)
    run = Evaluator(llcm, model, settings, progress=False).run(variables, ranking=True)
    assert list(run.results) == ["llcm-i2v/non_gallery/noflip", "llcm-v2i/non_gallery/noflip",
                                 "llcm-i2v/paper/noflip", "llcm-v2i/paper/noflip"]
    assert list(run.results["llcm-v2i/paper/noflip"]) == ["ir", "text", "fusion"]  # no MER when swapped

    q_img = _normalised([llcm.query.images[i] for i in range(len(llcm.query))])
    g_img = _normalised([llcm.gallery.images[i] for i in range(len(llcm.gallery))])
    g_all = _method(model, "gallery_embeddings")(variables, g_img)
    query_embeddings = _method(model, "query_embeddings")
    for source in ("non_gallery", "paper"):
        for j, trial in enumerate((0, 4)):
            assigned = texts.query_texts(llcm, source, mode="all", trial=trial, seed=0)
            q = query_embeddings(variables, q_img, jnp.asarray(tokenize(list(assigned.rgb))),
                                 jnp.asarray(tokenize(list(assigned.ir))))
            idx = llcm.gallery_indices("all", trial)
            g = {k: v[idx] for k, v in g_all.items()}
            args = (llcm.query.pids, llcm.gallery.pids[idx], llcm.query.cams, llcm.gallery.cams[idx])
            expect = {
                "ir": metrics.evaluate(q["ir"] @ g["ir"].T, *args, "sysu"),  # the paper recipe's LLCM IR quirk
                "fusion": metrics.evaluate(q["fusion"] @ g["current"].T, *args, "llcm"),
                "mer": metrics.evaluate(q["mer"] @ g["current"].T, *args, "llcm"),
            }
            got = run.results[f"llcm-i2v/{source}/noflip"]
            assert got["ir"].metric == "sysu" and got["fusion"].metric == "llcm"
            for m, r in expect.items():
                np.testing.assert_allclose(got[m].per_trial[j]["cmc"], r["cmc"], atol=1e-12, err_msg=f"{source} {m}")
                assert got[m].per_trial[j]["mAP"] == pytest.approx(r["mAP"], abs=1e-9)
            swapped = metrics.evaluate(g["current"] @ q["text"].T, llcm.gallery.pids[idx], llcm.query.pids,
                                       llcm.gallery.cams[idx], llcm.query.cams, "llcm")
            got = run.results[f"llcm-v2i/{source}/noflip"]["text"].per_trial[j]
            assert got["mAP"] == pytest.approx(swapped["mAP"], abs=1e-9)
    fusion = run.results["llcm-i2v/paper/noflip"]["fusion"]
    assert fusion.mean["mAP"] == pytest.approx(np.mean([r["mAP"] for r in fusion.per_trial]))
    flat = run.flat()
    assert flat["fusion/mAP"] == pytest.approx(100 * run.results["llcm-i2v/non_gallery/noflip"]["fusion"].mean["mAP"])
    # The ranking samples are the top of the MER row of the first condition's first trial: queries
    # spread over the set, then the worst by AP (the per-query AP behind the trial's mAP).
    spread, worst = run.rankings
    assert (spread.selection, worst.selection) == ("spread", "worst")
    for sample in (spread, worst):
        assert sample.modality == "mer" and sample.condition.key == "llcm-i2v/non_gallery/noflip"
        assert sample.trial == 0
        assert np.all(np.diff(sample.scores, axis=1) <= 0)
        expected = llcm.gallery.pids[sample.gallery_index] == llcm.query.pids[sample.query_index][:, None]
        np.testing.assert_array_equal(sample.matches, expected)
        # The grid shows what MER's metric (eval_llcm) ranks: no same-pid image of the query's camera.
        same_cam = llcm.gallery.cams[sample.gallery_index] == llcm.query.cams[sample.query_index][:, None]
        assert not np.any(expected & same_cam) and np.all(np.isfinite(sample.scores))
    assigned = texts.query_texts(llcm, "non_gallery", mode="all", trial=0, seed=0)
    q = query_embeddings(variables, q_img, jnp.asarray(tokenize(list(assigned.rgb))),
                         jnp.asarray(tokenize(list(assigned.ir))))
    idx = llcm.gallery_indices("all", 0)
    _, ap, _, valid = metrics.per_query_stats(q["mer"] @ g_all["current"][idx].T, llcm.query.pids,
                                              llcm.gallery.pids[idx], llcm.query.cams, llcm.gallery.cams[idx], "llcm")
    assert ap[valid].mean() == pytest.approx(run.results["llcm-i2v/non_gallery/noflip"]["mer"].per_trial[0]["mAP"])
    n = settings.ranking_worst
    lowest = np.flatnonzero(valid)[np.argsort(ap[valid], kind="stable")][:n]
    assert len(worst.query_index) == min(n, valid.sum()) < len(llcm.query)
    np.testing.assert_array_equal(worst.query_index, lowest)
    np.testing.assert_allclose(worst.ap, ap[lowest], atol=1e-6)
    assert np.all(np.diff(worst.ap) >= 0) and worst.ap.max() <= np.sort(ap[valid])[n - 1] + 1e-6
    np.testing.assert_array_equal(np.isnan(spread.ap), ~valid[spread.query_index])


def test_sysu_and_regdb_protocols(model_and_variables, tmp_path):
    model, variables = model_and_variables
    gallery_embeddings = _method(model, "gallery_embeddings")
    query_embeddings = _method(model, "query_embeddings")
    settings = EvalSettings(trials=(0, 3), image_size=HW, batch_size=8)
    sizes = {"num_train_ids": 2, "num_test_ids": 3, "image_size": (48, 24)}

    write_tree(tmp_path / "sysu", "sysu", seed=3, num_val_ids=1, images_per_cam=2, **sizes)
    sysu = from_layout(tmp_path / "sysu", "sysu", synthetic=True)
    run = Evaluator(sysu, model, settings, progress=False).run(variables)
    assert list(run.results) == ["sysu-all/paper/noflip", "sysu-indoor/paper/noflip"]
    indoor = sysu.gallery_indices("indoor", 3)
    assert set(sysu.gallery.cams[indoor]) <= {1, 2} and set(sysu.gallery.cams[sysu.gallery_indices("all", 3)]) - {1, 2}
    assigned = texts.paper_texts(sysu)
    q = query_embeddings(variables, _normalised([sysu.query.images[i] for i in range(len(sysu.query))]),
                         jnp.asarray(tokenize(list(assigned.rgb))), jnp.asarray(tokenize(list(assigned.ir))))
    g = gallery_embeddings(variables, _normalised([sysu.gallery.images[i] for i in indoor]))
    expect = metrics.evaluate(q["mer"] @ g["current"].T, sysu.query.pids, sysu.gallery.pids[indoor], sysu.query.cams,
                              sysu.gallery.cams[indoor], "sysu")
    got = run.results["sysu-indoor/paper/noflip"]["mer"]
    assert got.trials == (0, 3) and got.metric == "sysu"
    np.testing.assert_allclose(got.per_trial[1]["cmc"], expect["cmc"], atol=1e-12)
    assert got.per_trial[1]["mAP"] == pytest.approx(expect["mAP"], abs=1e-9)

    write_tree(tmp_path / "regdb", "regdb", seed=3, images_per_id=3, num_trials=2, **sizes)
    regdb = from_layout(tmp_path / "regdb", "regdb", trial=2, synthetic=True)
    run = Evaluator(regdb, model, settings.replace(recipe="paper"), progress=False).run(variables)
    assert list(run.results) == ["regdb-t2v/paper/noflip", "regdb-v2t/paper/noflip"]
    v2t = run.results["regdb-v2t/paper/noflip"]
    assert list(v2t) == ["ir", "text", "fusion"] and v2t["ir"].trials == (2,) and v2t["ir"].metric == "regdb"
    assigned = texts.paper_texts(regdb)
    q = query_embeddings(variables, _normalised([regdb.query.images[i] for i in range(len(regdb.query))]),
                         jnp.asarray(tokenize(list(assigned.rgb))), jnp.asarray(tokenize(list(assigned.ir))))
    g = gallery_embeddings(variables, _normalised([regdb.gallery.images[i] for i in range(len(regdb.gallery))]))
    expect = metrics.evaluate(g["current"] @ q["ir"].T, regdb.gallery.pids, regdb.query.pids, None, None, "regdb")
    assert v2t["ir"].per_trial[0]["mAP"] == pytest.approx(expect["mAP"], abs=1e-9)
    expect = metrics.evaluate(q["fusion"] @ g["current"].T, regdb.query.pids, regdb.gallery.pids, None, None, "regdb")
    assert run.results["regdb-t2v/paper/noflip"]["fusion"].per_trial[0]["mAP"] == pytest.approx(expect["mAP"], abs=1e-9)


def test_evaluate_fn_for_the_trainer(model_and_variables, llcm):
    """The trainer calls evaluate_fn(TrainState) and selects by one of its keys (config.train.best_metric)."""
    from tvilfm_jax.eval.runner import make_evaluate_fn
    from tvilfm_jax.training.state import TrainState

    model, variables = model_and_variables
    config = {"stage": "tvilfm", "recipe": "paper", "data": {"name": "llcm", "image_size": HW},
              "eval": {"trials": (1,), "batch_size": 8}}
    evaluate_fn = make_evaluate_fn(config, model, test=llcm)
    assert [p.name for p in evaluate_fn.settings.protocols_for("llcm")] == ["llcm-i2v"]  # training: primary only
    state = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"], batch_stats=variables["batch_stats"],
                       opt_state=(), rng=jnp.zeros((2,), jnp.uint32))
    results = evaluate_fn(state)
    assert all(isinstance(v, float) for v in results.values())
    assert results["rank1"] == results["mer/R1"] and results["mAP"] == results["mer/mAP"]
    assert {"ir/R1", "text/mINP", "fusion/R20"} <= results.keys()
    assert evaluate_fn(variables) == results  # same weights, same texts: the same numbers


def _row_relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).max())


def test_evaluation_embeds_in_eval_dtype_not_the_training_dtype(model_and_variables, images, llcm):
    """A model trained (and exported) with bf16 compute embeds in fp32 unless eval.dtype says
    bfloat16: the same features as the fp32 model, bit for bit."""
    model, variables = model_and_variables
    trained_bf16 = TVILFM(dataclasses.replace(CONFIG, dtype="bfloat16"))
    captions = ["a woman in a red coat", "a man with a black backpack and jeans"]
    feats = {}
    for name, m, dtype in (("fp32", model, {}), ("default", trained_bf16, {}),
                           ("bf16", trained_bf16, {"dtype": "bfloat16"})):
        settings = EvalSettings(image_size=HW, batch_size=8, **dtype)
        extractor = Evaluator(llcm, m, settings, progress=False).extractor
        assert extractor.model.config.dtype == ("bfloat16" if name == "bf16" else "float32")
        gallery = extractor.gallery_embeddings(variables, extractor.image_features(variables, images, "rgb"))
        feats[name] = (gallery["current"], extractor.embed(variables, extractor.text_features(variables, captions)))
    for got, want in zip(feats["default"], feats["fp32"]):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert all(_row_relative_error(got, want) > 1e-4 for got, want in zip(feats["bf16"], feats["fp32"]))
    with pytest.raises(ValueError, match="eval.dtype must be one of"):
        EvalSettings(dtype="float16")
