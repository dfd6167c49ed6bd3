"""The pure train steps of both stages: `train_step(state, batch) -> (state, metrics)`.

Stage "base" (docs/original.md §3.3): X = [rgb1; rgb2; ir] pre-BN GeM features [3B, D], labels
[t_rgb; t_rgb; t_ir]. Stage "tvilfm" (docs/original.md §3.4, MJL "uni" + SFF): X = [rgb1; rgb2; ir; f; t]
[5B, D] with f = f_IR + T(text_rgb) - T(text_ir), labels [t_rgb; t_rgb; t_ir; t_ir; t_ir]; the
visual features are constants (stop_gradient inside `TVILFM.stage2`). Both: loss = CE(neck
logits) + WRT(X), in fp32 whatever the compute dtype (docs/original.md §4.3).

Which parameters move is decided by the optimizer's labels (frozen groups get zero updates, so
no decay either); the step itself differentiates the loss w.r.t. all params. Metrics are scalars
averaged over the global batch: loss, id, wrt, acc, lr (the lr of the stage's main group), and
`state_finite` (bool: every float of the new state is finite; the loop checks it before it saves,
since an exploding step can leave a finite loss but inf/NaN parameters or moments).

The batch is a dict of global arrays (B = P*K rows per modality, see data/pipeline.py); under a
mesh the rows are sharded and every reduction (BN statistics, WRT's pairwise distances, the
loss means) is over the global batch, so results do not depend on the device count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from tvilfm_jax import losses
from tvilfm_jax.models.tvilfm import TVILFM
from tvilfm_jax.training.state import TrainState

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
# The group whose lr the metrics report: what each stage mainly trains.
MAIN_GROUP = {"base": "visual", "tvilfm": "text_block"}


def _forward(model: TVILFM, variables: dict, batch: Batch, stage: str, recipe: str, rng: jax.Array):
    """-> (pre-BN features [R, D], logits [R, C], labels [R], new batch_stats); R = 3B or 5B."""
    rngs = {"dropout": rng}
    if stage == "base":
        (feats, logits), updates = model.apply(
            variables, batch["img_rgb_ori"], batch["img_rgb_aug"], batch["img_ir"],
            method="stage1", mutable=["batch_stats"], rngs=rngs)
        label_blocks = ("target_rgb", "target_rgb", "target_ir")
    else:
        # "clean" freezes the visual BN statistics too; "paper" lets them drift (docs/original.md §3.5).
        (feats, logits), updates = model.apply(
            variables, batch["img_rgb_ori"], batch["img_rgb_aug"], batch["img_ir"], batch["text_rgb"],
            batch["text_ir"], freeze_visual_stats=recipe == "clean",
            method="stage2", mutable=["batch_stats"], rngs=rngs)
        label_blocks = ("target_rgb", "target_rgb", "target_ir", "target_ir", "target_ir")
    labels = jnp.concatenate([batch[k] for k in label_blocks], axis=0)
    return feats, logits, labels, updates["batch_stats"]


def all_finite(tree) -> jax.Array:
    """bool []: every floating-point leaf of `tree` is finite."""
    checks = [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack(checks).all() if checks else jnp.asarray(True)


StepFn = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]


def make_train_step(model: TVILFM, tx: optax.GradientTransformation, stage: str, recipe: str,
                    lr_fn: Callable[[jax.Array], jax.Array]) -> StepFn:
    """The pure step for `stage` ("base" | "tvilfm") and `recipe` ("paper" | "clean").

    lr_fn: step -> lr of the stage's main group (reported only; the optimizer has its own).
    """
    if stage not in MAIN_GROUP:
        raise ValueError(f"stage must be one of {tuple(MAIN_GROUP)}, got {stage!r}")

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        rng, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))

        def loss_fn(params):
            feats, logits, labels, batch_stats = _forward(
                model, {"params": params, "batch_stats": state.batch_stats}, batch, stage, recipe, step_rng)
            id_loss = losses.cross_entropy(logits, labels)
            wrt_loss = losses.weighted_regularized_triplet(feats, labels)
            aux = {"id": id_loss, "wrt": wrt_loss, "acc": losses.accuracy(logits, labels)}
            return id_loss + wrt_loss, (batch_stats, aux)

        (loss, (batch_stats, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
            rng=jax.random.key_data(rng),
        )
        metrics = {"loss": loss, **aux, "lr": jnp.asarray(lr_fn(state.step), jnp.float32),
                   "state_finite": all_finite((new_state.params, new_state.batch_stats, new_state.opt_state))}
        return new_state, metrics

    return train_step
