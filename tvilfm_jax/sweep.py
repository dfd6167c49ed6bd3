r"""`python -m tvilfm_jax.sweep`: one experiment over several seeds and RegDB splits, reported as mean ± std.

    python -m tvilfm_jax.sweep --config configs/regdb.py --trials 1-10 --workdir runs/regdb \
        --config.init.checkpoint=weights/regdb_init
    python -m tvilfm_jax.sweep --config configs/sysu.py --seeds 0,1,2 --workdir runs/sysu_seeds \
        --config.init.checkpoint=weights/sysu_init

Each run (a seed and, with --trials, a RegDB split: the config's `trial=` argument) trains the
--stages in ROOT/<run>/<stage> (the first from config.init.checkpoint, e.g. converted ImageNet
weights; stage 2 after stage 1 from stage 1's models/last), evaluates the last stage's
models/last on every protocol of the config (its `eval` section: text sources, TTA, gallery
trials) into ROOT/<run>/eval/report.json, and the reports are aggregated into mean ± std per
condition and query modality: ROOT/aggregate.json and ROOT/aggregate.md, printed at the end.
Runs are named seed<S> or seed<S>_trial<T>.

Running it again reuses every finished stage and its report (one that scored that model with the
same evaluation settings), and resumes an interrupted stage from its last checkpoint; a finished stage of another config is refused (delete it or pick
another --workdir). --evaluate_only trains nothing: it re-evaluates the existing runs (e.g. with
other --config.eval.* settings) and aggregates them. The model scored is the one at the end of
training (no model selection on the test set, so no evaluation during training).

    --config FILE[:ARGS]  the experiment config with its arguments (e.g. configs/synthetic.py:layout=regdb);
                          stage= and trial= are set per run; --config.<key>=<value> overrides as in train
    --seeds 0,1,2         seeds (config.seed); default: the config's
    --trials 1-10         RegDB splits (e.g. 1-10 or 1,3,5); default: the config's
    --stages base,tvilfm  the stages each run trains, in order (base alone: IR queries only)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags, logging
from ml_collections import config_flags

from tvilfm_jax import cli, run_layout
from tvilfm_jax.stages import STAGES

#: The config arguments each run sets itself.
RUN_ARGS = ("stage", "trial")


class SweepError(ValueError):
    """A sweep that cannot run as asked (flags, config arguments, missing runs)."""


def parse_ints(text: str, what: str) -> list[int]:
    """"1-3,7" -> [1, 2, 3, 7] (no duplicates); "" -> []."""
    out: list[int] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        lo, sep, hi = item.partition("-")
        try:
            values = range(int(lo), int(hi) + 1) if sep else [int(item)]
        except ValueError:
            raise SweepError(f"{what}: {item!r} is not an integer or a range like 1-10") from None
        if not values:
            raise SweepError(f"{what}: {item!r} is an empty range")
        out += [v for v in values if v not in out]
    return out


def run_name(seed: int, trial: int | None) -> str:
    return f"seed{seed}" + ("" if trial is None else f"_trial{trial}")


def load_config(spec: str, overrides: dict, stage: str, trial: int | None, seed: int | None):
    """The config file `spec` (FILE[:ARGS]) for one stage and trial, with the command line's
    overrides ({dotted key: value}) and `seed` (None: the config's) applied; SweepError when the
    config refuses its arguments."""
    from tvilfm_jax.training.config import load_config_file

    path, _, arg = spec.partition(":")
    args = [a for a in arg.split(",") if a.strip()] + [f"stage={stage}"]
    args += [] if trial is None else [f"trial={trial}"]
    try:
        config = load_config_file(f"{path}:{','.join(args)}")
    except flags.Error as err:
        # ml_collections puts the config's traceback in the message; its last line is the error.
        raise SweepError(str(err).rstrip().splitlines()[-1].split(": ", 1)[-1]) from None
    config.update_from_flattened_dict(overrides)
    if seed is not None:
        config.seed = seed
    return config


def check_request(spec: str, overrides: dict, stages: Sequence[str], seeds: Sequence[int],
                  trials: Sequence[int]) -> None:
    """Refuses what the sweep sets per run given on the command line too, and bad --stages."""
    set_in_arg = [a.split("=")[0].strip() for a in spec.partition(":")[2].split(",")]
    for key in RUN_ARGS:
        if key in set_in_arg or key in overrides:
            raise SweepError(f"--config {spec}: the sweep sets {key}= itself (--stages, --trials); drop it")
    if seeds and "seed" in overrides:
        raise SweepError("--config.seed and --seeds both set the seed: give one")
    if trials and "data.name" in overrides:
        raise SweepError("--config.data.name and --trials both choose the dataset: --trials sets it through the "
                         "config's trial= argument")
    if not stages or list(stages) != [s for s in STAGES if s in stages]:
        raise SweepError(f"--stages {','.join(stages)}: expected stages of {','.join(STAGES)}, in that order")


def reusable_report(path: Path, config, model: Path) -> dict | None:
    """The report at `path` if it scored `model` with the evaluation `config` asks for, else None."""
    from tvilfm_jax.eval.settings import settings_from_config

    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    wanted = json.loads(json.dumps(dataclasses.asdict(settings_from_config(config))))
    same = report.get("settings") == wanted and report.get("checkpoint") == os.path.abspath(model)
    return report if same else None


def run_one(name: str, configs: Sequence, root: Path, evaluate_only: bool) -> dict:
    """Trains (or reuses) one run's stages and evaluates its last stage; returns its report."""
    from tfds_builders.prepare import ensure_built
    from tvilfm_jax import artifacts
    from tvilfm_jax.eval import runner
    from tvilfm_jax.eval.report import REPORT_FILE
    from tvilfm_jax.training import stage_runs

    workdir = root / name
    final = configs[-1]
    report_path = workdir / run_layout.EVAL_DIR / REPORT_FILE
    if evaluate_only:
        last = Path(run_layout.model_dir(workdir / final.stage, "last"))
        if not artifacts.is_complete(last):
            raise SweepError(f"run {name}: no finished stage {final.stage} in {last.parent.parent} (--evaluate_only "
                             "trains nothing; run without it first)")
        ensure_built(final.data)
        reused = False
    else:
        ensure_built(final.data)
        last, reused = stage_runs.train_stages(configs, workdir)
    report = reusable_report(report_path, final, last) if reused else None
    if report is not None:
        print(f"run {name}: reusing its report {report_path}")
        return report
    model_config, variables, described = runner.load_model(last)
    result = runner.evaluate_and_report(final, model_config, variables, workdir / run_layout.EVAL_DIR,
                                        checkpoint=described, print_fn=None)
    print(f"run {name}: evaluated {described} -> {result['files']['json']}")
    return result["report"]


def run(spec: str, overrides: dict, root: str | os.PathLike, seeds: Sequence[int] = (), trials: Sequence[int] = (),
        stages: Sequence[str] = STAGES, evaluate_only: bool = False) -> dict:
    """The whole sweep; returns {"reports": {run: report}, "aggregate": table, "files": written paths}."""
    from tvilfm_jax.eval import aggregate

    check_request(spec, overrides, stages, seeds, trials)
    root = Path(root)
    plan = {}  # every run's configs first: a config refusing an argument stops the sweep before any run
    for seed in seeds or [None]:
        for trial in trials or [None]:
            configs = [load_config(spec, overrides, stage, trial, seed) for stage in stages]
            plan[run_name(configs[0].seed, trial)] = configs
    reports = {name: run_one(name, configs, root, evaluate_only) for name, configs in plan.items()}
    table = aggregate.aggregate(reports)
    files = aggregate.write(root, table)
    print(aggregate.markdown(table))
    print(f"wrote {files['json']} and {files['markdown']}")
    return {"reports": reports, "aggregate": table, "files": files}


def main(argv: Sequence[str]) -> None:
    """The sweep as `argv` (the arguments after the program name) asks."""
    from tvilfm_jax.training import config as train_config

    argv = ["tvilfm_jax.sweep", *argv]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "experiment config file[:args] (required), e.g. configs/regdb.py",
                                    flag_values=fv, lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "root folder: one sub-folder per run, aggregate.json/.md", flag_values=fv)
    flags.DEFINE_string("seeds", "", "seeds, e.g. 0,1,2 or 0-4 (default: the config's seed)", flag_values=fv)
    flags.DEFINE_string("trials", "", "RegDB splits, e.g. 1-10 (default: the config's)", flag_values=fv)
    flags.DEFINE_list("stages", list(STAGES), "stages each run trains, in order", flag_values=fv)
    flags.DEFINE_bool("evaluate_only", False, "train nothing: evaluate the existing runs and aggregate",
                      flag_values=fv)
    with train_config.exit_on_unknown_override(argv=argv):
        cli.parse(argv, fv, __doc__)
    if fv["config"].value is None or fv.workdir is None:
        cli.fail("--config and --workdir are required (e.g. --config configs/regdb.py --trials 1-10 "
                 "--workdir runs/regdb)")
    logging.set_verbosity(logging.WARNING)  # orbax and tfds log every file they touch at INFO
    from tvilfm_jax.training import loop
    from tvilfm_jax.training.checkpointing import CheckpointError

    try:
        run(config_flags.get_config_filename(fv["config"]), config_flags.get_override_values(fv["config"]),
            fv.workdir, parse_ints(fv.seeds, "--seeds"), parse_ints(fv.trials, "--trials"), fv.stages,
            fv.evaluate_only)
    except (ValueError, OSError, CheckpointError, loop.WorkdirError, loop.NonFiniteLossError) as err:
        cli.fail(err)


if __name__ == "__main__":
    main(sys.argv[1:])
