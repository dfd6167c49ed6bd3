"""Resumable training checkpoints: one orbax `CheckpointManager` over workdir/checkpoints/.

Each checkpoint step (the last `keep` of them; see `run_layout` for the whole workdir) holds
  state  (TrainState: params, batch_stats, opt_state, step, rng),
  data   (the grain iterator state, one file per process),
  meta   (JSON: epoch, loop accumulators, best metric so far, input layout, the state's checksum).
Steps found damaged on resume are set aside in workdir/checkpoints_damaged/. The models a run
exports (models/last, models/best) are model artifacts, written by `tvilfm_jax.artifacts`;
`load_step_model` reads the model of any kept step instead (`evaluate --step N`).

Every process calls every save and restore here (orbax coordinates them, the primary host
writes the replicated arrays); the workdir must be on a file system all hosts share.
Checkpoints are written asynchronously: `save` returns once the arrays are copied off
the devices, so the next (donating) step can run while files are written.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from tvilfm_jax import artifacts, run_layout
from tvilfm_jax.models.tvilfm import ModelConfig, init_variables
from tvilfm_jax.training import mesh as mesh_lib
from tvilfm_jax.training.state import TrainState

ITEMS = ("state", "data", "meta")
# meta key of `checksum(state)` at save time, verified on restore.
CHECKSUM_KEY = "state_checksum"
# orbax writes a step into <step>.orbax-checkpoint-tmp[-<time>] and renames it when complete.
TMP_SUFFIX = ".orbax-checkpoint-tmp"


class CheckpointError(RuntimeError):
    """A training checkpoint cannot be written or read back."""


class DamagedCheckpointError(CheckpointError):
    """A training checkpoint is missing a part or does not read back."""


class CheckpointSaveError(CheckpointError):
    """Writing a training checkpoint failed (e.g. the disk is full)."""


def _read_json(step: int, path: str) -> Any:
    """A checkpoint's JSON file; DamagedCheckpointError naming it when it is missing or garbled."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        what = "is missing" if isinstance(err, FileNotFoundError) else f"does not read ({type(err).__name__}: {err})"
        raise DamagedCheckpointError(f"checkpoint step {step}: {path} {what}") from err


def _root_cause(err: BaseException) -> str:
    """The first line of the innermost exception in err's chain, without tensorstore's spec dump
    (tensorstore names the file or array there; orbax's wrappers do not)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    text = (str(err).strip().splitlines() or [""])[0].split(" [tensorstore_spec=")[0]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@jax.jit
def checksum(tree: Any) -> jax.Array:
    """uint32 []: the wrapping sum of every leaf's 32-bit words (a flipped bit changes it).

    Integer sums are exact, so it is the same on any device count."""
    def words(x):
        x = jnp.asarray(x)
        return jax.lax.bitcast_convert_type(x, jnp.uint32) if x.dtype.itemsize == 4 else x.astype(jnp.uint32)

    return sum((jnp.sum(words(x), dtype=jnp.uint32) for x in jax.tree_util.tree_leaves(tree)), jnp.uint32(0))


class _FrozenIteratorState:
    """The iterator state at `save` time, for grain's checkpoint handler.

    The handler reads `get_state()` when it writes, which for an asynchronous save may be after
    the loop has already pulled further batches; this keeps the state of the saved step.
    """

    def __init__(self, state: Any):
        self._encoded = json.dumps(state, indent=2).encode()

    def get_state(self) -> bytes:
        return self._encoded


class TrainCheckpoints:
    """The latest training checkpoints of one workdir (workdir/checkpoints/<step>).

    Args:
      workdir: the run directory.
      keep: how many checkpoints to keep.
      use_async: write checkpoints in the background.
    """

    def __init__(self, workdir: str, keep: int = 2, use_async: bool = True):
        self.workdir = os.path.abspath(workdir)
        self.directory = run_layout.path(self.workdir, run_layout.CHECKPOINTS_DIR)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=use_async)
        self.latest = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
        self._writing: int | None = None  # the step of a background save not yet known to be done

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def _args(self, state: TrainState, iterator_state: Any, meta: Mapping[str, Any]) -> ocp.args.Composite:
        return ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(_FrozenIteratorState(iterator_state)),
            meta=ocp.args.JsonSave({**meta, CHECKSUM_KEY: int(mesh_lib.to_host(checksum(state)))}),
        )

    def save(self, step: int, state: TrainState, iterator_state: Any, meta: Mapping[str, Any]) -> None:
        """Latest checkpoint at `step` (a no-op if this step is already saved)."""
        if step in self.latest.all_steps():
            return
        self.wait()  # orbax would wait too, raising an earlier save's error unexplained
        self._writing = step
        try:
            self.latest.save(step, args=self._args(state, iterator_state, meta), force=True)
        except Exception as err:
            self._failed(step, err)

    def check(self) -> None:
        """Raises CheckpointSaveError once a background save has failed; does not wait for one
        in progress (call it every step: a failed save is reported at once, not at the next)."""
        if self._writing is not None and not self.latest.is_saving_in_progress():
            self.wait()

    def wait(self) -> None:
        """Waits for the background save; CheckpointSaveError if it failed."""
        step, self._writing = self._writing, None
        try:
            self.latest.wait_until_finished()
        except Exception as err:
            self._failed(step, err)

    def _failed(self, step: int | None, err: Exception) -> None:
        """Removes the failed save's temporary folder and raises CheckpointSaveError."""
        if jax.process_index() == 0:
            for tmp in glob.glob(os.path.join(glob.escape(self.directory), f"{step}{TMP_SUFFIX}*")):
                shutil.rmtree(tmp, ignore_errors=True)
        self.latest.reload()
        last = self.latest.latest_step()
        kept = (f"the previous checkpoint, step {last}, is intact" if last is not None
                else "no earlier checkpoint exists")
        raise CheckpointSaveError(f"saving checkpoint step {step} to {self.directory} failed ({_root_cause(err)}); "
                                  f"{kept}; free disk space or fix the file system, then run again to resume"
                                  ) from err

    def restore(self, abstract_state: TrainState) -> tuple[int, TrainState, dict]:
        """(step, state, meta) of the newest intact latest checkpoint.

        A damaged newer step (a missing or unreadable part) is reported with a warning naming it
        and moved to `<workdir>/checkpoints_damaged/`, so the resumed run writes that step again.
        Raises DamagedCheckpointError when no step is intact.

        abstract_state: `jax.ShapeDtypeStruct`s with shardings (where the arrays go).
        """
        steps = sorted(self.latest.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        damaged: list[tuple[int, str]] = []
        for step in steps:
            try:
                meta = self._verify(step)
                state = self._restore_item(step, "state", ocp.args.StandardRestore(abstract_state))
                self._check_sum(step, state, meta)
            except DamagedCheckpointError as err:
                damaged.append((step, str(err)))
                continue
            for bad, problem in damaged:
                self._set_aside(bad, step, problem)
            return step, state, meta
        raise DamagedCheckpointError(f"no intact checkpoint to resume from: {'; '.join(p for _, p in damaged)}; "
                                     f"move {self.directory} away to start the run afresh")

    def steps(self) -> list[int]:
        """The kept steps, oldest first."""
        return sorted(self.latest.all_steps())

    def restore_variables(self, step: int) -> dict:
        """{"params", "batch_stats"} of checkpoint `step` as host numpy arrays, verified as `restore`
        verifies a step (DamagedCheckpointError naming the file), whatever device count wrote it."""
        meta = self._verify(step)
        here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        stored = ocp.StandardCheckpointer().metadata(os.path.join(self._step_dir(step), "state")).item_metadata.tree
        abstract = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here), stored)
        state = self._restore_item(step, "state", ocp.args.StandardRestore(abstract))
        self._check_sum(step, state, meta)
        return {k: jax.tree_util.tree_map(np.asarray, state[k]) for k in ("params", "batch_stats")}

    def restore_input(self, step: int, iterator: grain.DatasetIterator) -> None:
        """Sets `iterator` to its state in checkpoint `step` (verified by `restore`)."""
        self._restore_item(step, "data", grain.checkpoint.CheckpointRestore(iterator))

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _verify(self, step: int) -> dict:
        """Checks the parts of checkpoint `step` that orbax would not name when they are broken;
        returns its meta."""
        root = self._step_dir(step)
        meta = _read_json(step, os.path.join(root, "meta", "metadata"))
        stored = meta.get("input", {}).get("process_count", jax.process_count())
        for i in range(stored):
            _read_json(step, os.path.join(root, "data", f"process_{i}-of-{stored}.json"))
        _read_json(step, os.path.join(root, "state", "_METADATA"))
        return meta

    def _check_sum(self, step: int, state: TrainState, meta: Mapping[str, Any]) -> None:
        """Compressed data that decodes after damage (e.g. a flipped bit) reads back silently
        wrong; the checksum saved in meta catches that (checkpoints written before it: skipped)."""
        expected = meta.get(CHECKSUM_KEY)
        found = int(mesh_lib.to_host(checksum(state)))
        if expected is not None and found != expected:
            raise DamagedCheckpointError(f"checkpoint step {step}: {os.path.join(self._step_dir(step), 'state')} "
                                         f"does not hold what was saved (checksum {found}, saved {expected})")

    def _restore_item(self, step: int, item: str, args: Any) -> Any:
        try:
            return self.latest.restore(step, args=ocp.args.Composite(**{item: args}))[item]
        except Exception as err:  # orbax / tensorstore / grain errors seldom name the file
            raise DamagedCheckpointError(f"checkpoint step {step}: {os.path.join(self._step_dir(step), item)} "
                                         f"does not restore ({_root_cause(err)})") from err

    def _set_aside(self, step: int, resumed: int, problem: str) -> None:
        """Warns about damaged step `step` and moves it out of the manager's folder."""
        aside = run_layout.path(self.workdir, run_layout.DAMAGED_DIR)
        logging.warning("%s; resuming from step %d instead, and moving step %d to %s", problem, resumed, step, aside)
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            target = os.path.join(aside, str(step))
            if os.path.exists(target):
                shutil.rmtree(target)
            os.replace(self._step_dir(step), target)
        ocp.multihost.sync_global_processes(f"set aside checkpoint {step}")
        self.latest.reload()

    def close(self) -> None:
        """Waits for a background save and closes; a failed save is logged (`wait` raises it)."""
        try:
            self.latest.close()
        except Exception as err:  # already raised by wait/check, or the run is failing anyway
            logging.error("closing the checkpoints in %s: %s", self.directory, _root_cause(err))


def load_step_model(workdir: str | os.PathLike, step: int) -> tuple[ModelConfig, dict, str]:
    """(model config, variables, description) of the train state kept at `step` in
    workdir/checkpoints: the model config training built (workdir/run.json), the variables
    {"params", "batch_stats"} as host numpy, checked against it, and the step's path.

    ValueError (one line) for a workdir without checkpoints, in the old layout, without run.json,
    or not keeping `step` (naming the kept steps).
    """
    workdir = os.path.abspath(os.fspath(workdir))
    old = run_layout.old_layout_problem(workdir)
    if old:
        raise ValueError(old)
    directory = run_layout.path(workdir, run_layout.CHECKPOINTS_DIR)
    if not os.path.isdir(directory):
        raise ValueError(f"training run {workdir} keeps no train-state checkpoints ({directory} does not exist)")
    ckpts = TrainCheckpoints(workdir, use_async=False)
    try:
        kept = ckpts.steps()
        if step not in kept:
            raise ValueError(f"training run {workdir} keeps no checkpoint at step {step}; kept steps: "
                             f"{', '.join(map(str, kept)) or 'none'}")
        run_file = run_layout.path(workdir, run_layout.RUN_FILE)
        try:
            with open(run_file) as f:
                model = json.load(f)["model"]
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{run_file} does not hold the run's model config ({type(err).__name__}: {err})") from err
        config = ModelConfig.from_dict(model, source=f"{run_file} 'model'")
        variables = ckpts.restore_variables(step)
    finally:
        ckpts.close()
    described = os.path.join(directory, str(step))
    expected = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
    artifacts.check_tree(artifacts.tree_shapes(variables), artifacts.tree_shapes(expected), described)
    return config, variables, described
