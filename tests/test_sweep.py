"""The sweep over seeds and RegDB splits (`tvilfm_jax.sweep`) and its mean ± std tables
(`tvilfm_jax.eval.aggregate`): the aggregation on hand-made reports, the refusals, and the CLI
end to end on small synthetic RegDB data (two seeds through both stages, run again to reuse what
is finished and re-evaluated; two splits of stage 1).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tvilfm_jax import sweep
from tvilfm_jax.configs import synthetic
from tvilfm_jax.data import datasets
from tvilfm_jax.eval import aggregate

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "configs" / "synthetic.py"


def _report(numbers: dict, dataset: str = "synthetic/sysu") -> dict:
    """A report.json dict as `eval.report.build_report` writes it, reduced to what is aggregated:
    numbers {condition key: {modality: {metric: mean}}}."""
    conditions = []
    for key, by_modality in numbers.items():
        protocol, source, tta = key.split("/")
        conditions.append({"key": key, "protocol": protocol, "label": f"{protocol} {source} {tta}",
                           "text_source": source, "tta": "flip" if tta == "flip" else "none", "direction": "IR->RGB",
                           "results": {m: {"metric": "sysu", "mean": {**values, "cmc": [0.0] * 20}, "trials": []}
                                       for m, values in by_modality.items()}})
    return {"dataset": dataset, "units": "percent", "conditions": conditions}


def _metrics(r1: float, map_: float) -> dict:
    return {"R1": r1, "R5": r1 + 10, "R10": r1 + 20, "R20": r1 + 30, "mAP": map_, "mINP": map_ / 2}


ALL, INDOOR = "sysu-all/paper/noflip", "sysu-indoor/ir_only/flip"


def test_aggregate_is_the_mean_and_sample_std_over_runs():
    reports = {f"seed{i}": _report({ALL: {"ir": _metrics(r1, m), "mer": _metrics(2 * r1, m + 1)},
                                    INDOOR: {"ir": _metrics(r1 + 1, m)}})
               for i, (r1, m) in enumerate([(10.0, 20.0), (12.0, 26.0), (17.0, 29.0)])}
    table = aggregate.aggregate(reports)
    assert table["n"] == 3 and table["runs"] == ["seed0", "seed1", "seed2"]
    assert [c["key"] for c in table["conditions"]] == [ALL, INDOOR]
    ir = table["conditions"][0]["results"]["ir"]
    assert ir["mean"]["R1"] == pytest.approx(13.0, abs=1e-12)
    # sample std of 10, 12, 17: sqrt((9 + 1 + 16) / 2)
    assert ir["std"]["R1"] == pytest.approx(math.sqrt(13.0), abs=1e-12)
    assert ir["mean"]["R20"] == pytest.approx(43.0, abs=1e-12) and ir["std"]["R20"] == pytest.approx(ir["std"]["R1"])
    assert ir["mean"]["mAP"] == pytest.approx(25.0, abs=1e-12)
    assert ir["std"]["mAP"] == pytest.approx(math.sqrt((25 + 1 + 16) / 2), abs=1e-12)
    assert ir["mean"]["mINP"] == pytest.approx(12.5, abs=1e-12)
    assert table["conditions"][0]["results"]["mer"]["mean"]["R1"] == pytest.approx(26.0, abs=1e-12)
    assert ir["runs"]["seed1"]["R1"] == 12.0 and set(ir) == {"metric", "mean", "std", "runs"}
    assert table["conditions"][1]["results"]["ir"]["mean"]["R1"] == pytest.approx(14.0, abs=1e-12)
    assert table["conditions"][1]["tta"] == "flip" and table["conditions"][1]["text_source"] == "ir_only"
    json.dumps(table)  # JSON-ready


def test_a_single_run_has_no_std_and_the_markdown_says_so(tmp_path):
    table = aggregate.aggregate({"seed0": _report({ALL: {"ir": _metrics(10.0, 20.0)}})})
    assert table["n"] == 1 and table["conditions"][0]["results"]["ir"]["std"]["R1"] is None
    paths = aggregate.write(tmp_path, table)
    assert json.loads(Path(paths["json"]).read_text()) == table
    md = Path(paths["markdown"]).read_text()
    assert "| SYSU-MM01 all-search IR->RGB | paper | none | IR | sysu | 1 | 10.00 | 20.00 |" in md
    assert "±" not in md.split("| --- |")[-1]


def test_markdown_shows_mean_plus_minus_std_per_metric(tmp_path):
    reports = {"a": _report({ALL: {"fusion": _metrics(10.0, 20.0)}}),
               "b": _report({ALL: {"fusion": _metrics(12.0, 22.0)}})}
    md = aggregate.markdown(aggregate.aggregate(reports))
    assert md.startswith("# Mean ± std over 2 runs")
    assert ("| SYSU-MM01 all-search IR->RGB | paper | none | Fusion | sysu | 2 | 11.00 ± 1.41 | 21.00 ± 1.41 | "
            "31.00 ± 1.41 | 41.00 ± 1.41 | 21.00 ± 1.41 | 10.50 ± 0.71 |") in md


def test_a_run_missing_a_modality_or_condition_is_an_error_naming_it():
    full = _report({ALL: {"ir": _metrics(10.0, 20.0), "text": _metrics(11.0, 21.0)}})
    no_text = _report({ALL: {"ir": _metrics(12.0, 22.0)}})
    with pytest.raises(ValueError, match=f"run seed1_trial2: its report has no text results for {ALL} "
                                         r"\(it has ir\)"):
        aggregate.aggregate({"seed1_trial1": full, "seed1_trial2": no_text})
    other = _report({INDOOR: {"ir": _metrics(12.0, 22.0), "text": _metrics(1.0, 2.0)}})
    with pytest.raises(ValueError, match=f"run b: its report has no condition {ALL} \\(it has {INDOOR}\\)"):
        aggregate.aggregate({"a": full, "b": other})
    with pytest.raises(ValueError, match="run b: not an evaluation report"):
        aggregate.aggregate({"a": full, "b": {"dataset": "x"}})
    with pytest.raises(ValueError, match="no reports"):
        aggregate.aggregate({})


def test_parse_ints_takes_lists_and_ranges():
    assert sweep.parse_ints("1-10", "--trials") == list(range(1, 11))
    assert sweep.parse_ints("0, 2,1-3", "--seeds") == [0, 2, 1, 3]
    assert sweep.parse_ints("", "--seeds") == []
    with pytest.raises(ValueError, match="--trials: 'x' is not an integer"):
        sweep.parse_ints("1,x", "--trials")
    with pytest.raises(ValueError, match="--trials: '3-1' is an empty range"):
        sweep.parse_ints("3-1", "--trials")


@pytest.mark.parametrize("spec, overrides, stages, seeds, trials, message", [
    ("c.py:stage=base", {}, ["base"], [], [], "the sweep sets stage= itself"),
    ("c.py:layout=regdb,trial=2", {}, ["base"], [], [1], "the sweep sets trial= itself"),
    ("c.py", {"stage": "tvilfm"}, ["base"], [], [], "the sweep sets stage= itself"),
    ("c.py", {"seed": 3}, ["base"], [0, 1], [], "--config.seed and --seeds both set the seed"),
    ("c.py", {"data.name": "regdb/trial1"}, ["base"], [], [1, 2], "--config.data.name and --trials"),
    ("c.py", {}, ["tvilfm", "base"], [], [], "expected stages of base,tvilfm, in that order"),
    ("c.py", {}, ["bse"], [], [], "expected stages of base,tvilfm"),
])
def test_what_the_sweep_sets_per_run_is_refused_on_the_command_line(spec, overrides, stages, seeds, trials, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.check_request(spec, overrides, stages, seeds, trials)


def _fails(args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(args)
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_cli_bad_input_is_one_line_before_anything_is_written(tmp_path):
    root = tmp_path / "root"
    assert "--config and --workdir are required" in _fails([f"--workdir={root}"])
    assert "config argument 'trial=1': expected key=value with key in" in _fails(
        [f"--config={ROOT / 'configs/sysu.py'}", "--trials=1,2", f"--workdir={root}"])
    assert "RegDB has trials 1..10" in _fails([f"--config={ROOT / 'configs/regdb.py'}", "--trials=10-11",
                                               f"--workdir={root}"])
    assert "--config.optim.lr_visul: config.optim has no key 'lr_visul'; did you mean 'lr_visual'?" in _fails(
        [f"--config={SYNTHETIC}", "--config.optim.lr_visul=1", f"--workdir={root}"])
    assert f"run seed1: no finished stage tvilfm in {root / 'seed1'}" in _fails(
        [f"--config={SYNTHETIC}", "--evaluate_only", f"--workdir={root}"])
    assert not root.exists()


def test_the_synthetic_config_selects_regdb_splits():
    assert synthetic.get_config("layout=regdb,trial=2").data.name == "synthetic/regdb_trial2"
    assert synthetic.get_config("layout=regdb,trial=1").data.name == "synthetic/regdb"
    assert datasets.layout_of("synthetic/regdb_tiny_trial7") == ("regdb", 7)
    assert datasets.layout_of("synthetic/regdb_tiny") == ("regdb", 1)
    with pytest.raises(ValueError, match="config argument trial=2: synthetic sysu: trial=2; only RegDB has splits"):
        synthetic.get_config("layout=sysu,trial=2")


# --- end to end --------------------------------------------------------------------------------

# On the synthetic RegDB layout (24 training ids, 240 images per modality: 31 steps per epoch at
# P=4, K=2); both tests train the same programs, which the compilation cache shares.
REGDB = f"{SYNTHETIC}:layout=regdb"
TINY = [
    "--config.data.image_size=(32, 16)",
    "--config.data.ids_per_batch=4",
    "--config.data.images_per_id=2",
    "--config.model.resnet_width=8",
    "--config.model.text_width=32",
    "--config.optim.warmup_epochs=0",
    "--config.train.num_epochs=1",
]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Runs the sweep CLI as a user starts it; the runs share compiled programs through a
    persistent compilation cache (a fixed PYTHONHASHSEED, so each process traces the same program)."""
    base = tmp_path_factory.mktemp("sweep")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="2",
               JAX_COMPILATION_CACHE_DIR=str(base / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")

    def run(*args: str) -> str:
        """The sweep of the synthetic RegDB config (--config comes before its overrides), tiny settings."""
        proc = subprocess.run([sys.executable, "-m", "tvilfm_jax.sweep", f"--config={REGDB}",
                               f"--config.data.data_dir={base / 'tfds'}", *TINY, *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    return base, run


def _means(report: dict) -> dict:
    return {c["key"]: {m: r["mean"] for m, r in c["results"].items()} for c in report["conditions"]}


@pytest.mark.slow
def test_two_seeds_through_both_stages_then_reused_then_reevaluated(cli):
    base, run = cli
    root = base / "seeds"
    args = ["--seeds=0,1", f"--workdir={root}"]
    out = run(*args)
    reports = {s: json.loads((root / s / "eval" / "report.json").read_text()) for s in ("seed0", "seed1")}
    for s, report in reports.items():
        assert (root / s / "base" / "models" / "last" / "model.json").is_file()
        assert report["checkpoint"] == str(root / s / "tvilfm" / "models" / "last")
        assert json.loads((root / s / "base" / "config.json").read_text())["seed"] == int(s[-1])
        assert json.loads((root / s / "tvilfm" / "config.json").read_text())["init"]["checkpoint"] == str(
            root / s / "base" / "models" / "last")
    table = json.loads((root / "aggregate.json").read_text())
    assert table["runs"] == ["seed0", "seed1"] and table["n"] == 2
    means = {s: _means(r) for s, r in reports.items()}
    assert set(means["seed0"]) == {"regdb-t2v/paper/noflip", "regdb-v2t/paper/noflip"}
    # MER is scored for IR queries only (t2v), the others both ways.
    assert [list(c["results"]) for c in table["conditions"]] == [["ir", "text", "fusion", "mer"],
                                                                ["ir", "text", "fusion"]]
    for c in table["conditions"]:
        for modality, r in c["results"].items():
            for metric in aggregate.METRICS:
                a, b = (means[s][c["key"]][modality][metric] for s in ("seed0", "seed1"))
                assert r["mean"][metric] == pytest.approx((a + b) / 2, abs=1e-9)
                assert r["std"][metric] == pytest.approx(abs(a - b) / math.sqrt(2), abs=1e-9)
    assert (root / "aggregate.md").read_text() in out
    assert out.count("stage base: trained in") == 2 and out.count("stage tvilfm: trained in") == 2

    again = run(*args)
    assert again.count("stage base: reusing the finished run") == 2
    assert again.count("stage tvilfm: reusing the finished run") == 2
    assert again.count("reusing its report") == 2 and "trained in" not in again
    assert json.loads((root / "aggregate.json").read_text()) == table

    # Other evaluation settings on the same models: nothing is trained.
    other = run(*args, "--evaluate_only", "--config.eval.text_sources=('ir_only',)",
                "--config.eval.protocols=('regdb-t2v',)")
    assert "trained in" not in other and other.count("run seed") == 2
    assert [c["key"] for c in json.loads((root / "aggregate.json").read_text())["conditions"]] == [
        "regdb-t2v/ir_only/noflip"]


@pytest.mark.slow
def test_two_synthetic_regdb_splits_of_stage_one(cli):
    base, run = cli
    root = base / "trials"
    out = run("--trials=1,2", "--stages=base", f"--workdir={root}")
    table = json.loads((root / "aggregate.json").read_text())
    assert table["runs"] == ["seed1_trial1", "seed1_trial2"]
    assert table["datasets"] == {"seed1_trial1": "RegDB split 1", "seed1_trial2": "RegDB split 2"}
    assert [c["key"] for c in table["conditions"]] == ["regdb-t2v/paper/noflip", "regdb-v2t/paper/noflip"]
    assert all(set(c["results"]) == {"ir"} for c in table["conditions"])
    splits = [json.loads((root / r / "eval" / "report.json").read_text())["regdb_split"] for r in table["runs"]]
    assert splits == [1, 2]
    assert "Mean ± std over 2 runs" in out


def test_a_tiny_synthetic_regdb_split_other_than_one_builds(tmp_path):
    import tensorflow_datasets as tfds

    from tfds_builders.prepare import build_synthetic

    train_ids = {}
    for trial in (1, 2):
        name = datasets.SYNTHETIC_PREFIX + datasets.synthetic_config_name("regdb", trial, tiny=True)
        build_synthetic(name, str(tmp_path))
        builder = tfds.builder(name, data_dir=str(tmp_path))
        assert builder.info.metadata["trial"] == trial
        train_ids[trial] = {int(x["pid"]) for x in tfds.data_source(name, split="train_rgb", data_dir=str(tmp_path))}
    assert name == "synthetic/regdb_tiny_trial2" and train_ids[1] != train_ids[2]


def test_a_report_is_reused_only_for_the_same_model_and_evaluation_settings(tmp_path):
    import dataclasses

    from tvilfm_jax.eval.settings import settings_from_config

    config = synthetic.get_config("stage=tvilfm")
    model = tmp_path / "tvilfm" / "models" / "last"
    path = tmp_path / "eval" / "report.json"
    assert sweep.reusable_report(path, config, model) is None  # none yet
    settings = json.loads(json.dumps(dataclasses.asdict(settings_from_config(config))))
    path.parent.mkdir()
    path.write_text(json.dumps({"settings": settings, "checkpoint": str(model), "conditions": []}))
    assert sweep.reusable_report(path, config, model)["checkpoint"] == str(model)
    assert sweep.reusable_report(path, config, tmp_path / "other") is None
    config.eval.text_sources = ("ir_only",)
    assert sweep.reusable_report(path, config, model) is None
