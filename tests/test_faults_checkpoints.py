"""Faults around checkpoints: exports across device counts, non-finite states, damaged
checkpoints and failing asynchronous saves (issue 19)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tvilfm_jax import artifacts
from tvilfm_jax.eval import runner
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import ModelConfig, init_variables
from tvilfm_jax.training import checkpointing, initialization
from tvilfm_jax.training.state import TrainState

ROOT = Path(__file__).resolve().parents[1]
HW = (32, 16)
TINY_MODEL = ModelConfig(num_classes=2, resnet_blocks=(1, 1, 1, 1), resnet_width=4,
                         text=TextConfig(width=32, layers=1, heads=2, embed_dim=128))


def tiny_variables(seed: int = 0) -> dict:
    """Random numpy variables shaped as TINY_MODEL's (from shapes alone: nothing compiles)."""
    shapes = jax.eval_shape(lambda: init_variables(TINY_MODEL, jax.random.key(0), image_hw=HW))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


# Exports a training state replicated over a 2-device mesh, as the end of a 2-device run does.
EXPORT_ON_TWO_DEVICES = """
import sys
import jax
import optax
from tests.test_faults_checkpoints import TINY_MODEL, tiny_variables
from tvilfm_jax import artifacts
from tvilfm_jax.training import mesh
from tvilfm_jax.training.state import create_state

two = mesh.make_mesh()
assert two.devices.size == 2, two
state = create_state(mesh.replicate(tiny_variables(), two), optax.sgd(0.1), seed=0)
artifacts.save_model(sys.argv[1], mesh.to_host(state.variables()), TINY_MODEL, overwrite=True)
"""


def test_an_export_of_a_two_device_run_loads_on_one_device(tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", EXPORT_ON_TWO_DEVICES, str(workdir / "models" / "last")],
                   cwd=ROOT, env=env, check=True, timeout=600)
    assert jax.device_count() == 1
    expected = tiny_variables()
    # As `python -m tvilfm_jax.evaluate --workdir` loads it ...
    config, variables, _ = runner.load_model(workdir=workdir, which="last")
    assert config == TINY_MODEL
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree_util.tree_leaves(variables))
    assert_trees_equal(variables, expected)
    # ... and as a stage-2 run's init.checkpoint.
    stage2 = initialization.load_init_variables(str(workdir / "models" / "last"),
                                                dataclasses.replace(TINY_MODEL, backup=True))
    assert_trees_equal(stage2["params"]["backup_neck"], expected["params"]["neck"])
    assert_trees_equal(stage2["params"]["visual"], expected["params"]["visual"])


def assert_trees_equal(a, b) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# A tiny stage-1 run of the train CLI: 2 epochs x 4 steps, a checkpoint after every step.
TINY_RUN = [
    "--config.data.image_size=(32, 16)",
    "--config.data.ids_per_batch=2",
    "--config.data.images_per_id=2",
    "--config.model.resnet_width=8",
    "--config.model.text_width=32",
    "--config.optim.lr_visual=1e-3",
    "--config.optim.warmup_epochs=0",
    "--config.optim.milestones=(1,)",
    "--config.train.num_epochs=2",
    "--config.train.log_every_steps=1",
    "--config.train.checkpoint_every_steps=1",
    "--config.train.keep_checkpoints=20",
    "--config.train.evaluate=False",
]


def train_cli(workdir: Path, dataset: tuple[str, Path], *flags: str) -> subprocess.CompletedProcess:
    name, data_dir = dataset
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "tvilfm_jax.train", f"--config={ROOT / 'configs/synthetic.py'}", f"--workdir={workdir}",
           f"--config.data.name={name}", f"--config.data.data_dir={data_dir}", *TINY_RUN, *flags]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def non_finite_count(tree) -> int:
    return sum(int((~np.isfinite(np.asarray(x))).sum()) for x in jax.tree_util.tree_leaves(tree))


def saved_state(workdir: Path, step: int) -> dict:
    """The whole training state of checkpoint `step`, as numpy."""
    path = workdir / "checkpoints" / str(step) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    stored = checkpointer.metadata(path).item_metadata.tree
    args = jax.tree_util.tree_map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), stored)
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


@pytest.mark.slow
def test_a_step_that_leaves_a_non_finite_state_is_never_saved_and_the_named_checkpoint_resumes(tmp_path, sysu_tiny):
    # Epoch 0 at lr 1e-3, then lr = 1e-3 * 1e39 = inf in fp32: step 5 turns the state inf/NaN
    # (its loss, computed before the update, is still finite).
    workdir = tmp_path / "exploding"
    result = train_cli(workdir, sysu_tiny, "--config.optim.gamma=1e39")
    assert result.returncode == 1, result.stderr[-3000:]
    found = re.search(r"^error: (.*) at step (\d+) \(epoch 1;.*The last good checkpoint, step (\d+), stays in (\S+);",
                      result.stderr, re.M)
    assert found, result.stderr[-3000:]
    bad, kept = int(found.group(2)), int(found.group(3))
    assert (bad, kept) == (5, 4), found.group(0)
    assert found.group(1).startswith("the parameters, optimizer state or BN statistics are inf/NaN")
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
    assert steps == [1, 2, 3, 4]
    assert non_finite_count(saved_state(workdir, kept)) == 0
    assert not (workdir / "models").exists()
    # The named checkpoint, with a sane lr, trains on to the end (a copy: a fresh run
    # directory, so this does not depend on how a resume treats a changed config).
    restart = tmp_path / "restart"
    shutil.copytree(workdir / "checkpoints", restart / "checkpoints")
    result = train_cli(restart, sysu_tiny, "--config.optim.gamma=0.1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at step 4 (epoch 1)" in result.stdout + result.stderr
    losses = [r["loss"] for r in map(json.loads, (restart / "metrics.jsonl").read_text().splitlines())
              if r["kind"] == "train"]
    assert len(losses) == 4 and np.isfinite(losses).all(), losses
    config, variables = artifacts.load_model(restart / "models" / "last")
    assert non_finite_count(variables) == 0


def small_state(value: float) -> TrainState:
    """A TrainState of a few random arrays (large enough that orbax stores them out of line)."""
    w = jax.random.normal(jax.random.key(0), (128, 128)) + value
    return TrainState(step=jnp.asarray(int(value), jnp.int32), params={"w": w}, batch_stats={"mean": jnp.zeros(3)},
                      opt_state={"mu": jnp.full(4, value)}, rng=jnp.zeros(2, jnp.uint32))


def save_steps(workdir: Path, steps, use_async: bool = True) -> None:
    ckpts = checkpointing.TrainCheckpoints(str(workdir), keep=5, use_async=use_async)
    iterator = iter(grain.MapDataset.range(100).to_iter_dataset())
    for step in steps:
        next(iterator)
        ckpts.save(step, small_state(step), iterator.get_state(), {"step": step, "input": {"process_count": 1}})
    ckpts.wait()
    ckpts.close()


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[::7] = bytes(b ^ 0x5A for b in data[::7])
    path.write_bytes(bytes(data))


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _largest_data_file(state: Path) -> Path:
    return max((p for p in state.rglob("*") if p.parent.name == "d"), key=lambda p: p.stat().st_size)


# (damage to checkpoint step 2, the file the warning must name)
DAMAGES = {
    "state folder deleted": (lambda s: shutil.rmtree(s / "state"), "state/_METADATA is missing"),
    "_METADATA deleted": (lambda s: (s / "state" / "_METADATA").unlink(), "state/_METADATA is missing"),
    "_METADATA garbled": (lambda s: _garble(s / "state" / "_METADATA"), "state/_METADATA does not read"),
    "array data garbled": (lambda s: _garble(_largest_data_file(s / "state")), "state does not restore"),
    "array data truncated": (lambda s: os.truncate(_largest_data_file(s / "state"), 100),
                             "state does not restore (ValueError: OUT_OF_RANGE: Error reading \"params.w/"),
    # zstd data that still decodes: read back silently wrong but for the saved checksum
    "array data bit flipped": (lambda s: _flip_bit(_largest_data_file(s / "state")),
                               "state does not hold what was saved"),
    "iterator state garbled": (lambda s: _garble(s / "data" / "process_0-of-1.json"),
                               "data/process_0-of-1.json does not read"),
    "iterator state deleted": (lambda s: (s / "data" / "process_0-of-1.json").unlink(),
                               "data/process_0-of-1.json is missing"),
    "meta garbled": (lambda s: _garble(s / "meta" / "metadata"), "meta/metadata does not read"),
    "meta deleted": (lambda s: shutil.rmtree(s / "meta"), "meta/metadata is missing"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_latest_checkpoint_is_reported_and_the_newest_intact_one_resumes(tmp_path, caplog, damage):
    save_steps(tmp_path, [1, 2])
    hurt, named = DAMAGES[damage]
    hurt(tmp_path / "checkpoints" / "2")
    ckpts = checkpointing.TrainCheckpoints(str(tmp_path))
    abstract = jax.eval_shape(lambda: small_state(0))
    with caplog.at_level(logging.WARNING):
        step, state, meta = ckpts.restore(abstract)
    assert (step, meta["step"]) == (1, 1)
    np.testing.assert_array_equal(state.params["w"], small_state(1).params["w"])
    warning = next(r.getMessage() for r in caplog.records if "checkpoint step 2" in r.getMessage())
    assert f"{tmp_path / 'checkpoints' / '2'}/{named}" in warning, warning
    assert "resuming from step 1 instead" in warning
    # Set aside, so the resumed run writes step 2 afresh (a save of an existing step is a no-op).
    assert ckpts.latest.all_steps() == [1] and (tmp_path / "checkpoints_damaged" / "2").is_dir()
    iterator = iter(grain.MapDataset.range(100).to_iter_dataset())
    ckpts.restore_input(step, iterator)
    assert next(iterator) == 1  # the saved position: one element read
    ckpts.close()


def test_no_intact_checkpoint_is_a_one_line_error_naming_each_step(tmp_path):
    save_steps(tmp_path, [1, 2])
    (tmp_path / "checkpoints" / "2" / "meta" / "metadata").unlink()
    _garble(tmp_path / "checkpoints" / "1" / "state" / "_METADATA")
    ckpts = checkpointing.TrainCheckpoints(str(tmp_path))
    with pytest.raises(checkpointing.DamagedCheckpointError) as err:
        ckpts.restore(jax.eval_shape(lambda: small_state(0)))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("no intact checkpoint to resume from: checkpoint step 2: ")
    assert "2/meta/metadata is missing; checkpoint step 1: " in message and "1/state/_METADATA does not read" in message
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1", "2"]  # nothing moved
    ckpts.close()


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG ("File too large"), as on a full disk: a real
    write error inside tensorstore, in this process only."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def big_state(value: float) -> TrainState:
    return small_state(value).replace(params={"w": jax.random.normal(jax.random.key(1), (1024, 1024)) + value})


def test_a_failed_background_save_is_reported_at_once_and_leaves_no_tmp_folder(tmp_path):
    ckpts = checkpointing.TrainCheckpoints(str(tmp_path), keep=5)
    iterator = iter(grain.MapDataset.range(100).to_iter_dataset())
    ckpts.save(1, big_state(1), iterator.get_state(), {"step": 1, "input": {"process_count": 1}})
    ckpts.wait()
    with file_size_limit(1 << 20):  # the 4 MB array no longer fits
        ckpts.save(2, big_state(2), iterator.get_state(), {"step": 2, "input": {"process_count": 1}})
        with pytest.raises(checkpointing.CheckpointSaveError) as err:
            for _ in range(600):  # what the loop does after every step
                ckpts.check()
                time.sleep(0.05)
    message = str(err.value)
    assert message.startswith(f"saving checkpoint step 2 to {tmp_path / 'checkpoints'} failed (")
    assert "File too large" in message and "the previous checkpoint, step 1, is intact" in message
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]  # no *.orbax-checkpoint-tmp
    # The run can go on saving, and step 1 restores.
    ckpts.save(3, big_state(3), iterator.get_state(), {"step": 3, "input": {"process_count": 1}})
    ckpts.wait()
    assert ckpts.latest.all_steps() == [1, 3]
    ckpts.close()
    shutil.rmtree(tmp_path / "checkpoints" / "3")
    ckpts = checkpointing.TrainCheckpoints(str(tmp_path))
    step, state, _ = ckpts.restore(jax.eval_shape(lambda: big_state(0)))
    assert step == 1
    np.testing.assert_array_equal(state.params["w"], big_state(1).params["w"])
    ckpts.close()
