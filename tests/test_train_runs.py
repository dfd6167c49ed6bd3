"""Training runs of the train CLI on a tiny synthetic dataset, in subprocesses.

Each run is `python -m tvilfm_jax.train` as a user would start it (subprocesses, because the
device count has to be fixed before JAX starts). The runs are started early and concurrently;
every test waits for the ones it reads:

  full       1 device, 3 epochs x 4 steps, uninterrupted
  dev4       4 simulated devices, stopped after step 4
  proc0/1    2 processes x 2 simulated devices on localhost, stopped after step 4
  killed     1 device, stopped after step 7 (last checkpoint: step 6), then
  resumed    the same command again, to the end
  tvilfm     stage 2 from full's model (recipe paper), and tvilfm_clean (recipe clean)
  exploding  lr 1e-3 in epoch 0, then 5e29 (a "warmup" to an absurd lr): the loss turns inf/NaN
  evaluated  the CLI's main with a scripted evaluation hook (Rank-1 by step)
  tvilfm_eval  stage 2 with the real evaluator (SYSU all-search, four query modalities)

Compiled programs are shared through a persistent compilation cache (with a fixed
PYTHONHASHSEED, so every process traces the same program).
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tfds_builders.prepare import build_synthetic
from tvilfm_jax import artifacts

from test_train_config import tensorboard_events

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DATASET = "synthetic/sysu_tiny"  # 4 identities, 14 RGB + 8 IR images: 4 steps per epoch at P=2, K=2
STEPS_PER_EPOCH, EPOCHS = 4, 3
TOTAL = STEPS_PER_EPOCH * EPOCHS
RUN_TIMEOUT = 900  # seconds, per run

TINY = [
    f"--config.data.name={DATASET}",
    "--config.data.image_size=(32, 16)",
    "--config.data.ids_per_batch=2",
    "--config.data.images_per_id=2",
    "--config.model.resnet_width=8",
    "--config.model.text_width=32",
    # Pinned here, not taken from the demo's tuning: the tolerances below are in units of lr.
    "--config.optim.lr_visual=1e-3",
    "--config.optim.lr_txt=1e-4",
    "--config.optim.warmup_epochs=0",
    f"--config.train.num_epochs={EPOCHS}",
    "--config.train.log_every_steps=1",
    "--config.train.checkpoint_every_steps=6",  # + epoch ends: steps 4, 6, 8, 12
    "--config.train.keep_checkpoints=20",
    "--config.train.evaluate=False",  # the runs below that evaluate say so
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Runs:
    """Train-CLI subprocesses by name: `start` returns at once, `wait` checks the exit code."""

    def __init__(self, base: Path):
        self.base = base
        self.data_dir = base / "tfds"
        self.cache_dir = base / "jax_cache"
        self.procs: dict[str, tuple[subprocess.Popen, Any]] = {}

    def workdir(self, name: str) -> Path:
        return self.base / name

    def start(self, name: str, *flags: str, stage: str = "base", devices: int = 1, workdir: str | None = None,
              program: tuple[str, ...] = ("-m", "tvilfm_jax.train")):
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="2",
                   JAX_COMPILATION_CACHE_DIR=str(self.cache_dir))
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        cmd = [sys.executable, *program, f"--config={ROOT / 'configs/synthetic.py'}:stage={stage}",
               f"--workdir={self.workdir(workdir or name)}", f"--config.data.data_dir={self.data_dir}", *TINY, *flags]
        log = open(self.base / f"{name}.log", "w")
        self.procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log)

    def wait(self, name: str, expect_rc: int = 0) -> Path:
        proc, log = self.procs[name]
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
        log.close()
        output = self.output(name)
        assert rc == expect_rc, f"run {name!r} exited with {rc}, not {expect_rc}; its output ends:\n{output[-4000:]}"
        return self.workdir(name)

    def output(self, name: str) -> str:
        return (self.base / f"{name}.log").read_text()

    def stop_all(self):
        for proc, log in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = Runs(tmp_path_factory.mktemp("train_runs"))
    build_synthetic(DATASET, str(runs.data_dir))  # once, before concurrent readers
    runs.start("full")
    runs.start("dev4", "--stop_after_steps=4", devices=4)
    port = free_port()
    for i in range(2):
        runs.start(f"proc{i}", "--stop_after_steps=4", f"--coordinator_address=127.0.0.1:{port}",
                   "--num_processes=2", f"--process_id={i}", devices=2, workdir="procs")
    runs.start("exploding", "--config.optim.lr_visual=1e30", "--config.optim.warmup_epochs=2",
               "--config.optim.warmup_factor=1e-33")
    yield runs
    runs.stop_all()


@pytest.fixture(scope="module")
def second_wave(runs):
    """Runs that start from `full`'s model, or only share its compiled program."""
    full = runs.wait("full")
    base_model = full / "models" / "last"
    runs.start("killed", "--stop_after_steps=7")
    runs.start("tvilfm", f"--config.init.checkpoint={base_model}", stage="tvilfm")
    runs.start("tvilfm_clean", f"--config.init.checkpoint={base_model}", stage="tvilfm,recipe=clean")
    runs.start("evaluated", "--config.train.eval_start_epoch=2", "--config.train.eval_every_epochs=1",
               program=("-c", EVALUATED))
    runs.start("tvilfm_eval", f"--config.init.checkpoint={base_model}", "--config.train.evaluate=True",
               "--config.train.eval_start_epoch=2", "--config.train.eval_every_epochs=1", stage="tvilfm")
    return runs


# The train CLI with an evaluation hook whose Rank-1 is scripted by step: evaluation must come
# after epochs 2 and 3 (steps 8 and 12), and the tie goes to the later one.
EVALUATED = """
import functools
import numpy as np
from absl import app
from tvilfm_jax import train

RANK1 = {8: 0.5, 12: 0.5}

def make_evaluate(experiment):
    def evaluate(state):
        step = int(np.asarray(state.step.addressable_data(0)))
        return {"rank1": RANK1[step], "mAP": step / 100}
    return evaluate

app.run(functools.partial(train.main, make_evaluate=make_evaluate))
"""


def load_model(directory: Path):
    """(ModelConfig, variables as writable numpy) of a model export."""
    config, variables = artifacts.load_model(directory)
    return config, jax.tree_util.tree_map(np.array, variables)


def records(workdir: Path, kind: str) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def best_in_meta(workdir: Path) -> dict:
    """The best evaluation so far as the last checkpoint's meta records it; the train state of
    that step is not kept apart (only its model export, models/best)."""
    assert not (workdir / "best").exists()
    last = max(int(p.name) for p in (workdir / "checkpoints").iterdir())
    return json.loads((workdir / "checkpoints" / str(last) / "meta" / "metadata").read_text())["best"]


def saved_state(workdir: Path, step: int) -> dict:
    """params + batch_stats of a training checkpoint (written on any device count), as numpy."""
    path = workdir / "checkpoints" / str(step) / "state"
    checkpointer = ocp.StandardCheckpointer()
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                                      checkpointer.metadata(path).item_metadata.tree)
    tree = checkpointer.restore(path, abstract)
    return {k: _numpy(tree[k]) for k in ("params", "batch_stats")}


def _numpy(tree):
    return {k: _numpy(v) for k, v in tree.items()} if isinstance(tree, dict) else np.asarray(tree)


def flat(tree, prefix=""):
    if isinstance(tree, dict):
        return {k2: v2 for k, v in tree.items() for k2, v2 in flat(v, f"{prefix}{k}/").items()}
    return {prefix.rstrip("/"): np.asarray(tree)}


def assert_same_training_state(a, b, what):
    """Equal up to fp32 reduction-order noise after a few Adam steps.

    Adam divides each gradient element by its own running RMS, so an element whose gradient is
    ~0 turns that noise into a step of up to lr: a handful of elements may differ by a fraction of
    one step (1e-3 here), everything else agrees to ~1e-7. How many such elements there are
    depends on the data (seen: 0.01% of them), so up to 0.1% may; a real difference (per-device
    BN statistics, a dropped gradient shard, another batch) moves most elements by O(lr).
    """
    fa, fb = flat(a["params"]), flat(b["params"])
    assert fa.keys() == fb.keys()
    diff = np.concatenate([np.abs(fa[k] - fb[k]).ravel() for k in fa])
    scale = np.concatenate([np.abs(fb[k]).ravel() for k in fa])
    loose = diff > 1e-6 + 1e-5 * scale
    assert diff.max() <= 1e-3, f"{what}: params differ by up to {diff.max():.3g}"
    assert loose.sum() <= diff.size // 1_000, f"{what}: {loose.sum()} of {diff.size} params differ beyond fp32 noise"
    assert_trees_close(a["batch_stats"], b["batch_stats"], 1e-3, 1e-5, f"{what}: batch_stats")


def assert_trees_close(a, b, rtol, atol, what):
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_allclose(fa[k], fb[k], rtol=rtol, atol=atol, err_msg=f"{what}: {k}")


def test_cli_run_writes_config_metrics_checkpoints_and_model(runs):
    full = runs.wait("full")
    config = json.loads((full / "config.json").read_text())
    assert config["stage"] == "base" and config["data"]["name"] == DATASET
    run = json.loads((full / "run.json").read_text())
    assert (run["num_classes"], run["steps_per_epoch"], run["total_steps"], run["devices"]) == (4, 4, TOTAL, 1)
    train = records(full, "train")
    assert [r["step"] for r in train] == list(range(1, TOTAL + 1))
    assert all(set(r) >= {"loss", "id", "wrt", "acc", "lr", "images_per_sec"} for r in train)
    assert all(np.isclose(r["loss"], r["id"] + r["wrt"], rtol=1e-6) for r in train)
    assert [r["step"] for r in records(full, "epoch")] == [4, 8, 12]
    assert list((full / "tensorboard").iterdir())
    assert sorted(int(p.name) for p in (full / "checkpoints").iterdir()) == [4, 6, 8, 12]
    config, variables = load_model(full / "models" / "last")
    assert (config.num_classes, config.resnet_width, config.backup) == (4, 8, False)
    assert_trees_close(variables, saved_state(full, TOTAL), 0, 0, "export vs last checkpoint")
    assert f"finished {TOTAL} steps" in runs.output("full")


def test_short_run_reduces_the_loss(runs):
    epochs = records(runs.wait("full"), "epoch")
    first, last = epochs[0]["loss"], epochs[-1]["loss"]
    assert last < 0.9 * first, [round(e["loss"], 3) for e in epochs]


def test_one_and_four_devices_take_the_same_steps(runs):
    full, dev4 = runs.wait("full"), runs.wait("dev4")
    assert json.loads((dev4 / "run.json").read_text())["devices"] == 4
    one = [r["loss"] for r in records(full, "train")[:4]]
    four = [r["loss"] for r in records(dev4, "train")]
    np.testing.assert_allclose(four, one, rtol=2e-5)
    assert_same_training_state(saved_state(dev4, 4), saved_state(full, 4), "1 vs 4 devices")
    assert not (dev4 / "models" / "last").exists()  # stopped before the end: no final export


def test_two_processes_take_the_same_steps_as_one_process(runs):
    dev4 = runs.wait("dev4")
    runs.wait("proc0"), runs.wait("proc1")
    procs = runs.workdir("procs")
    run = json.loads((procs / "run.json").read_text())
    assert (run["devices"], run["processes"]) == (4, 2)
    # Written together: one checkpoint, holding each process's input position.
    assert sorted(p.name for p in (procs / "checkpoints" / "4" / "data").glob("*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]
    np.testing.assert_allclose([r["loss"] for r in records(procs, "train")],
                               [r["loss"] for r in records(dev4, "train")], rtol=2e-5)
    assert_same_training_state(saved_state(procs, 4), saved_state(dev4, 4), "2x2 vs 1x4")


def test_killed_run_resumes_to_the_uninterrupted_result(second_wave):
    runs = second_wave
    full = runs.wait("full")
    killed = runs.wait("killed")
    assert [r["step"] for r in records(killed, "train")][-1] == 7
    assert max(int(p.name) for p in (killed / "checkpoints").iterdir()) == 6
    runs.start("resumed", workdir="killed")
    runs.wait("resumed")
    assert "resumed" in runs.output("resumed") and "at step 6 (epoch 1)" in runs.output("resumed")
    # Bitwise: same program, same restored arrays, same input stream.
    _, a = load_model(full / "models" / "last")
    _, b = load_model(killed / "models" / "last")
    assert_trees_close(b, a, 0, 0, "resumed vs uninterrupted")
    # One continuous metrics file, equal to the uninterrupted run's (timings aside).
    for kind in ("train", "epoch"):
        strip = lambda rs: [{k: v for k, v in r.items() if k != "images_per_sec"} for r in rs]  # noqa: E731
        assert strip(records(killed, kind)) == strip(records(full, kind))


def changed(a, b) -> bool:
    fa, fb = flat(a), flat(b)
    return any(not np.array_equal(fa[k], fb[k]) for k in fa)


def _visual(tree):
    return {k: v for k, v in tree.items() if k in ("visual", "gem")}


@pytest.mark.parametrize("recipe", ["paper", "clean"])
def test_stage2_trains_text_and_neck_only(second_wave, recipe):
    runs = second_wave
    name = "tvilfm" if recipe == "paper" else "tvilfm_clean"
    workdir = runs.wait(name)
    _, init = load_model(runs.wait("full") / "models" / "last")
    config, out = load_model(workdir / "models" / "last")
    assert config.backup and config.num_classes == 4
    p0, p1 = init["params"], out["params"]
    assert_trees_close(_visual(p1), _visual(p0), 0, 0, "frozen visual params")
    # Backups: the stage-1 GeM and neck, untouched.
    assert_trees_close(p1["backup_gem"], p0["gem"], 0, 0, "backup_gem")
    assert_trees_close(p1["backup_neck"], p0["neck"], 0, 0, "backup_neck")
    assert_trees_close(out["batch_stats"]["backup_neck"], init["batch_stats"]["neck"], 0, 0, "backup stats")
    for part in ("text", "neck"):
        assert changed(p1[part], p0[part]), f"{part} did not train"
    visual_stats_moved = changed(out["batch_stats"]["visual"], init["batch_stats"]["visual"])
    # paper: the frozen encoder's BN statistics drift as in the original; clean: they stay.
    assert visual_stats_moved == (recipe == "paper")
    train = records(workdir, "train")
    assert len(train) == TOTAL and all(np.isfinite(r["loss"]) for r in train)
    assert train[0]["lr"] == pytest.approx(1e-4)  # lr_txt, no warmup


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(runs):
    workdir = runs.wait("exploding", expect_rc=1)
    output = runs.output("exploding")
    found = re.search(r"error: (loss is (?:nan|inf|-inf)|the parameters, optimizer state or BN statistics are inf/NaN "
                      r"\(loss \S+\)) at step (\d+) \(epoch 1;.*The last good checkpoint, step (\d+), stays in (\S+);",
                      output)
    assert found, output[-2000:]
    bad_step, kept = int(found.group(2)), int(found.group(3))
    assert bad_step > STEPS_PER_EPOCH and found.group(4) == str(workdir / "checkpoints")
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())[-1] == kept == STEPS_PER_EPOCH
    assert all(np.isfinite(v).all() for v in flat(saved_state(workdir, kept)).values())
    assert max(r["step"] for r in records(workdir, "train")) < bad_step  # no non-finite record either
    assert not (workdir / "models").exists()



def test_evaluation_hook_schedule_and_best_checkpoint(second_wave):
    runs = second_wave
    workdir = runs.wait("evaluated")
    evals = records(workdir, "eval")
    assert [(r["step"], r["epoch"], r["rank1"], r["mAP"]) for r in evals] == [(8, 1, 0.5, 0.08), (12, 2, 0.5, 0.12)]
    assert best_in_meta(workdir)["step"] == 12  # ties go to the later epoch
    config, best = load_model(workdir / "models" / "best")
    assert_trees_close(best, saved_state(workdir, 12), 0, 0, "best export vs step-12 checkpoint")
    assert not (runs.wait("full") / "models" / "best").exists()  # no evaluation, no best model


def test_training_runs_the_evaluator_and_keeps_the_best_model(second_wave):
    runs = second_wave
    workdir = runs.wait("tvilfm_eval")
    evals = records(workdir, "eval")
    assert [(r["step"], r["epoch"]) for r in evals] == [(8, 1), (12, 2)]
    for r in evals:
        for modality in ("ir", "text", "fusion", "mer"):
            assert 0.0 <= r[f"{modality}/R1"] <= r[f"{modality}/R10"] <= 100.0
            assert 0.0 < r[f"{modality}/mAP"] <= 100.0
        assert r["rank1"] == r["mer/R1"]  # MER is the main stage-2 number, as the original's CAT_EVAL
    # ... but the paper recipe keeps the best Fusion R1, as the official stage-2 script.
    best_step = max(evals, key=lambda r: (r["fusion/R1"], r["step"]))["step"]
    assert best_in_meta(workdir)["step"] == best_step
    assert "best model so far by fusion/R1" in runs.output("tvilfm_eval")
    config, best = load_model(workdir / "models" / "best")
    assert config.backup
    assert_trees_close(best, saved_state(workdir, best_step), 0, 0, "best export vs its checkpoint")
    # TensorBoard: the config as hparams once, the CMC figure at each evaluation.
    values = [(e.step, v) for e in tensorboard_events(workdir / "tensorboard") for v in e.summary.value]
    assert [v.tag for _, v in values if v.tag.startswith("_hparams_/")] == [
        "_hparams_/experiment", "_hparams_/session_start_info"]
    assert [step for step, v in values if v.tag == "eval/cmc" and v.image.width > 0] == [8, 12]
