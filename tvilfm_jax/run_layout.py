"""The run directory (workdir) of a training run: every name in it, written down once.

    <workdir>/
      config.json                the experiment config (`ConfigDict.to_json`); a resume compares it
      run.json                   what was derived from it: model config, steps, global batch, devices
      config_changes.jsonl       one JSON line per resume that was allowed to change the config
      train.lock, train.lock.<i> the advisory lock process 0 (process i) holds while it trains
      metrics.jsonl              train / epoch / eval records (`training/logging.py`)
      tensorboard/               the same scalars for TensorBoard, the config as hparams, CMC figures
      checkpoints/<step>/        resumable train state: the last `train.keep_checkpoints` steps
                                 (`training/checkpointing.py`; `evaluate --step <step>` scores one)
      checkpoints_damaged/<step>/  checkpoints found damaged on resume, set aside
      models/last/               model artifact (`artifacts.py`: model.json + variables/) written at
                                 the end of training: what a stage-2 run (`init.checkpoint`) or an
                                 evaluation loads
      models/best/               model artifact of the best evaluation by `train.best_metric`
      eval/                      `python -m tvilfm_jax.evaluate --workdir`'s report, by default

The layout before `models/` (exports in `variables/last` and `variables/best`, each with its
config in a `config.json`, and the best train state in `best/<step>/`) is refused by training and
evaluation alike (`old_layout_problem` says how to move it).

Names and paths only: this module imports nothing of the package, so train, evaluate and the
demo all read it.
"""

from __future__ import annotations

import os

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
CONFIG_CHANGES_FILE = "config_changes.jsonl"
LOCK_FILE = "train.lock"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"
MODELS_DIR = "models"
# models/last: the end of training; models/best: the best evaluation so far.
MODELS = ("last", "best")
EVAL_DIR = "eval"
# Folders only the layout before models/ has: variables/{last,best} exports, best/<step> states.
OLD_DIRS = ("variables", "best")


def path(workdir: str | os.PathLike, name: str) -> str:
    """workdir/name for one of the names above."""
    return os.path.join(os.fspath(workdir), name)


def lock_path(workdir: str | os.PathLike, process: int = 0) -> str:
    """The lock file of process index `process` (train.lock for 0, train.lock.<i> for i > 0)."""
    return path(workdir, LOCK_FILE if process == 0 else f"{LOCK_FILE}.{process}")


def model_dir(workdir: str | os.PathLike, which: str) -> str:
    """workdir/models/<which>, the model artifact a run exports ("last" or "best")."""
    if which not in MODELS:
        raise ValueError(f"which must be one of {MODELS}, got {which!r}")
    return os.path.join(os.fspath(workdir), MODELS_DIR, which)


def old_layout_problem(workdir: str | os.PathLike) -> str | None:
    """The one-line refusal of a workdir in the layout before models/ (None: not one)."""
    workdir = os.fspath(workdir)
    found = [name for name in OLD_DIRS if os.path.isdir(os.path.join(workdir, name))]
    if not found:
        return None
    return (f"{workdir} is a run directory in the old layout (it has {' and '.join(n + '/' for n in found)}): "
            f"move variables/ to {MODELS_DIR}/, rename {MODELS_DIR}/*/config.json to model.json and delete best/ "
            f"(cd {workdir} && mv variables {MODELS_DIR} && for m in {MODELS_DIR}/*/; do mv $m/config.json "
            f"$m/model.json; done; rm -rf best), or pick another workdir")
