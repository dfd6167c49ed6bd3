"""Training the stages of one experiment in one folder, as the demo and the sweep run them.

    last, reused = train_stages([base_config, tvilfm_config], root)
    # root/base: stage 1; root/tvilfm: stage 2 from root/base/models/last

A stage whose workdir holds a finished run of exactly its config (a complete models/last
export) is reused; an interrupted one, or one killed while exporting, resumes from its last
checkpoint (`loop.run`); a finished run of another config is refused (`loop.WorkdirError`),
since retraining it would overwrite what was asked to be kept. No evaluation during training:
the callers score the final models/last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from tvilfm_jax import artifacts, run_layout
from tvilfm_jax.training import loop
from tvilfm_jax.training.config import config_changes


def is_finished(config, workdir: Path) -> bool:
    """Whether `workdir` holds a finished run of exactly `config` (a complete models/last export);
    `loop.WorkdirError` when it holds a finished run of another config."""
    last = Path(run_layout.model_dir(workdir, "last"))
    if not artifacts.is_complete(last):
        if last.exists():
            print(f"stage {config.stage}: the export {last} is incomplete (stopped while writing it); "
                  "resuming the run to write it again")
        return False
    stored = json.loads((workdir / run_layout.CONFIG_FILE).read_text())
    changed = config_changes(stored, json.loads(config.to_json()))
    if changed:
        raise loop.WorkdirError(f"{workdir} holds a finished run of another config (differs in {', '.join(changed)}); "
                                "delete it to retrain, or pick another workdir")
    return True


def train_stage(config, workdir: Path) -> tuple[Path, bool]:
    """Trains (or resumes, or reuses) one stage in `workdir`; returns (its models/last export,
    whether a finished run was reused)."""
    last = Path(run_layout.model_dir(workdir, "last"))
    if is_finished(config, workdir):
        print(f"stage {config.stage}: reusing the finished run in {workdir}")
        return last, True
    t0 = time.time()
    loop.run(config, str(workdir))
    print(f"stage {config.stage}: trained in {time.time() - t0:.0f} s -> {last}")
    return last, False


def train_stages(configs: Sequence, root: Path) -> tuple[Path, bool]:
    """Trains the stage configs in order, each in root/<its stage>; a stage after the first
    starts from the previous stage's models/last (`init.checkpoint`, set here). Returns (the
    last stage's models/last, whether every stage was reused)."""
    last, reused = None, True
    for config in configs:
        if last is not None:
            config.init.checkpoint = str(last.resolve())  # an existing key: the locked tree allows it
        last, stage_reused = train_stage(config, root / config.stage)
        reused = reused and stage_reused
    return last, reused
