"""Faults around a training run's workdir (issue 19): one run per workdir, refusals before anything
is written, misspelt config keys, resuming with a changed config, a stage killed while exporting.

The train CLI runs as a user starts it (a subprocess); the finished run the resume and stage-reuse tests
start from is trained once, in this process, on the tiny synthetic dataset.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tvilfm_jax import artifacts, run_layout
from tvilfm_jax.eval import runner
from tvilfm_jax.training import config as train_config
from tvilfm_jax.training import loop, stage_runs

from test_train_config import load as load_config  # parses --config like the train CLI

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "configs" / "synthetic.py"
# 1 epoch of 4 steps; checkpoint and export at step 4.
TINY = [
    "--config.data.image_size=(32, 16)",
    "--config.data.ids_per_batch=2",
    "--config.data.images_per_id=2",
    "--config.model.resnet_width=8",
    "--config.model.text_width=32",
    "--config.optim.warmup_epochs=0",
    "--config.train.num_epochs=1",
    "--config.train.evaluate=False",
]
TIMEOUT = 600


def tiny_flags(sysu_tiny) -> list[str]:
    name, data_dir = sysu_tiny
    return [f"--config.data.name={name}", f"--config.data.data_dir={data_dir}", *TINY]


def cli(module: str, *args: str, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def train(workdir: Path, sysu_tiny, *args: str, stage: str = "base") -> subprocess.CompletedProcess:
    return cli("tvilfm_jax.train", f"--config={SYNTHETIC}:stage={stage}", f"--workdir={workdir}",
               *tiny_flags(sysu_tiny), *args)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The stderr line of a CLI that failed cleanly (exit 1, no traceback)."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-4000:]
    return errors[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, sysu_tiny):
    """(workdir, config) of a finished stage-1 run (checkpoint 4, models/last)."""
    config = load_config(f"{SYNTHETIC}:stage=base", *tiny_flags(sysu_tiny))
    workdir = tmp_path_factory.mktemp("faults") / "finished"
    loop.run(config, str(workdir))
    return workdir, config


# --- 4. one run per workdir ---------------------------------------------------------------------

HOLD = """
import sys, time
from tvilfm_jax.training.loop import workdir_lock
with workdir_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_second_run_on_a_workdir_stops_at_once_and_a_killed_holder_leaves_no_lock(tmp_path, sysu_tiny):
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        start = time.monotonic()
        refused = train(workdir, sysu_tiny, "--stop_after_steps=0")
        error = one_line_error(refused)
        assert f"{workdir} is in use by another training run (pid {holder.pid} on host " in error, error
        assert f"lock {workdir / 'train.lock'}" in error
        assert time.monotonic() - start < 120  # before building a model or touching a checkpoint
        assert sorted(p.name for p in workdir.iterdir()) == ["train.lock"]  # nothing else written
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
    started = train(workdir, sysu_tiny, "--stop_after_steps=0")
    assert started.returncode == 0, started.stderr[-4000:]
    assert (workdir / "config.json").is_file() and (workdir / "run.json").is_file()


def test_the_lock_is_per_process_index_and_released_on_exit(tmp_path):
    with loop.workdir_lock(str(tmp_path)) as path:
        with pytest.raises(loop.WorkdirError, match=rf"in use by another training run \(pid {os.getpid()} on host"):
            with loop.workdir_lock(str(tmp_path)):
                pass
        with loop.workdir_lock(str(tmp_path), process=1) as other:  # the other process of one run
            assert Path(other).name == "train.lock.1"
    assert Path(path).name == "train.lock"
    with loop.workdir_lock(str(tmp_path)):
        pass


# --- 7. CLI edges -------------------------------------------------------------------------------

@pytest.mark.slow
def test_bad_workdir_and_init_checkpoint_are_refused_before_anything_is_written(tmp_path, sysu_tiny, finished):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert one_line_error(train(a_file, sysu_tiny)) == f"error: workdir {a_file} is a file, not a directory"

    missing = tmp_path / "no_such_model"
    new = tmp_path / "stage2"
    error = one_line_error(train(new, sysu_tiny, f"--config.init.checkpoint={missing}", stage="tvilfm"))
    assert error == f"error: config.init.checkpoint {missing}: model config not found: {missing}/model.json"
    assert not new.exists()

    run, _ = finished
    error = one_line_error(train(new, sysu_tiny, f"--config.init.checkpoint={run}", stage="tvilfm"))
    assert error == (f"error: config.init.checkpoint {run} is a training workdir, not a model checkpoint: pass its "
                     f"export {run}/models/last")
    assert not new.exists()

    export = run / "models" / "last"
    error = one_line_error(train(new, sysu_tiny, f"--config.init.checkpoint={export}", "--config.model.resnet_width=16",
                                 stage="tvilfm"))
    assert error.startswith(f"error: init.checkpoint {export}: its model differs from the configured one: ") and (
        "resnet_width: 8 vs 16" in error), error
    assert not new.exists()

    old = tmp_path / "old_layout"  # a run directory from before models/: its exports in variables/
    shutil.copytree(run, old)
    (old / "models").rename(old / "variables")
    before = sorted(p.relative_to(old) for p in old.rglob("*"))
    assert one_line_error(train(old, sysu_tiny)) == f"error: {run_layout.old_layout_problem(old)}"
    assert run_layout.old_layout_problem(old).startswith(f"{old} is a run directory in the old layout (it has "
                                                         "variables/): move variables/ to models/")
    assert sorted(p.relative_to(old) for p in old.rglob("*")) == before  # nothing written, not even the lock
    with pytest.raises(ValueError, match="is a run directory in the old layout"):  # as evaluate --workdir loads it
        runner.load_model(workdir=old, which="last")


def test_misspelt_config_key_is_one_line_naming_the_closest_key(tmp_path):
    expected = "error: --config.optim.lr_visul: config.optim has no key 'lr_visul'; did you mean 'lr_visual'?"
    # Without --config (the default is parsed while the flag is defined) and with it.
    proc = cli("tvilfm_jax.train", f"--workdir={tmp_path / 'run'}", "--config.optim.lr_visul=1")
    assert one_line_error(proc) == expected and proc.stderr.strip() == expected
    proc = cli("tvilfm_jax.evaluate", f"--config={ROOT / 'configs/sysu.py'}", f"--checkpoint={tmp_path}",
               "--config.optim.lr_visul=1")
    assert one_line_error(proc) == expected and proc.stderr.strip() == expected
    assert not (tmp_path / "run").exists()

    config = load_config(f"{SYNTHETIC}")
    assert train_config.unknown_override(["x", "--config.optim.lr_visual=1", "--config.seed=2"], config) is None
    assert train_config.unknown_override(["x", "--config.optimx.lr=1"], config) == (
        "--config.optimx.lr: config has no key 'optimx'; did you mean 'optim'?")
    assert train_config.unknown_override(["x", "--config.seed.x=1"], config) == (
        "--config.seed.x: config.seed has no key 'x' (config.seed is a value)")
    assert "its keys are adam_b1, adam_b2" in train_config.unknown_override(["x", "--config.optim.zzz=1"], config)


# --- 8. resuming with a changed config ----------------------------------------------------------

@pytest.mark.slow
def test_resuming_with_a_changed_config_is_refused_unless_allowed_and_recorded(tmp_path, sysu_tiny, finished):
    run, config = finished
    workdir = tmp_path / "run"
    shutil.copytree(run, workdir)
    stored = (workdir / "config.json").read_text()
    lr = config.optim.lr_visual

    error = one_line_error(train(workdir, sysu_tiny, "--config.optim.lr_visual=1e-4"))
    assert error == (f"error: {workdir} holds a run of another config (it differs in optim.lr_visual: {lr!r} -> "
                     f"0.0001); to resume it at step 4 with this config pass --allow_config_change (recorded in "
                     f"config_changes.jsonl), or pick another workdir")
    assert (workdir / "config.json").read_text() == stored and not (workdir / "config_changes.jsonl").exists()

    allowed = train(workdir, sysu_tiny, "--config.optim.lr_visual=1e-4", "--allow_config_change")
    assert allowed.returncode == 0, allowed.stderr[-4000:]
    assert "resumed" in allowed.stdout + allowed.stderr
    assert json.loads((workdir / "config.json").read_text())["optim"]["lr_visual"] == 1e-4
    [change] = [json.loads(line) for line in (workdir / "config_changes.jsonl").read_text().splitlines()]
    assert change["step"] == 4 and change["changed"] == {"optim.lr_visual": {"before": lr, "after": 1e-4}}


# --- 5. a stage killed while exporting ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("lost", ["model.json", "variables"])
def test_train_stage_resumes_a_stage_whose_export_was_not_finished(tmp_path, finished, capsys, lost):
    """Killed between the variables tree and model.json (the export writes it last), or
    before orbax renamed the variables tree into place."""
    run, config = finished
    workdir = tmp_path / "base"
    shutil.copytree(run, workdir)
    last = workdir / "models" / "last"
    target = last / lost
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert stage_runs.train_stage(config, workdir) == (last, False)
    out = capsys.readouterr().out
    assert "reusing the finished run" not in out and f"the export {last} is incomplete" in out
    assert artifacts.is_complete(last)
    model_config, _ = artifacts.load_model(last)
    assert model_config.num_classes == 4
    assert stage_runs.train_stage(config, workdir) == (last, True)  # now finished
    assert "stage base: reusing the finished run" in capsys.readouterr().out
