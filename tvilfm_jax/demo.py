"""`python -m tvilfm_jax.demo`: the quick-start run, end to end on the embedded synthetic default.

    python -m tvilfm_jax.demo [--workdir runs/demo] [--epochs1 N] [--epochs2 N] [--fresh]

1. builds the synthetic SYSU-MM01-layout dataset (`synthetic/sysu`, TFDS records in
   `tfds_data/`): drawn people in groups of three that infrared cannot tell apart, with BLIP-
   style captions that name the colours only the RGB cameras see;
2. trains stage 1 (the dual-stream VI-ReID base, `tvilfm_jax/configs/synthetic.py`) in <workdir>/base;
3. trains stage 2 (TVI-LFM: text tower + SFF fusion on the frozen stage-1 encoder, starting from
   <workdir>/base/models/last) in <workdir>/tvilfm;
4. evaluates the stage-2 model on SYSU all-search (10 gallery trials) for the IR, Text, Fusion
   and MER queries, with the paper's query text (`paper`: a caption of the query identity) and
   with no identity text (`ir_only`: the IR image's own caption), prints one table and writes
   the report, CMC curves and a ranking grid to <workdir>/eval.

Re-running reuses the dataset and every finished stage (one whose models/last export was
written to the end); an interrupted stage, or one killed while exporting, resumes from its last
checkpoint. Changing the epochs of a finished stage needs --fresh (or another workdir).
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from tvilfm_jax import cli

TEXT_SOURCES = ("paper", "ir_only")
MODALITIES = ("ir", "text", "fusion", "mer")
COLUMNS = ("R1", "R10", "mAP", "mINP")


def load_config(stage: str, epochs: int = 0):
    """tvilfm_jax/configs/synthetic.py for one stage; epochs=0 keeps the config's default."""
    from tvilfm_jax.configs import synthetic

    return synthetic.get_config(f"stage={stage}" + (f",epochs={epochs}" if epochs else ""))


def evaluate(config, checkpoint: Path, output: Path) -> dict:
    """Scores the stage-2 model on SYSU all-search for both text sources; returns
    `eval.runner.evaluate_and_report`'s result (report, written files, flat metrics)."""
    from tvilfm_jax.eval import runner

    config = copy.deepcopy(config)  # existing keys only: the locked tree allows it
    config.eval.protocols = ("sysu-all",)
    config.eval.text_sources = TEXT_SOURCES
    config.eval.modalities = MODALITIES
    config.eval.trials = ()  # all ten
    model_config, variables, described = runner.load_model(checkpoint)
    return runner.evaluate_and_report(config, model_config, variables, output, checkpoint=described,
                                      print_fn=None)


def table(report: dict) -> tuple[str, dict]:
    """The demo's table (one row per text source and query; each column mean ± std over the
    trials) and its numbers: {text_source: {modality: {"R1", "R10", "mAP", "mINP"}}} in percent
    (mean of the trials)."""
    from tvilfm_jax.eval.settings import MODALITY_NAMES

    numbers = {}
    lines = [f"{'query text':<10s} {'query':<12s}" + "".join(f"{c + ' ± std':>16s}" for c in COLUMNS)]
    for condition in report["conditions"]:
        source = condition["text_source"]
        numbers[source] = {}
        for modality, row in condition["results"].items():
            numbers[source][modality] = {c: row["mean"][c] for c in COLUMNS}
            lines.append(f"{source:<10s} {MODALITY_NAMES[modality] + '->RGB':<12s}"
                         + "".join(f"{row['mean'][c]:9.2f} ± {row['std'][c]:4.2f}" for c in COLUMNS))
    return "\n".join(lines), numbers


def run(workdir: str | os.PathLike = "runs/demo", epochs1: int = 0, epochs2: int = 0, fresh: bool = False) -> dict:
    """The whole demo; returns {"numbers": see `table`, "files": written report files,
    "seconds": wall time}."""
    from absl import logging as absl_logging

    from tfds_builders.prepare import ensure_built
    from tvilfm_jax.training import stage_runs

    start = time.time()
    workdir = Path(workdir)
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    base_cfg = load_config("base", epochs1)
    tvilfm_cfg = load_config("tvilfm", epochs2)

    t0 = time.time()
    # TFDS warns that the dataset folder it is about to build has no metadata yet: not news here.
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        ensure_built(base_cfg.data)
    finally:
        absl_logging.set_verbosity(verbosity)
    print(f"dataset {base_cfg.data.name} ready in {base_cfg.data.data_dir}/ ({time.time() - t0:.0f} s)")

    tvilfm_last, _ = stage_runs.train_stages([base_cfg, tvilfm_cfg], workdir)

    t0 = time.time()
    result = evaluate(tvilfm_cfg, tvilfm_last, workdir / "eval")
    text, numbers = table(result["report"])
    seconds = time.time() - start
    files = result["files"]
    cmc = [f for f in files["figures"] if Path(f).name.startswith("cmc_")]
    ranking = [f for f in files["figures"] if Path(f).name.startswith("ranking_")]
    print(f"\nevaluated in {time.time() - t0:.0f} s: SYSU-MM01-style all-search, IR queries -> RGB gallery, "
          f"mean ± std over 10 gallery trials, percent")
    print(text)
    print("\n`paper`: the query's text is an RGB caption of its identity, as in the paper; `ir_only`: only the IR "
          "image's own caption (no colours).")
    print(f"report:        {files['markdown']} (and report.json)")
    print(f"CMC curves:    {', '.join(cmc)}")
    print(f"ranking grids: {', '.join(ranking)}")
    print(f"demo finished in {seconds / 60:.1f} min")
    return {"numbers": numbers, "files": files, "seconds": seconds}


def main(argv: Sequence[str]) -> None:
    """The demo as `argv` (the arguments after the program name) asks."""
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", "runs/demo", "where the runs and the report go", flag_values=fv)
    flags.DEFINE_integer("epochs1", 0, "stage-1 epochs (0: the config's)", flag_values=fv)
    flags.DEFINE_integer("epochs2", 0, "stage-2 epochs (0: the config's)", flag_values=fv)
    flags.DEFINE_bool("fresh", False, "delete the workdir's runs first", flag_values=fv)
    cli.parse(["tvilfm_jax.demo", *argv], fv, __doc__)
    from tvilfm_jax.training import loop

    try:
        run(fv.workdir, fv.epochs1, fv.epochs2, fv.fresh)
    except (ValueError, loop.WorkdirError) as err:
        cli.fail(err)


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main(sys.argv[1:])
