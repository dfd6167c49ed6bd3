"""Optimizer groups (docs/original.md §4.5), frozen parts and the per-epoch schedule (docs/original.md §4.6).

The group test maps every Flax parameter back to the original's state_dict name (by pushing a
state_dict of unique constants through the official converter) and applies the original's
name rules (benchmarks/torch_reference.param_group, the one PyTorch-side copy) to that name.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from benchmarks import torch_reference as tref
from tvilfm_jax import optim
from tvilfm_jax.conversion.official import convert_official
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import ModelConfig, init_variables

CONFIG = ModelConfig(num_classes=5, resnet_blocks=(1, 2, 1, 1), resnet_width=4, backup=True,
                     text=TextConfig(vocab_size=60, context_length=8, width=16, layers=2, heads=2, embed_dim=128))


def optim_config(**overrides):
    """The config's optim section (docs/original.md §2 defaults) with `overrides`."""
    return dataclasses.replace(optim.OptimSettings(), **overrides)


def original_names(c: ModelConfig) -> dict[tuple, str]:
    """Flax param path -> the original's parameter name: every key of the PyTorch reference's
    state_dict (the official layout, docs/original.md §1.9) filled with its own index, then converted."""
    keys = [(k, tuple(v.shape)) for k, v in tref.TorchTVILFM(c).state_dict().items()]
    tensors = {k: np.full(shape, i, np.float32) for i, (k, shape) in enumerate(keys)}
    params = convert_official(tensors, c)["params"]
    names = {}
    for path, value in traverse_util.flatten_dict(params).items():
        uniq = np.unique(np.asarray(value))
        assert uniq.size == 1, path
        names[path] = keys[int(uniq[0])][0]
    return names


@pytest.fixture(scope="module")
def names():
    return original_names(CONFIG)


@pytest.fixture(scope="module")
def params():
    return init_variables(CONFIG, jax.random.key(0))["params"]


@pytest.mark.parametrize("stage", optim.STAGES)
@pytest.mark.parametrize("overrides", [{}, dict(lr_visual=2e-3, lr_txt=3.5e-4, text_weight_decay_bias=5e-4),
                                       dict(visual_bias_lr_factor=3.0, classifier_lr_factor=5.0)])
def test_paper_groups_follow_the_original_name_rules(params, names, stage, overrides):
    cfg = optim_config(**overrides)
    hp = optim.group_hparams(cfg, "paper")
    labels = traverse_util.flatten_dict(optim.param_labels(params, stage))
    assert set(labels) == set(names)
    for path, label in labels.items():
        expected = tref.param_group(names[path], cfg, stage)
        got = None if label == "frozen" else hp[label]
        assert got == expected, (path, names[path], label)


def test_paper_ln_final_bias_takes_the_visual_bias_lr_factor(params):
    """solver/build.py: the catch-all "bias" rule is lr_visual * bias_lr_factor, as the visual biases."""
    cfg = optim_config(lr_visual=2e-3, visual_bias_lr_factor=3.0, visual_weight_decay_bias=1e-4)
    labels = traverse_util.flatten_dict(optim.param_labels(params, "tvilfm"))
    lr, wd = optim.group_hparams(cfg, "paper")[labels[("text", "ln_final", "bias")]]
    assert (lr, wd) == (pytest.approx(6e-3), 1e-4)
    assert optim.group_hparams(cfg, "paper")[labels[("text", "ln_final", "scale")]][0] == 2e-3


def test_clean_recipe_trains_the_whole_text_tower_at_lr_txt(params):
    cfg = optim_config(lr_visual=2e-3, lr_txt=1e-5)
    hp = optim.group_hparams(cfg, "clean")
    labels = traverse_util.flatten_dict(optim.param_labels(params, "tvilfm"))
    for path, label in labels.items():
        if path[0] == "text":
            lr, _ = hp[label]
            expected = 1e-5 * (2.0 if path[-1] == "bias" else 1.0)
            assert lr == pytest.approx(expected), path
        elif path[0] != "neck":
            assert label == "frozen", path


def test_epoch_factor_values():
    cfg = optim_config()
    got = optim.epoch_factor(np.arange(120), cfg.warmup_epochs, cfg.warmup_factor, cfg.milestones, cfg.gamma)
    np.testing.assert_allclose(got[:3], [0.01, 0.109, 0.208], rtol=1e-12)
    np.testing.assert_allclose(got[9], 0.901, rtol=1e-12)
    assert set(got[10:40]) == {1.0}
    np.testing.assert_allclose(got[[40, 59, 60, 99, 100, 119]], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-12)


def test_schedule_is_constant_within_an_epoch():
    cfg = optim_config()
    sched = optim.lr_schedule(3.5e-4, cfg, steps_per_epoch=696)
    for step, epoch in [(0, 0), (695, 0), (696, 1), (696 * 10 - 1, 9), (696 * 10, 10), (696 * 40, 40), (696 * 119 + 5, 119)]:
        expected = 3.5e-4 * optim.epoch_factor(np.asarray(epoch), 10, 0.01, (40, 60, 100), 0.1)
        np.testing.assert_allclose(float(sched(jnp.asarray(step))), expected, rtol=1e-6)


@pytest.mark.parametrize("stage", optim.STAGES)
def test_frozen_parameters_are_bit_identical_after_steps(params, stage):
    tx = optim.build_optimizer(params, optim_config(), stage, "paper", steps_per_epoch=2)
    labels = traverse_util.flatten_dict(optim.param_labels(params, stage))
    state = tx.init(params)
    p = params

    @jax.jit
    def step(p, state, scale):
        grads = jax.tree_util.tree_map(lambda x: jnp.full_like(x, scale), p)
        updates, state = tx.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    for i in range(3):
        p, state = step(p, state, 0.1 * (i + 1))
    before, after = traverse_util.flatten_dict(params), traverse_util.flatten_dict(p)
    for path, label in labels.items():
        same = np.array_equal(np.asarray(before[path]), np.asarray(after[path]))
        assert same == (label == "frozen"), (path, label)


def test_update_equals_adam_with_coupled_l2():
    """One label, two steps: (g + wd*theta) -> Adam moments -> -lr*factor, as torch.optim.Adam."""
    import torch
    cfg = optim_config(warmup_epochs=0, milestones=())
    theta0 = np.random.default_rng(0).standard_normal(6).astype(np.float32)
    grads = [np.random.default_rng(s).standard_normal(6).astype(np.float32) for s in (1, 2)]
    params = {"visual": {"kernel": jnp.asarray(theta0)}}
    tx = optim.build_optimizer(params, cfg, "base", "paper", steps_per_epoch=1)
    state, p = tx.init(params), params
    for g in grads:
        updates, state = tx.update({"visual": {"kernel": jnp.asarray(g)}}, state, p)
        p = optax.apply_updates(p, updates)
    t = torch.nn.Parameter(torch.from_numpy(theta0.copy()))
    opt = torch.optim.Adam([t], lr=cfg.lr_visual, betas=(0.9, 0.999), eps=1e-8, weight_decay=5e-4)
    for g in grads:
        t.grad = torch.from_numpy(g)
        opt.step()
    np.testing.assert_allclose(np.asarray(p["visual"]["kernel"]), t.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_unknown_stage_or_recipe_is_an_error(params):
    with pytest.raises(ValueError, match="stage"):
        optim.param_labels(params, "stage3")
    with pytest.raises(ValueError, match="recipe"):
        optim.group_hparams(optim_config(), "fast")
