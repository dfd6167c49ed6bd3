"""The training loop: build an experiment from a config, then train it resumably in a workdir.

    experiment = prepare(config)                    # input, model, optimizer, mesh
    state = train(experiment, workdir)              # resumes from workdir/checkpoints if any

One jitted, state-donating step per global batch over the `data` mesh. Metrics of step s are
fetched after step s+1 has been dispatched, so the host never stalls the device; they are
checked before anything is saved: a non-finite loss, or a step that leaves any inf/NaN in the
parameters, optimizer state or BN statistics, raises `NonFiniteLossError`, and no state after
the last finite one is ever written (latest or best checkpoint, or export). Checkpoints: every
`checkpoint_every_steps` steps, at every epoch end and at the end (see checkpointing.py). Evaluation: a caller-supplied
`evaluate_fn(state) -> dict` after the epochs docs/original.md §6.7 names; a result holding
`config.train.best_metric` that is >= the best so far replaces the best checkpoint (and says so,
naming the metric).

One run per workdir: each process holds an advisory lock on workdir/train.lock (train.lock.<i>
for process i > 0) while it trains; the OS drops it when the process ends, killed or not.
Everything that can be refused (a bad `init.checkpoint`, a config that differs from the stored
one of the run it would resume) is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import math
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh

from tvilfm_jax import optim
from tvilfm_jax.data.pipeline import TrainBatches, make_iterator
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig, init_variables
from tvilfm_jax.training import checkpointing, inputs
from tvilfm_jax.training import mesh as mesh_lib
from tvilfm_jax.training.config import ConfigError, model_config, validate
from tvilfm_jax.training.logging import Averages, MetricsLog, Progress, say
from tvilfm_jax.training.state import TrainState, create_state
from tvilfm_jax.training.step import MAIN_GROUP, make_train_step

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
# One JSON line per resume that was allowed to change the config (`allow_config_change`).
CONFIG_CHANGES_FILE = "config_changes.jsonl"
LOCK_FILE = "train.lock"
# Images through the visual encoder per row of the global batch: RGB view 1, RGB view 2, IR.
IMAGES_PER_ROW = 3

EvaluateFn = Callable[[TrainState], Mapping[str, float]]


class NonFiniteLossError(RuntimeError):
    """The loss or the training state became inf/NaN; the run stopped without saving the bad state."""


class WorkdirError(RuntimeError):
    """The workdir cannot take this run: not a directory, in use by another run, or holding a
    run of another config."""


@dataclasses.dataclass
class Experiment:
    """Everything `train` needs, built from a config by `prepare`."""

    config: ml_collections.ConfigDict
    model_config: ModelConfig
    model: TVILFM
    batches: TrainBatches
    mesh: Mesh
    tx: Any  # optax.GradientTransformation

    @property
    def steps_per_epoch(self) -> int:
        return self.batches.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.config.train.num_epochs * self.steps_per_epoch


def prepare(config: ml_collections.ConfigDict,
            sources: tuple[Sequence[dict], Sequence[dict]] | None = None) -> Experiment:
    """Input pipeline, model, optimizer and mesh of `config`.

    sources: (train_rgb, train_ir) record sequences in the TFDS schema, instead of opening
      `config.data.name` (tests, custom data); num_classes is then max label + 1.
    """
    validate(config)
    mesh = mesh_lib.make_mesh()
    declared = None
    if sources is None:
        rgb, ir, declared = inputs.load_sources(config.data)
    else:
        rgb, ir = sources
    batches = inputs.make_batches(config, rgb, ir)
    mesh_lib.check_global_batch(batches.global_batch, mesh)
    num_classes = inputs.num_classes_of(batches.labels_rgb, batches.labels_ir, declared)
    mcfg = model_config(config, num_classes)
    abstract = jax.eval_shape(functools.partial(init_variables, mcfg, image_hw=tuple(config.data.image_size)),
                              jax.random.key(0))
    tx = optim.build_optimizer(abstract["params"], config.optim, config.stage, config.recipe, batches.steps_per_epoch)
    return Experiment(config=config, model_config=mcfg, model=TVILFM(mcfg), batches=batches, mesh=mesh, tx=tx)


def _initial_variables(exp: Experiment) -> dict:
    """Replicated start variables: `init.checkpoint`, or a fresh init from the seed (stage 1)."""
    cfg = exp.config
    if cfg.init.checkpoint:
        path = os.path.abspath(os.path.expanduser(cfg.init.checkpoint))
        if os.path.isfile(os.path.join(path, RUN_FILE)):
            export = os.path.join(path, checkpointing.VARIABLES_DIR, "last")
            raise ConfigError(f"config.init.checkpoint {path} is a training workdir, not a model checkpoint: pass "
                              f"its export {export}" + ("" if os.path.isdir(export) else " (that run has not "
                                                        "finished yet)"))
        try:
            host = checkpointing.load_init_variables(path, exp.model_config)
        except (FileNotFoundError, ValueError) as err:  # missing, unreadable, or of another model
            text = str(err)
            raise ConfigError(text if text.startswith("init.checkpoint") else f"config.init.checkpoint {path}: {text}"
                              ) from None
    else:
        logging.warning("stage %s starts from a random initialisation (config.init.checkpoint is empty); the paper "
                        "starts from ImageNet ResNet-50 + CLIP RN50 text weights (python -m tvilfm_jax.convert)",
                        cfg.stage)
        # On one device, whatever the mesh: the same program (and values) for every device count
        # and process, so it compiles once and persistent compilation caches hit.
        init = jax.jit(functools.partial(init_variables, exp.model_config, image_hw=tuple(cfg.data.image_size)))
        host = jax.device_get(init(jax.random.key(cfg.seed)))
    return mesh_lib.replicate(host, exp.mesh)


def _abstract_state(exp: Experiment) -> TrainState:
    sharding = mesh_lib.replicated(exp.mesh)
    variables = jax.eval_shape(functools.partial(init_variables, exp.model_config,
                                                 image_hw=tuple(exp.config.data.image_size)), jax.random.key(0))
    shapes = jax.eval_shape(functools.partial(create_state, tx=exp.tx, seed=exp.config.seed), variables)
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


@contextlib.contextmanager
def workdir_lock(workdir: str, process: int = 0):
    """Holds the advisory lock of this process index on `workdir` (created) for the `with` block.

    Another holder, of this or another process (one whose file system shares the lock), makes it
    raise WorkdirError naming the holder at once. The OS releases the lock when its holder exits,
    however it ends, so a killed run leaves nothing stuck; the file itself stays.
    """
    path = os.path.join(workdir, LOCK_FILE if process == 0 else f"{LOCK_FILE}.{process}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "a process that is starting"
            raise WorkdirError(f"{workdir} is in use by another training run ({holder}; lock {path}): wait for it "
                               "to end or stop it, or pick another workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _latest_checkpoint(workdir: str) -> int | None:
    """The newest step in workdir/checkpoints, None when there is none (nothing is created)."""
    directory = os.path.join(workdir, checkpointing.LATEST_DIR)
    steps = ocp.utils.checkpoint_steps(directory) if os.path.isdir(directory) else []
    return max(steps, default=None)


def _dotted(tree: Any, key: str) -> Any:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _config_change(exp: Experiment, workdir: str, allow: bool) -> dict | None:
    """The record of how the config differs from the one stored with the run it resumes (None: same
    config or nothing to resume); raises WorkdirError unless `allow`."""
    path = os.path.join(workdir, CONFIG_FILE)
    step = _latest_checkpoint(workdir)
    if step is None or not os.path.isfile(path):
        return None
    with open(path) as f:
        before = json.load(f)
    now = json.loads(exp.config.to_json())
    changed = config_diff(before, now)
    if not changed:
        return None
    shown = ", ".join(f"{k}: {_dotted(before, k)!r} -> {_dotted(now, k)!r}" for k in changed)
    if not allow:
        raise WorkdirError(f"{workdir} holds a run of another config (it differs in {shown}); to resume it at "
                           f"step {step} with this config pass --allow_config_change (recorded in "
                           f"{CONFIG_CHANGES_FILE}), or pick another workdir")
    logging.warning("%s: resuming at step %d with a changed config: %s", workdir, step, shown)
    return {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "changed": {k: {"before": _dotted(before, k), "after": _dotted(now, k)} for k in changed}}


def _write_config(exp: Experiment, workdir: str, change: dict | None) -> None:
    """workdir/config.json (the experiment config) and run.json (what was derived from it); a
    config change (see `_config_change`) is appended to config_changes.jsonl first."""
    text = exp.config.to_json(indent=2, sort_keys=True)
    if change is not None:
        with open(os.path.join(workdir, CONFIG_CHANGES_FILE), "a") as f:
            f.write(json.dumps(change, sort_keys=True) + "\n")
    run = {
        "model": exp.model_config.to_dict(),
        "num_classes": exp.model_config.num_classes,
        "steps_per_epoch": exp.steps_per_epoch,
        "total_steps": exp.total_steps,
        "global_batch": exp.batches.global_batch,
        "devices": exp.mesh.devices.size,
        "processes": jax.process_count(),
        "backend": jax.default_backend(),
    }
    for name, content in ((CONFIG_FILE, text), (RUN_FILE, json.dumps(run, indent=2, sort_keys=True))):
        tmp = os.path.join(workdir, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(content + "\n")
        os.replace(tmp, os.path.join(workdir, name))


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Sorted dotted keys (e.g. "optim.lr_visual") where two JSON-decoded configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return sorted(d for k in set(a) | set(b) for d in config_diff(a.get(k), b.get(k), f"{prefix}{k}."))
    return [] if a == b else [prefix.rstrip(".")]


def _input_layout(exp: Experiment) -> dict:
    # A grain iterator state restores only into the same worker layout.
    return {"num_workers": exp.config.data.num_workers, "process_count": jax.process_count()}


def _eval_due(cfg: ml_collections.ConfigDict, epoch: int) -> bool:
    """docs/original.md §6.7: after epoch e (0-based) when e+1 >= eval_start and (e+1) % eval_every == 0."""
    return epoch + 1 >= cfg.train.eval_start_epoch and (epoch + 1) % cfg.train.eval_every_epochs == 0


def train(exp: Experiment, workdir: str, evaluate_fn: EvaluateFn | None = None,
          stop_after: int | None = None, allow_config_change: bool = False) -> TrainState:
    """Trains `exp` in `workdir`, resuming from its latest checkpoint; returns the final state.

    evaluate_fn: state -> {metric: value}, called after the epochs of docs/original.md §6.7 (no evaluation
      and no best checkpoint when None). It must be done with the state when it returns: the
      next step reuses (donates) its buffers.
    stop_after: return after this global step as a killed run would (nothing extra is saved);
      for time-boxed runs and tests.
    allow_config_change: resume even when the config differs from the stored one (e.g. a lower
      lr after a divergence), recording the change in config_changes.jsonl; otherwise that is
      refused (WorkdirError naming the keys).

    Raises WorkdirError (a file, a workdir another run holds, a changed config) and ConfigError
    (a bad init.checkpoint) before writing anything.
    """
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"workdir {workdir} is a file, not a directory")
    existed = os.path.isdir(workdir)
    with contextlib.ExitStack() as held:
        if existed:  # stop at once if another run holds it
            held.enter_context(workdir_lock(workdir, jax.process_index()))
        change = _config_change(exp, workdir, allow_config_change)
        initial = None if _latest_checkpoint(workdir) is not None else _initial_variables(exp)
        if not existed:
            os.makedirs(workdir, exist_ok=True)
            held.enter_context(workdir_lock(workdir, jax.process_index()))
        return _train(exp, workdir, initial, change, evaluate_fn, stop_after)


def _train(exp: Experiment, workdir: str, initial: dict | None, change: dict | None,
           evaluate_fn: EvaluateFn | None, stop_after: int | None) -> TrainState:
    """`train` in a locked workdir; initial: the replicated start variables (None: resuming)."""
    cfg = exp.config
    tcfg = cfg.train
    process0 = jax.process_index() == 0
    if process0:
        _write_config(exp, workdir, change)

    state_sharding = mesh_lib.replicated(exp.mesh)
    ckpts = checkpointing.TrainCheckpoints(workdir, keep=tcfg.keep_checkpoints)
    layout = _input_layout(exp)
    num_epochs, spe, total = tcfg.num_epochs, exp.steps_per_epoch, exp.total_steps
    meta: dict = {}
    if ckpts.latest_step() is not None:
        start, state, meta = ckpts.restore(_abstract_state(exp))
        same_layout = meta.get("input") == layout
        iterator = make_iterator(exp.batches.dataset(num_epochs, start_step=0 if same_layout else start),
                                 num_workers=cfg.data.num_workers, prefetch=cfg.data.prefetch)
        if same_layout:
            ckpts.restore_input(start, iterator)
        say(f"resumed {workdir} at step {start} (epoch {start // spe})"
            + ("" if same_layout else "; the input layout changed, so the input restarts at that step"))
    else:
        start = 0
        iterator = make_iterator(exp.batches.dataset(num_epochs), num_workers=cfg.data.num_workers,
                                 prefetch=cfg.data.prefetch)
        create = jax.jit(functools.partial(create_state, tx=exp.tx, seed=cfg.seed), out_shardings=state_sharding)
        state = create(_initial_variables(exp) if initial is None else initial)

    group_lr, _ = optim.group_hparams(cfg.optim, cfg.recipe)[MAIN_GROUP[cfg.stage]]
    step_fn = jax.jit(
        make_train_step(exp.model, exp.tx, cfg.stage, cfg.recipe, optim.lr_schedule(group_lr, cfg.optim, spe)),
        in_shardings=(state_sharding, mesh_lib.batch_sharded(exp.mesh)),
        out_shardings=(state_sharding, state_sharding),
        donate_argnums=0,
    )

    log = MetricsLog(workdir, resume_step=start, enabled=process0)
    end = total if stop_after is None else min(total, stop_after)
    progress = Progress(total, start, enabled=process0, desc=f"{cfg.stage} {cfg.data.name}")
    interval = Averages(meta.get("interval"))
    epoch_avg = Averages(meta.get("epoch_avg"))
    best = meta.get("best")
    images_per_step = IMAGES_PER_ROW * exp.batches.global_batch
    clock = {"time": time.perf_counter(), "step": start}
    pending: list[tuple[int, dict]] = []

    def absorb() -> None:
        """Fetches the metrics of dispatched steps; raises on a non-finite loss or state."""
        while pending:
            done_step, device_metrics = pending.pop(0)
            metrics = mesh_lib.to_host(device_metrics)
            state_finite = bool(metrics.pop("state_finite"))
            metrics = {k: float(v) for k, v in metrics.items()}
            if not (math.isfinite(metrics["loss"]) and state_finite):
                ckpts.wait()
                last = ckpts.latest_step()
                kept = (f"The last good checkpoint, step {last}, stays in "
                        f"{os.path.join(workdir, checkpointing.LATEST_DIR)}" if last is not None
                        else "No checkpoint was written yet")
                what = (f"loss is {metrics['loss']}" if not math.isfinite(metrics["loss"]) else
                        f"the parameters, optimizer state or BN statistics are inf/NaN (loss {metrics['loss']})")
                raise NonFiniteLossError(
                    f"{what} at step {done_step} (epoch {(done_step - 1) // spe}; "
                    f"id {metrics['id']}, wrt {metrics['wrt']}); stopped. {kept}; lower the learning rates "
                    f"(resuming with them needs --allow_config_change) or check the input and initial weights "
                    f"before running again.")
            interval.add(metrics)
            epoch_avg.add(metrics)
            progress.update(1, metrics)

    def checkpoint_meta(done: int) -> dict:
        return {"step": done, "epoch": done // spe, "interval": interval.state(), "epoch_avg": epoch_avg.state(),
                "best": best, "input": layout}

    try:
        for step in range(start, end):
            batch = mesh_lib.put_batch(next(iterator), exp.mesh)
            state, metrics = step_fn(state, batch)
            absorb()  # the previous step's, while this one runs
            ckpts.check()  # a failed background save stops the run now, not at the next save
            done = step + 1
            pending.append((done, metrics))
            epoch = step // spe
            epoch_end = done % spe == 0
            eval_now = evaluate_fn is not None and epoch_end and _eval_due(cfg, epoch)
            save_now = done % tcfg.checkpoint_every_steps == 0 or epoch_end
            # Records at fixed steps only, so a stopped and resumed run logs what one run would.
            log_now = done % tcfg.log_every_steps == 0 or epoch_end
            if log_now or save_now or eval_now:
                absorb()
            if log_now:
                now = time.perf_counter()
                ips = (done - clock["step"]) * images_per_step / max(now - clock["time"], 1e-9)
                clock.update(time=now, step=done)
                values = {**interval.means(), "images_per_sec": ips}
                log.write("train", done, epoch, values)
                progress.update(0, values, ips)
                interval = Averages()
            if epoch_end:
                log.write("epoch", done, epoch, epoch_avg.means())
                epoch_avg = Averages()
            if eval_now:
                results = {k: float(v) for k, v in evaluate_fn(state).items()}
                log.write("eval", done, epoch, results)
                say(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(results.items())))
                value = results.get(tcfg.best_metric)
                if value is None:
                    say(f"config.train.best_metric {tcfg.best_metric!r} is not among the evaluation's metrics "
                        f"({', '.join(sorted(results))}); no best model is kept")
                elif best is None or value >= best["value"]:
                    best = {"step": done, "epoch": epoch, "metric": tcfg.best_metric, "value": value}
                    ckpts.save_best(done, state, iterator.get_state(), checkpoint_meta(done))
                    exported = checkpointing.export_variables(
                        os.path.join(workdir, checkpointing.VARIABLES_DIR, "best"), state, exp.model_config)
                    say(f"best model so far by {tcfg.best_metric} ({value:.4g}, epoch {epoch + 1}): {exported}")
            if save_now:
                ckpts.save(done, state, iterator.get_state(), checkpoint_meta(done))
        absorb()
        ckpts.wait()
        if int(mesh_lib.to_host(state.step)) == total:
            exported = checkpointing.export_variables(
                os.path.join(workdir, checkpointing.VARIABLES_DIR, "last"), state, exp.model_config)
            say(f"finished {total} steps; model variables in {exported}")
    finally:
        progress.close()
        log.close()
        ckpts.close()
        iterator.close()  # stops prefetch threads and worker processes
    return state


def run(config: ml_collections.ConfigDict, workdir: str,
        make_evaluate: Callable[[Experiment], EvaluateFn] | None = None,
        sources: tuple[Sequence[dict], Sequence[dict]] | None = None, stop_after: int | None = None,
        allow_config_change: bool = False) -> TrainState:
    """`prepare` + `train` in one call; `make_evaluate(experiment)` builds the evaluation hook."""
    exp = prepare(config, sources)
    evaluate_fn = make_evaluate(exp) if make_evaluate is not None else None
    return train(exp, workdir, evaluate_fn=evaluate_fn, stop_after=stop_after,
                 allow_config_change=allow_config_change)

