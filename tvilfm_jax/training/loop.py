"""The training loop: build an experiment from a config, then train it resumably in a workdir.

    experiment = prepare(config)                    # input, model, optimizer, mesh
    state = train(experiment, workdir)              # resumes from workdir/checkpoints if any

One jitted, state-donating step per global batch over the `data` mesh. Metrics of step s are
fetched after step s+1 has been dispatched, so the host never stalls the device; they are
checked before anything is saved: a non-finite loss, or a step that leaves any inf/NaN in the
parameters, optimizer state or BN statistics, raises `NonFiniteLossError`, and no state after
the last finite one is ever written (checkpoint or model export). Checkpoints: every
`checkpoint_every_steps` steps, at every epoch end and at the end (see checkpointing.py). Evaluation: a caller-supplied
`evaluate_fn(state) -> dict` after the epochs docs/original.md §6.7 names; a result holding
`config.train.best_metric` that is >= the best so far replaces the models/best export (and says
so, naming the metric). The end of training exports models/last. The workdir's layout is
`tvilfm_jax.run_layout`.

One run per workdir: each process holds an advisory lock on workdir/train.lock (train.lock.<i>
for process i > 0) while it trains; the OS drops it when the process ends, killed or not.
Everything that can be refused (a workdir in the old layout, a bad `init.checkpoint`, a config
that differs from the stored one of the run it would resume) is refused before anything is written.
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

from tvilfm_jax import artifacts, optim, run_layout
from tvilfm_jax.data.pipeline import TrainBatches, make_iterator
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig, init_variables
from tvilfm_jax.training import checkpointing, initialization, inputs
from tvilfm_jax.training import mesh as mesh_lib
from tvilfm_jax.training.config import config_changes, model_config, validate
from tvilfm_jax.training.logging import Averages, MetricsLog, Progress, say
from tvilfm_jax.training.state import TrainState, create_state
from tvilfm_jax.training.step import MAIN_GROUP, make_train_step

# Images through the visual encoder per row of the global batch: RGB view 1, RGB view 2, IR.
IMAGES_PER_ROW = 3

# state -> {metric: value}; a result that also has `curves` ({name: CMC [R] fractions}) and
# `title` attributes (`eval.runner.EvalMetrics`) gets its CMC figure in TensorBoard.
EvaluateFn = Callable[[TrainState], Mapping[str, float]]


class NonFiniteLossError(RuntimeError):
    """The loss or the training state became inf/NaN; the run stopped without saving the bad state."""


class WorkdirError(RuntimeError):
    """The workdir cannot take this run: not a directory, in the old layout, in use by another
    run, or holding a run of another config."""


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
    return mesh_lib.replicate(initialization.initial_variables(exp.config, exp.model_config), exp.mesh)


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
    path = run_layout.lock_path(workdir, process)
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
    directory = run_layout.path(workdir, run_layout.CHECKPOINTS_DIR)
    steps = ocp.utils.checkpoint_steps(directory) if os.path.isdir(directory) else []
    return max(steps, default=None)


def _dotted(tree: Any, key: str) -> Any:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _config_change(exp: Experiment, workdir: str, allow: bool) -> dict | None:
    """The record of how the config differs from the one stored with the run it resumes (None: same
    config or nothing to resume); raises WorkdirError unless `allow`."""
    path = run_layout.path(workdir, run_layout.CONFIG_FILE)
    step = _latest_checkpoint(workdir)
    if step is None or not os.path.isfile(path):
        return None
    with open(path) as f:
        before = json.load(f)
    now = json.loads(exp.config.to_json())
    changed = config_changes(before, now)
    if not changed:
        return None
    shown = ", ".join(f"{k}: {_dotted(before, k)!r} -> {_dotted(now, k)!r}" for k in changed)
    if not allow:
        raise WorkdirError(f"{workdir} holds a run of another config (it differs in {shown}); to resume it at "
                           f"step {step} with this config pass --allow_config_change (recorded in "
                           f"{run_layout.CONFIG_CHANGES_FILE}), or pick another workdir")
    logging.warning("%s: resuming at step %d with a changed config: %s", workdir, step, shown)
    return {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "changed": {k: {"before": _dotted(before, k), "after": _dotted(now, k)} for k in changed}}


def _write_config(exp: Experiment, workdir: str, change: dict | None) -> None:
    """workdir/config.json (the experiment config) and run.json (what was derived from it); a
    config change (see `_config_change`) is appended to config_changes.jsonl first."""
    text = exp.config.to_json(indent=2, sort_keys=True)
    if change is not None:
        with open(run_layout.path(workdir, run_layout.CONFIG_CHANGES_FILE), "a") as f:
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
    for name, content in ((run_layout.CONFIG_FILE, text),
                          (run_layout.RUN_FILE, json.dumps(run, indent=2, sort_keys=True))):
        tmp = os.path.join(workdir, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(content + "\n")
        os.replace(tmp, os.path.join(workdir, name))


def _input_layout(exp: Experiment) -> dict:
    # A grain iterator state restores only into the same worker layout.
    return {"num_workers": exp.config.data.num_workers, "process_count": jax.process_count()}


@dataclasses.dataclass(frozen=True)
class Due:
    """What the loop does after a step: write a train record, save a checkpoint, evaluate."""

    log: bool
    save: bool
    eval: bool
    epoch_end: bool

    @property
    def any(self) -> bool:
        return self.log or self.save or self.eval


def due_at(done: int, steps_per_epoch: int, train_cfg: Any, evaluate: bool) -> Due:
    """The cadence after global step `done` (1-based: steps done so far) of `config.train`.

    Records and checkpoints fall at fixed steps only (every `log_every_steps` /
    `checkpoint_every_steps` and at each epoch end), so a stopped and resumed run logs and saves
    what one run would. Evaluation (`evaluate`: there is an evaluation hook) follows
    docs/original.md §6.7: after epoch e (0-based) when e+1 >= eval_start_epoch and
    (e+1) % eval_every_epochs == 0.
    """
    epoch_end = done % steps_per_epoch == 0
    epochs = (done - 1) // steps_per_epoch + 1  # epochs begun, = e+1 at the end of epoch e
    return Due(log=done % train_cfg.log_every_steps == 0 or epoch_end,
               save=done % train_cfg.checkpoint_every_steps == 0 or epoch_end,
               eval=evaluate and epoch_end and epochs >= train_cfg.eval_start_epoch
               and epochs % train_cfg.eval_every_epochs == 0,
               epoch_end=epoch_end)


class MetricsPipe:
    """Metrics of dispatched steps, fetched from the devices one step late, and their averages.

    `push` queues a step's device metrics right after it is dispatched; `absorb` fetches the
    queued ones (blocking on their steps only), adds them to the interval and epoch averages and
    the progress bar, and raises NonFiniteLossError at the first non-finite loss or state, after
    the background checkpoint save has finished (so the error names the last good checkpoint).

    Args:
      ckpts: the run's checkpoints.
      progress: the console progress bar.
      steps_per_epoch: for the epoch named in the error.
      meta: a restored checkpoint's meta (its averages carry on), {} for a fresh run.
    """

    def __init__(self, ckpts: checkpointing.TrainCheckpoints, progress: Progress, steps_per_epoch: int,
                 meta: Mapping[str, Any]):
        self.ckpts = ckpts
        self.progress = progress
        self.steps_per_epoch = steps_per_epoch
        self.interval = Averages(meta.get("interval"))
        self.epoch = Averages(meta.get("epoch_avg"))
        self._pending: list[tuple[int, dict]] = []

    def push(self, done: int, device_metrics: dict) -> None:
        """Queues the metrics of the step that brought the run to `done` steps."""
        self._pending.append((done, device_metrics))

    def absorb(self) -> None:
        """Fetches every queued step's metrics; raises on a non-finite loss or state."""
        while self._pending:
            done, device_metrics = self._pending.pop(0)
            metrics = mesh_lib.to_host(device_metrics)
            state_finite = bool(metrics.pop("state_finite"))
            metrics = {k: float(v) for k, v in metrics.items()}
            if not (math.isfinite(metrics["loss"]) and state_finite):
                self._stop(done, metrics)
            self.interval.add(metrics)
            self.epoch.add(metrics)
            self.progress.update(1, metrics)

    def _stop(self, done: int, metrics: Mapping[str, float]) -> None:
        self.ckpts.wait()
        last = self.ckpts.latest_step()
        kept = (f"The last good checkpoint, step {last}, stays in {self.ckpts.directory}" if last is not None
                else "No checkpoint was written yet")
        what = (f"loss is {metrics['loss']}" if not math.isfinite(metrics["loss"]) else
                f"the parameters, optimizer state or BN statistics are inf/NaN (loss {metrics['loss']})")
        raise NonFiniteLossError(
            f"{what} at step {done} (epoch {(done - 1) // self.steps_per_epoch}; "
            f"id {metrics['id']}, wrt {metrics['wrt']}); stopped. {kept}; lower the learning rates "
            f"(resuming with them needs --allow_config_change) or check the input and initial weights "
            f"before running again.")

    def take_interval(self) -> dict[str, float]:
        """Means since the last call (or the run's start), restarting the interval."""
        means, self.interval = self.interval.means(), Averages()
        return means

    def take_epoch(self) -> dict[str, float]:
        """Means over the epoch that just ended, restarting the epoch's averages."""
        means, self.epoch = self.epoch.means(), Averages()
        return means

    def state(self) -> dict:
        """The averages so far, for a checkpoint's meta (see `__init__`)."""
        return {"interval": self.interval.state(), "epoch_avg": self.epoch.state()}


def _restore_or_init(exp: Experiment, workdir: str, ckpts: checkpointing.TrainCheckpoints, initial: dict | None,
                     layout: dict) -> tuple[int, TrainState, Any, dict]:
    """(start step, state, input iterator, meta) of the run: its latest intact checkpoint, or
    step 0 from `initial` (the replicated start variables; None: built here)."""
    cfg = exp.config
    num_epochs = cfg.train.num_epochs
    if ckpts.latest_step() is None:
        iterator = make_iterator(exp.batches.dataset(num_epochs), num_workers=cfg.data.num_workers,
                                 prefetch=cfg.data.prefetch)
        create = jax.jit(functools.partial(create_state, tx=exp.tx, seed=cfg.seed),
                         out_shardings=mesh_lib.replicated(exp.mesh))
        return 0, create(_initial_variables(exp) if initial is None else initial), iterator, {}
    start, state, meta = ckpts.restore(_abstract_state(exp))
    same_layout = meta.get("input") == layout
    iterator = make_iterator(exp.batches.dataset(num_epochs, start_step=0 if same_layout else start),
                             num_workers=cfg.data.num_workers, prefetch=cfg.data.prefetch)
    if same_layout:
        ckpts.restore_input(start, iterator)
    say(f"resumed {workdir} at step {start} (epoch {start // exp.steps_per_epoch})"
        + ("" if same_layout else "; the input layout changed, so the input restarts at that step"))
    return start, state, iterator, meta


def _train_step(exp: Experiment) -> Callable:
    """The jitted, state-donating (state, batch) -> (state, metrics) of the experiment."""
    cfg = exp.config
    replicated = mesh_lib.replicated(exp.mesh)
    group_lr, _ = optim.group_hparams(cfg.optim, cfg.recipe)[MAIN_GROUP[cfg.stage]]
    return jax.jit(
        make_train_step(exp.model, exp.tx, cfg.stage, cfg.recipe,
                        optim.lr_schedule(group_lr, cfg.optim, exp.steps_per_epoch)),
        in_shardings=(replicated, mesh_lib.batch_sharded(exp.mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def _export(exp: Experiment, workdir: str, which: str, state: TrainState) -> str:
    """Writes state's model to workdir/models/<which> (replacing an earlier export); collective."""
    return artifacts.save_model(run_layout.model_dir(workdir, which), mesh_lib.to_host(state.variables()),
                                exp.model_config, overwrite=True)


def _end_of_epoch_eval(exp: Experiment, workdir: str, evaluate_fn: EvaluateFn, state: TrainState, log: MetricsLog,
                       done: int, epoch: int, best: dict | None) -> dict | None:
    """Evaluates `state` after epoch `epoch` (0-based, ending at step `done`), logs the result and,
    when it holds `config.train.best_metric` >= the best so far, exports models/best; returns
    the best so far ({"step", "epoch", "metric", "value"}, None before any)."""
    metric = exp.config.train.best_metric
    raw = evaluate_fn(state)
    results = {k: float(v) for k, v in raw.items()}
    log.write("eval", done, epoch, results)
    curves = getattr(raw, "curves", None)  # see `EvaluateFn`
    if curves:
        log.cmc(done, curves, getattr(raw, "title", "CMC"))
    say(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(results.items())))
    value = results.get(metric)
    if value is None:
        say(f"config.train.best_metric {metric!r} is not among the evaluation's metrics "
            f"({', '.join(sorted(results))}); no best model is kept")
        return best
    if best is None or value >= best["value"]:
        best = {"step": done, "epoch": epoch, "metric": metric, "value": value}
        exported = _export(exp, workdir, "best", state)
        say(f"best model so far by {metric} ({value:.4g}, epoch {epoch + 1}): {exported}")
    return best


def train(exp: Experiment, workdir: str, evaluate_fn: EvaluateFn | None = None,
          stop_after: int | None = None, allow_config_change: bool = False) -> TrainState:
    """Trains `exp` in `workdir`, resuming from its latest checkpoint; returns the final state.

    evaluate_fn: state -> {metric: value}, called after the epochs of docs/original.md §6.7 (no evaluation
      and no best model when None). It must be done with the state when it returns: the
      next step reuses (donates) its buffers.
    stop_after: return after this global step as a killed run would (nothing extra is saved);
      for time-boxed runs and tests.
    allow_config_change: resume even when the config differs from the stored one (e.g. a lower
      lr after a divergence), recording the change in config_changes.jsonl; otherwise that is
      refused (WorkdirError naming the keys).

    Raises WorkdirError (a file, a workdir in the old layout, a workdir another run holds, a
    changed config) and ConfigError (a bad init.checkpoint) before writing anything.
    """
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"workdir {workdir} is a file, not a directory")
    old = run_layout.old_layout_problem(workdir)
    if old:
        raise WorkdirError(old)
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
    spe, total = exp.steps_per_epoch, exp.total_steps
    process0 = jax.process_index() == 0
    if process0:
        _write_config(exp, workdir, change)

    ckpts = checkpointing.TrainCheckpoints(workdir, keep=cfg.train.keep_checkpoints)
    layout = _input_layout(exp)
    start, state, iterator, meta = _restore_or_init(exp, workdir, ckpts, initial, layout)
    step_fn = _train_step(exp)

    log = MetricsLog(workdir, resume_step=start, enabled=process0)
    log.hparams(json.loads(cfg.to_json()),
                ["epoch/loss"] + ([f"eval/{cfg.train.best_metric}"] if evaluate_fn is not None else []))
    end = total if stop_after is None else min(total, stop_after)
    progress = Progress(total, start, enabled=process0, desc=f"{cfg.stage} {cfg.data.name}")
    pipe = MetricsPipe(ckpts, progress, spe, meta)
    best = meta.get("best")
    images_per_step = IMAGES_PER_ROW * exp.batches.global_batch
    clock, clock_step = time.perf_counter(), start
    try:
        for step in range(start, end):
            batch = mesh_lib.put_batch(next(iterator), exp.mesh)
            state, metrics = step_fn(state, batch)
            pipe.absorb()  # the previous step's, while this one runs
            ckpts.check()  # a failed background save stops the run now, not at the next save
            done = step + 1
            pipe.push(done, metrics)
            epoch = step // spe
            due = due_at(done, spe, cfg.train, evaluate_fn is not None)
            if due.any:
                pipe.absorb()
            if due.log:
                now = time.perf_counter()
                ips = (done - clock_step) * images_per_step / max(now - clock, 1e-9)
                clock, clock_step = now, done
                values = {**pipe.take_interval(), "images_per_sec": ips}
                log.write("train", done, epoch, values)
                progress.update(0, values, ips)
            if due.epoch_end:
                log.write("epoch", done, epoch, pipe.take_epoch())
            if due.eval:
                best = _end_of_epoch_eval(exp, workdir, evaluate_fn, state, log, done, epoch, best)
            if due.save:
                meta = {"step": done, "epoch": done // spe, **pipe.state(), "best": best, "input": layout}
                ckpts.save(done, state, iterator.get_state(), meta)
        pipe.absorb()
        ckpts.wait()
        if int(mesh_lib.to_host(state.step)) == total:
            exported = _export(exp, workdir, "last", state)
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

