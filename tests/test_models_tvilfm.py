"""The assembled TVILFM model: config, init, stage-1/2 forwards, eval heads (docs/original.md §3, §6.2-6.3).

A tiny configuration (ResNet blocks (1,1,1,1), width 4 -> D = 128; a 1-layer text tower) keeps
this fast; parity of the parts against PyTorch is in test_models_visual.py / test_conversion.py.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig, add_backup, init_variables

B, C, HW = 2, 5, (32, 16)


def tiny_config(**kw) -> ModelConfig:
    text = TextConfig(vocab_size=64, context_length=77, width=16, layers=1, heads=2, embed_dim=128)
    return ModelConfig(num_classes=C, resnet_blocks=(1, 1, 1, 1), resnet_width=4, text=text, **kw)


@pytest.fixture(scope="module")
def tiny():
    config = tiny_config()
    # jit: one XLA compilation is much cheaper on CPU than compiling every eager op.
    return config, jax.jit(init_variables, static_argnums=(0, 2))(config, jax.random.key(0), HW)


def jit_apply(model):
    """model.apply under jit, with the non-array arguments these tests pass made static."""
    return jax.jit(model.apply, static_argnames=("method", "mutable", "train", "freeze_visual_stats"))


def visual_map(module, rgb=None, ir=None):
    """The ResNet feature map (before any GeM)."""
    return module.visual(rgb, ir)


def batch(seed=0):
    rs = np.random.RandomState(seed)
    img = lambda: rs.randn(B, *HW, 3).astype(np.float32)
    ids = lambda: rs.randint(1, 63, (B, 77)).astype(np.int32)
    return img(), img(), img(), ids(), ids()


def leaves(tree):
    return dict(jax.tree_util.tree_leaves_with_path(tree))


def np_bn(x, params, stats=None):
    """BatchNorm1d in numpy: batch statistics when `stats` is None, else running ones."""
    mean, var = (x.mean(0), x.var(0)) if stats is None else (stats["mean"], stats["var"])
    return (x - mean) / np.sqrt(var + 1e-5) * params["scale"] + params["bias"]


def np_gem(fmap, p):
    return (np.maximum(fmap, 1e-6) ** p).mean((1, 2)) ** (1 / p)


def l2(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_config_validation_and_json_roundtrip():
    config = tiny_config(fusion="add", backup=True, dtype=jnp.bfloat16)
    assert config.embed_dim == 128 and config.dtype == "bfloat16"
    assert ModelConfig.from_json(config.to_json()) == config
    default = ModelConfig(num_classes=395)
    assert default.resnet_blocks == (3, 4, 6, 3) and default.embed_dim == 2048 == default.text.embed_dim
    with pytest.raises(ValueError, match="text.embed_dim"):
        ModelConfig(num_classes=3, resnet_width=8)
    with pytest.raises(ValueError, match="fusion"):
        tiny_config(fusion="concat")
    with pytest.raises(ValueError, match=r"unknown ModelConfig key\(s\) \['widht'\]"):
        ModelConfig.from_dict({"num_classes": 3, "widht": 8}, source="cfg.json")
    with pytest.raises(ValueError, match="cfg.json: missing required key 'num_classes'"):
        ModelConfig.from_dict({}, source="cfg.json")


def test_init_tree_layout(tiny):
    config, variables = tiny
    assert set(variables["params"]) == {"visual", "gem", "neck", "text"}
    assert set(variables["params"]["visual"]) == {"rgb_stem", "ir_stem", "body"}
    assert set(variables["batch_stats"]) == {"visual", "neck"}
    assert variables["params"]["neck"]["classifier"]["kernel"].shape == (128, C)
    assert variables["params"]["gem"]["p"].shape == (1,)
    heads = jax.jit(init_variables, static_argnums=0, static_argnames="include_visual")(
        dataclasses.replace(config, backup=True), jax.random.key(1), include_visual=False)
    assert set(heads["params"]) == {"gem", "neck", "text", "backup_gem", "backup_neck"}
    shapes = lambda t: {k: v.shape for k, v in leaves(t).items()}
    assert shapes(heads["params"]["text"]) == shapes(variables["params"]["text"])


def test_stage1_rows_logits_and_statistics(tiny):
    config, variables = tiny
    rgb1, rgb2, ir, _, _ = batch(0)
    model = TVILFM(config)
    apply = jit_apply(model)
    (feats, logits), updated = apply(variables, rgb1, rgb2, ir, method="stage1", mutable=("batch_stats",))
    assert feats.shape == (3 * B, 128) and logits.shape == (3 * B, C)
    # Rows are [rgb1; rgb2; ir] through the stems of their modality and one shared body pass.
    expected = apply(variables, np.concatenate([rgb1, rgb2]), ir, train=True, method="image_features",
                     mutable=("batch_stats",))[0]
    np.testing.assert_allclose(feats, expected, rtol=1e-6)
    neck = variables["params"]["neck"]
    np.testing.assert_allclose(logits, np_bn(np.asarray(feats), neck["bn"]) @ neck["classifier"]["kernel"],
                               rtol=1e-4, atol=1e-6)
    before, after = leaves(variables["batch_stats"]["visual"]), leaves(updated["batch_stats"]["visual"])
    assert all(not np.allclose(after[k], before[k]) for k in before)
    np.testing.assert_allclose(updated["batch_stats"]["neck"]["bn"]["mean"], 0.1 * np.asarray(feats).mean(0), rtol=1e-5)


def test_stage2_rows_gradients_and_visual_statistics(tiny):
    config, variables = tiny
    rgb1, rgb2, ir, text_rgb, text_ir = batch(1)
    model = TVILFM(config)
    apply = jit_apply(model)

    def loss(params, freeze=False):
        (feats, logits), updated = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                               rgb1, rgb2, ir, text_rgb, text_ir, freeze_visual_stats=freeze,
                                               method="stage2", mutable=["batch_stats"])
        return jnp.sum(logits * jnp.arange(C)) + jnp.sum(feats**2) * 1e-3, (feats, logits, updated)

    grads, (feats, logits, updated) = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
    assert feats.shape == (5 * B, 128) and logits.shape == (5 * B, C)
    visual_rows, upd_visual = apply(variables, np.concatenate([rgb1, rgb2]), ir, train=True,
                                    method="image_features", mutable=("batch_stats",))
    t = apply(variables, np.concatenate([text_rgb, text_ir]), method="text_features")
    t_rgb, t_ir = np.asarray(t[:B]), np.asarray(t[B:])
    np.testing.assert_allclose(feats[:3 * B], visual_rows, rtol=1e-6)
    np.testing.assert_allclose(feats[3 * B:4 * B], visual_rows[2 * B:] + t_rgb - t_ir, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(feats[4 * B:], t_rgb, rtol=1e-5, atol=1e-6)
    neck = variables["params"]["neck"]
    np.testing.assert_allclose(logits, np_bn(np.asarray(feats), neck["bn"]) @ neck["classifier"]["kernel"],
                               rtol=1e-4, atol=1e-6)
    # Visual and GeM are constants; text tower and neck learn.
    for part in ("visual", "gem"):
        assert all(not np.any(g) for g in jax.tree_util.tree_leaves(grads[part])), part
    for part in ("text", "neck"):
        assert all(np.any(g) for g in jax.tree_util.tree_leaves(grads[part])), part
    # Paper recipe: the frozen encoder's BN statistics still drift, exactly as a train-mode pass.
    for path, value in leaves(upd_visual["batch_stats"]["visual"]).items():
        np.testing.assert_allclose(leaves(updated["batch_stats"]["visual"])[path], value, rtol=1e-6)
    # Clean recipe: visual in eval mode, its statistics untouched; the neck still updates.
    _, (feats_c, _, updated_c) = jax.jit(loss, static_argnums=1)(variables["params"], True)
    eval_rows = apply(variables, np.concatenate([rgb1, rgb2]), ir, method="image_features")
    np.testing.assert_allclose(feats_c[:3 * B], eval_rows, rtol=1e-6)
    for path, value in leaves(variables["batch_stats"]["visual"]).items():
        np.testing.assert_array_equal(leaves(updated_c["batch_stats"]["visual"])[path], value)
    assert not np.allclose(updated_c["batch_stats"]["neck"]["bn"]["mean"], variables["batch_stats"]["neck"]["bn"]["mean"])


def _perturbed_backup(variables):
    """Backups that differ from gem/neck, so the test sees which one each embedding used."""
    out = add_backup(variables)
    np.testing.assert_array_equal(out["params"]["backup_gem"]["p"], out["params"]["gem"]["p"])
    rs = np.random.RandomState(7)
    out["params"]["backup_gem"] = {"p": np.array([2.0], np.float32)}
    out["params"]["backup_neck"]["bn"] = {"scale": rs.uniform(0.5, 1.5, 128).astype(np.float32),
                                          "bias": rs.uniform(-0.5, 0.5, 128).astype(np.float32)}
    out["batch_stats"]["backup_neck"]["bn"] = {"mean": rs.uniform(-0.1, 0.1, 128).astype(np.float32),
                                               "var": rs.uniform(0.5, 2, 128).astype(np.float32)}
    out["batch_stats"]["neck"]["bn"] = {"mean": rs.uniform(-0.1, 0.1, 128).astype(np.float32),
                                        "var": rs.uniform(0.5, 2, 128).astype(np.float32)}
    return out


@pytest.mark.parametrize("backup", [True, False])
def test_eval_embeddings_follow_spec(tiny, backup):
    config, variables = tiny
    config = dataclasses.replace(config, backup=backup)
    variables = _perturbed_backup(variables)
    if not backup:
        variables = {k: {n: v for n, v in t.items() if not n.startswith("backup_")} for k, t in variables.items()}
    apply = jit_apply(TVILFM(config))
    rgb, _, ir, text_rgb, text_ir = batch(2)
    gallery = apply(variables, rgb, method="gallery_embeddings")
    query = apply(variables, ir, text_rgb, text_ir, method="query_embeddings")

    g_map = np.asarray(apply(variables, rgb, method=visual_map))
    q_map = np.asarray(apply(variables, None, ir, method=visual_map))
    t = np.asarray(apply(variables, np.concatenate([text_rgb, text_ir]), method="text_features"))
    t_rgb, t_ir = t[:B], t[B:]
    p, s = variables["params"], variables["batch_stats"]
    neck = lambda x: l2(np_bn(x, p["neck"]["bn"], s["neck"]["bn"]))
    f_ir = np_gem(q_map, p["gem"]["p"])
    q_f, q_i, q_t = neck(f_ir + t_rgb - t_ir), neck(f_ir), neck(t_rgb)
    np.testing.assert_allclose(gallery["current"], neck(np_gem(g_map, p["gem"]["p"])), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(query["fusion"], q_f, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(query["text"], q_t, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(query["mer"], q_f + q_i + q_t, rtol=1e-4, atol=1e-5)
    if backup:
        bneck = lambda x: l2(np_bn(x, p["backup_neck"]["bn"], s["backup_neck"]["bn"]))
        np.testing.assert_allclose(query["ir"], bneck(np_gem(q_map, 2.0)), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gallery["ir"], bneck(np_gem(g_map, 2.0)), rtol=1e-4, atol=1e-5)
        assert not np.allclose(query["ir"], q_i, atol=1e-3)
    else:
        np.testing.assert_allclose(query["ir"], q_i, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(gallery["ir"], gallery["current"])
    np.testing.assert_allclose(np.linalg.norm(query["fusion"], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(query["ir_current"], q_i, rtol=1e-4, atol=1e-5)
    if backup:  # the heads of a model with backups refuse to run without the backup features
        with pytest.raises(ValueError, match="backup GeM features"):
            apply(variables, f_ir, None, t_rgb, t_ir, method="query_heads")


def test_add_fusion_and_bf16(tiny):
    _, variables = tiny
    rgb1, rgb2, ir, text_rgb, _ = batch(3)
    model = TVILFM(tiny_config(fusion="add", dtype="bfloat16"))
    (feats, logits), _ = jit_apply(model)(variables, rgb1, rgb2, ir, text_rgb, method="stage2",
                                          mutable=("batch_stats",))
    assert feats.dtype == logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())
    t = np.asarray(feats[4 * B:])
    np.testing.assert_allclose(feats[3 * B:4 * B], np.asarray(feats[2 * B:3 * B]) + t, rtol=1e-5, atol=1e-5)
    fused = jit_apply(model)(variables, ir, text_rgb, method="fusion_features")
    assert fused.shape == (B, 128)
    with pytest.raises(ValueError, match="IR captions"):
        jit_apply(TVILFM(tiny_config()))(variables, rgb1, rgb2, ir, text_rgb, method="stage2", mutable=("batch_stats",))
