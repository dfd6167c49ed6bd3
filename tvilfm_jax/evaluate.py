"""`python -m tvilfm_jax.evaluate --config configs/sysu.py:stage=tvilfm --checkpoint CKPT [--output DIR]`.

Scores a model on every protocol of the configured dataset (SYSU all + indoor, RegDB t->v and
v->t, LLCM i->v and v->i) for the query modalities IR / Text / Fusion / MER, the text sources
and TTA variants of the config (`tvilfm_jax.eval.settings.settings_from_config`), and writes
report.json, report.md and PNG figures. A stage-1 model (backup=false in its model.json) is
refused Text / Fusion / MER queries: its text tower was never trained. The logic lives in
`tvilfm_jax.eval.runner`; this module is flags and wiring.

    --checkpoint DIR     a model directory (model.json + variables/, e.g. from convert)
    --workdir DIR        or a training run: its models/<--which> export (best | last)
    --step N             with --workdir: the model of the train state kept at step N
                         (<workdir>/checkpoints/N) instead of an export
    --dataset_root DIR   read the test images from this dataset tree instead of the TFDS
                         records config.data.name names (same layout)
    --output DIR         report folder (default: <checkpoint or workdir>/eval)
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from tvilfm_jax import cli, run_layout
from tvilfm_jax.training.config import exit_on_unknown_override

_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "experiment config file[:arg] (required), e.g. configs/sysu.py",
                                          lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "model directory (model.json + variables/)")
_WORKDIR = flags.DEFINE_string("workdir", None, "training run directory (evaluates its models/<which> export)")
_WHICH = flags.DEFINE_enum("which", "best", list(run_layout.MODELS), "which export of --workdir")
_STEP = flags.DEFINE_integer("step", None, "evaluate the train-state checkpoint <workdir>/checkpoints/<step> of "
                             "--workdir instead of its models/<which> export")
_DATASET_ROOT = flags.DEFINE_string("dataset_root", None, "dataset tree to read instead of the TFDS records")
_OUTPUT = flags.DEFINE_string("output", None, "report directory (default: <checkpoint or workdir>/eval)")
_PROGRESS = flags.DEFINE_bool("progress", True, "show progress bars")


def main(argv: list[str]) -> None:
    """argv: absl's, the program name only (`parse_flags` refuses positional arguments)."""
    del argv
    if _CONFIG.value is None:
        cli.fail("--config is required (e.g. --config configs/sysu.py:stage=tvilfm)")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax and tfds log every file they touch at INFO
    from tvilfm_jax.eval import runner

    config = _CONFIG.value
    if _STEP.value is not None and (_WORKDIR.value is None or _CHECKPOINT.value is not None
                                    or flags.FLAGS["which"].present):
        cli.fail("--step N evaluates the checkpoint <workdir>/checkpoints/N of a training run: pass it with "
                 "--workdir, and without --checkpoint or --which")
    from tvilfm_jax.training.checkpointing import CheckpointError, load_step_model

    try:  # bad input (a missing checkpoint, a config asking the impossible, unreadable test data): one line
        if _STEP.value is not None:
            model_config, variables, described = load_step_model(_WORKDIR.value, _STEP.value)
        else:
            model_config, variables, described = runner.load_model(_CHECKPOINT.value, workdir=_WORKDIR.value,
                                                                   which=_WHICH.value)
        runner.require_trained_text(model_config, runner.settings_from_config(config), described)
        if _DATASET_ROOT.value is None and config.get("data", {}).get("build_synthetic", False):
            from tfds_builders.prepare import ensure_built

            ensure_built(config.data)
        test = runner.load_test_set(config, _DATASET_ROOT.value)
    except (OSError, ValueError, CheckpointError) as err:
        cli.fail(err)
    output = _OUTPUT.value or os.path.join(_CHECKPOINT.value or _WORKDIR.value, run_layout.EVAL_DIR)
    runner.evaluate_and_report(config, model_config, variables, output, checkpoint=described, test=test,
                               progress=_PROGRESS.value)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (`cli.parse`), with a one-line error for a misspelt --config.<key> too."""
    with exit_on_unknown_override():
        return cli.parse(argv, flags.FLAGS, __doc__)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
