"""Matmul precision in the lowered programs: the losses' and retrieval scores' dots run at
Precision.HIGHEST (so a GPU cannot run them as TF32), the bf16 convolutions keep the default."""

import functools

import jax
import jax.numpy as jnp

from tvilfm_jax import losses, optim
from tvilfm_jax.eval import scoring
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig, init_variables
from tvilfm_jax.training.state import create_state
from tvilfm_jax.training.step import make_train_step

HW = (32, 16)
CONFIG = ModelConfig(num_classes=4, resnet_blocks=(1, 1, 1, 1), resnet_width=4, dtype="bfloat16",
                     text=TextConfig(vocab_size=64, context_length=8, width=16, layers=1, heads=2, embed_dim=128))


def ops(text: str, name: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if f"stablehlo.{name}" in line]


def all_highest(lines: list[str]) -> bool:
    return bool(lines) and all("precision = [HIGHEST, HIGHEST]" in line for line in lines)


def test_wrt_distances_and_their_gradient_run_at_highest_precision():
    x = jax.ShapeDtypeStruct((12, 64), jnp.float32)
    y = jax.ShapeDtypeStruct((12,), jnp.int32)
    text = jax.jit(jax.value_and_grad(losses.weighted_regularized_triplet)).lower(x, y).as_text()
    assert len(ops(text, "dot_general")) == 3  # x x^T and its two transposes
    assert all_highest(ops(text, "dot_general")), ops(text, "dot_general")


def test_retrieval_scores_run_at_highest_precision():
    q, g = jax.ShapeDtypeStruct((5, 128), jnp.float32), jax.ShapeDtypeStruct((9, 128), jnp.float32)
    assert all_highest(ops(scoring._matmul_t.lower(q, g).as_text(), "dot_general"))


def test_train_step_dots_are_highest_and_bf16_convolutions_untouched():
    """Stage 1 of a bf16 model: its only dots are the identity logits and the WRT distances
    (forward and backward); its convolutions stay bf16 at the default precision."""
    variables = jax.eval_shape(functools.partial(init_variables, CONFIG, image_hw=HW), jax.random.key(0))
    cfg = optim.OptimSettings()  # the docs/original.md §2 defaults
    tx = optim.build_optimizer(variables["params"], cfg, "base", "paper", steps_per_epoch=10)
    state = jax.eval_shape(functools.partial(create_state, tx=tx, seed=0), variables)
    image = jax.ShapeDtypeStruct((4, *HW, 3), jnp.float32)
    label = jax.ShapeDtypeStruct((4,), jnp.int32)
    batch = {"img_rgb_ori": image, "img_rgb_aug": image, "img_ir": image, "target_rgb": label, "target_ir": label}
    step = make_train_step(TVILFM(CONFIG), tx, "base", "paper", optim.lr_schedule(1e-3, cfg, 10))
    text = jax.jit(step).lower(state, batch).as_text()
    dots, convs = ops(text, "dot_general"), ops(text, "convolution")
    assert len(dots) == 6 and all_highest(dots), dots  # logits: fwd + 2 bwd; distances: fwd + 2 bwd
    assert convs and all("HIGHEST" not in c and "bf16" in c for c in convs), convs[:2]
