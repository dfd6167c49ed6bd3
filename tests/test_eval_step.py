"""`python -m tvilfm_jax.evaluate --workdir W --step N`: the model of a kept train-state checkpoint.

One tiny stage-1 run (1 epoch of 4 steps on `synthetic/sysu_tiny`, checkpoints at steps 2 and 4,
the trainer's evaluation after the epoch), trained once in this process; the evaluate CLI runs as
a user starts it (a subprocess). The run's TensorBoard events are checked here too.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from tvilfm_jax import artifacts
from tvilfm_jax.eval import runner
from tvilfm_jax.training import loop
from tvilfm_jax.training.checkpointing import load_step_model

from test_faults_runs import SYNTHETIC, cli, one_line_error, tiny_flags
from test_train_config import load as load_config
from test_train_config import tensorboard_events

pytestmark = pytest.mark.slow  # the fixture trains (~70 s on a shared 2-core CPU)

# Checkpoints at step 2 and the epoch end (4); the trainer's evaluation after epoch 1.
STEPS = ["--config.train.checkpoint_every_steps=2", "--config.train.eval_start_epoch=1",
         "--config.train.eval_every_epochs=1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, sysu_tiny):
    """(workdir, evaluate CLI flags) of a finished stage-1 run keeping checkpoints 2 and 4."""
    overrides = [*tiny_flags(sysu_tiny), *STEPS]
    workdir = tmp_path_factory.mktemp("eval_step") / "run"
    loop.run(load_config(f"{SYNTHETIC}:stage=base", *overrides), str(workdir),
             make_evaluate=lambda exp: runner.make_evaluate_fn(exp.config, exp.model))
    return workdir, [f"--config={SYNTHETIC}:stage=base", *overrides, "--config.eval.batch_size=16", "--noprogress"]


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_a_kept_step_loads_the_model_training_exported(finished):
    workdir, _ = finished
    config, variables, described = load_step_model(workdir, 4)
    assert described == str(workdir / "checkpoints" / "4")
    exported_config, exported = artifacts.load_model(workdir / "models" / "last")
    assert config == exported_config
    last = _leaves(exported)
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(variables), last, strict=True))
    _, earlier, _ = load_step_model(workdir, 2)
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(earlier), last, strict=True))
    with pytest.raises(ValueError, match=r"keeps no checkpoint at step 3; kept steps: 2, 4$"):
        load_step_model(workdir, 3)
    with pytest.raises(ValueError, match="keeps no train-state checkpoints"):
        load_step_model(workdir / "tensorboard", 4)
    # The export loader is untouched by --step: the same variables.
    _, via_runner, _ = runner.load_model(workdir=workdir, which="last")
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(via_runner), last, strict=True))


def _conditions(report_dir: Path) -> list:
    return json.loads((report_dir / "report.json").read_text())["conditions"]


@pytest.mark.slow
def test_cli_step_evaluates_as_the_last_export_and_refuses_bad_flags(finished, tmp_path):
    workdir, flags = finished
    by_step = cli("tvilfm_jax.evaluate", *flags, f"--workdir={workdir}", "--step=4", f"--output={tmp_path / 'step'}")
    assert by_step.returncode == 0, by_step.stderr[-3000:]
    assert f"checkpoint: `{workdir / 'checkpoints' / '4'}`" in by_step.stdout
    by_export = cli("tvilfm_jax.evaluate", *flags, f"--workdir={workdir}", "--which=last",
                    f"--output={tmp_path / 'last'}")
    assert by_export.returncode == 0, by_export.stderr[-3000:]
    assert _conditions(tmp_path / "step") == _conditions(tmp_path / "last")

    assert one_line_error(cli("tvilfm_jax.evaluate", *flags, f"--workdir={workdir}", "--step=5")) == (
        f"error: training run {workdir} keeps no checkpoint at step 5; kept steps: 2, 4")
    usage = ("error: --step N evaluates the checkpoint <workdir>/checkpoints/N of a training run: pass it with "
             "--workdir, and without --checkpoint or --which")
    assert one_line_error(cli("tvilfm_jax.evaluate", *flags, "--step=4")) == usage
    assert one_line_error(cli("tvilfm_jax.evaluate", *flags, f"--workdir={workdir}", "--step=4",
                              f"--checkpoint={workdir / 'models' / 'last'}")) == usage


def test_the_run_logs_its_config_as_hparams_and_the_cmc_figure_of_each_evaluation(finished):
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    workdir, _ = finished
    values = [(e.step, v) for e in tensorboard_events(workdir / "tensorboard") for v in e.summary.value]
    (start,) = [v for _, v in values if v.tag == "_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(start.metadata.plugin_data.content).session_start_info.hparams
    stored = json.loads((workdir / "config.json").read_text())
    assert hparams["train.checkpoint_every_steps"].number_value == stored["train"]["checkpoint_every_steps"] == 2
    assert hparams["data.name"].string_value == stored["data"]["name"]
    (experiment,) = [v for _, v in values if v.tag == "_hparams_/experiment"]
    tags = HParamsPluginData.FromString(experiment.metadata.plugin_data.content).experiment.metric_infos
    assert [m.name.tag for m in tags] == ["epoch/loss", f"eval/{stored['train']['best_metric']}"]
    assert [step for step, v in values if v.tag == "eval/rank1"] == [4]
    (step, image), = [(step, v.image) for step, v in values if v.tag == "eval/cmc"]
    assert step == 4 and image.encoded_image_string.startswith(b"\x89PNG") and image.width > 100
