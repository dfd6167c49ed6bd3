"""Optimizer of TVI-LFM: Adam with coupled L2 decay, per-parameter (lr, wd) groups, frozen parts.

The original gives every parameter its own group and decides (lr, wd) from the parameter's
*name* (docs/original.md §4.5). Here each parameter gets a label naming its group; `multi_transform` maps
each label to `add_decayed_weights(wd) -> scale_by_adam -> -lr * factor(epoch)`, and frozen labels
to `set_to_zero`, so frozen parameters receive neither decay nor moment updates (a zero
gradient would still let L2 decay move them).

Two recipes:
  "paper": the original's grouping, quirks included (docs/original.md §10.2 items 10-11): the text tower's
           token/positional embeddings, ln_final and projection train at lr_visual (ln_final.bias
           at lr_visual * visual_bias_lr_factor), and text block weights use visual_weight_decay.
  "clean": the whole text tower trains at lr_txt (biases at lr_txt * text_bias_lr_factor).
Labels (and what the original calls them):
  visual, visual_bias     `base_model.visual.*` incl. GeM p (lr_visual; bias: * visual_bias_lr_factor)
  neck                    `classifier.*`, BN beta included (lr_visual * classifier_lr_factor)
  text_block, text_block_bias   `base_model.transformer.*` (lr_txt; bias: * text_bias_lr_factor)
  text_other, text_other_bias   embeddings, ln_final, text_projection (paper: lr_visual; bias:
                                * visual_bias_lr_factor)
  frozen                  what the stage does not train
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import traverse_util

from tvilfm_jax.stages import RECIPES, STAGES

LABELS = ("visual", "visual_bias", "neck", "text_block", "text_block_bias", "text_other",
          "text_other_bias", "frozen")

# Which top-level modules each stage trains (docs/original.md §3.5). The backups never train.
_TRAINED = {"base": ("visual", "gem", "neck"), "tvilfm": ("text", "neck")}


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    """`config.optim`: the original's defaults (docs/original.md §2), read by this module as
    attributes (a ConfigDict section works the same)."""

    lr_visual: float = 3.5e-4
    lr_txt: float = 1e-5
    text_bias_lr_factor: float = 2.0
    visual_bias_lr_factor: float = 1.0
    classifier_lr_factor: float = 2.0
    visual_weight_decay: float = 5e-4
    visual_weight_decay_bias: float = 5e-4
    text_weight_decay_bias: float = 0.0
    # Linear warmup over warmup_epochs from warmup_factor, then lr * gamma ** (milestones passed).
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    milestones: tuple[int, ...] = (40, 60, 100)
    gamma: float = 0.1
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8


def _label(path: tuple[str, ...], stage: str) -> str:
    top, leaf = path[0], path[-1]
    if top not in _TRAINED[stage]:
        return "frozen"
    is_bias = leaf == "bias"
    if top == "neck":
        # The original matches "classifier" before "bias", so the neck's beta is not a bias here.
        return "neck"
    if top in ("visual", "gem"):
        return "visual_bias" if is_bias else "visual"
    if top == "text":
        block = len(path) > 1 and path[1].startswith("resblocks")
        return ("text_block" if block else "text_other") + ("_bias" if is_bias else "")
    raise ValueError(f"optimizer: no group rule for parameter {'/'.join(path)}")


def param_labels(params: Mapping[str, Any], stage: str) -> dict:
    """The group label of every parameter, as a pytree shaped like `params`."""
    if stage not in STAGES:
        raise ValueError(f"optimizer: stage must be one of {STAGES}, got {stage!r}")
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: _label(k, stage) for k in flat})


def group_hparams(optim: Any, recipe: str) -> dict[str, tuple[float, float]]:
    """Base (lr, weight decay) of each trainable label, from the `optim` config section."""
    if recipe not in RECIPES:
        raise ValueError(f"optimizer: recipe must be one of {RECIPES}, got {recipe!r}")
    lr_v, lr_t = optim.lr_visual, optim.lr_txt
    wd, wd_vb, wd_tb = optim.visual_weight_decay, optim.visual_weight_decay_bias, optim.text_weight_decay_bias
    text_other_lr = lr_v if recipe == "paper" else lr_t
    # paper: the original's catch-all "bias" rule, lr_visual * bias factor (solver/build.py).
    text_other_bias = ((lr_v * optim.visual_bias_lr_factor, wd_vb) if recipe == "paper"
                       else (lr_t * optim.text_bias_lr_factor, wd_tb))
    return {
        "visual": (lr_v, wd),
        "visual_bias": (lr_v * optim.visual_bias_lr_factor, wd_vb),
        "neck": (lr_v * optim.classifier_lr_factor, wd),
        "text_block": (lr_t, wd),
        "text_block_bias": (lr_t * optim.text_bias_lr_factor, wd_tb),
        "text_other": (text_other_lr, wd),
        "text_other_bias": text_other_bias,
    }


def epoch_factor(epoch: np.ndarray | jax.Array, warmup_epochs: int, warmup_factor: float,
                 milestones: Sequence[int], gamma: float):
    """Per-epoch lr multiplier of docs/original.md §4.6 (linear warmup, then steps at the milestones)."""
    xp = np if isinstance(epoch, (int, np.integer, np.ndarray)) else jax.numpy
    epoch = xp.asarray(epoch)
    alpha = epoch / max(warmup_epochs, 1)
    warm = warmup_factor * (1 - alpha) + alpha
    passed = sum((epoch >= m).astype(xp.int32) for m in milestones) if milestones else 0
    return xp.where(epoch < warmup_epochs, warm, gamma ** passed)


def lr_schedule(base_lr: float, optim: Any, steps_per_epoch: int) -> optax.Schedule:
    """Step -> lr, constant within an epoch as the original (stepped at each epoch start)."""
    if steps_per_epoch < 1:
        raise ValueError(f"optimizer: steps_per_epoch must be >= 1, got {steps_per_epoch}")

    def schedule(step):
        epoch = step // steps_per_epoch
        return base_lr * epoch_factor(epoch, optim.warmup_epochs, optim.warmup_factor,
                                      tuple(optim.milestones), optim.gamma)

    return schedule


def build_optimizer(params: Mapping[str, Any], optim: Any, stage: str, recipe: str,
                    steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam (coupled L2) with the docs/original.md §4.5 groups for `stage`; frozen labels get zero updates."""
    hparams = group_hparams(optim, recipe)
    labels = param_labels(params, stage)
    used = set(traverse_util.flatten_dict(labels).values())
    transforms = {"frozen": optax.set_to_zero()}
    for label in sorted(used - {"frozen"}):  # sorted: the same program (and cache key) in every process
        lr, wd = hparams[label]
        transforms[label] = optax.chain(
            optax.add_decayed_weights(wd),
            optax.scale_by_adam(b1=optim.adam_b1, b2=optim.adam_b2, eps=optim.adam_eps),
            optax.scale_by_learning_rate(lr_schedule(lr, optim, steps_per_epoch)),
        )
    return optax.multi_transform(transforms, labels)
