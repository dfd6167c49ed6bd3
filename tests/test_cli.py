"""What every `python -m tvilfm_jax.<program>` shares (tvilfm_jax/cli.py): --help lists each flag
with its default, and bad input is one line `error: ...` with exit status 1, not a flag listing."""

from __future__ import annotations

import re

import pytest

from test_faults_runs import ROOT, cli, one_line_error

# program: {flag: its default as --help prints it (a regular expression)}
DEFAULTS = {
    "tvilfm_jax.train": {"allow_config_change": "'false'", "config": r"'/.*synthetic\.py'"},
    "tvilfm_jax.evaluate": {"which": "'best'", "progress": "'true'"},
    "tvilfm_jax.convert": {"backup": "'auto'", "model_json": r"'\{\}'", "seed": "'0'", "overwrite": "'false'"},
    "tvilfm_jax.export": {"image_size": "'288,144'", "batch_size": "'0'"},
    "tvilfm_jax.extract": {"shard_size": "'4096'", "flip": "'false'", "progress": "'true'"},
    "tvilfm_jax.search": {"top_k": "'10'", "index": "'exact'", "nprobe": "'32'", "output": "'search_results'"},
    "tvilfm_jax.serve": {"host": "'127.0.0.1'", "port": "'8000'"},
    "tvilfm_jax.demo": {"workdir": "'runs/demo'", "epochs1": "'0'", "epochs2": "'0'", "fresh": "'false'"},
    "tvilfm_jax.sweep": {"seeds": "''", "trials": "''", "stages": "'base,tvilfm'", "evaluate_only": "'false'"},
    "tvilfm_jax.generators": {"flush_every": "'256'", "max_length": "'50'", "temperature": r"'0\.7'",
                              "chat_format": "'auto'", "progress": "'true'"},
}


def help_defaults(text: str) -> dict[str, str]:
    """{flag: default} of absl's help text: a `--[no]name: ...` line, then `(default: ...)`."""
    defaults, flag = {}, None
    for line in text.splitlines():
        if m := re.match(r"  --(?:\[no\])?(\w+):", line):
            flag = m.group(1)
        elif flag and (m := re.match(r"    \(default: (.*)\)$", line)):
            defaults[flag] = m.group(1)
    return defaults


@pytest.mark.parametrize("program", sorted(DEFAULTS))
def test_help_shows_every_default(program):
    proc = cli(program, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = help_defaults(proc.stdout)
    for flag, default in DEFAULTS[program].items():
        assert re.fullmatch(default, shown.get(flag, "")), (flag, shown)


@pytest.mark.parametrize("program, args, expected", [
    ("tvilfm_jax.evaluate", ["--config={sysu}", "--checkpoint={tmp}/missing"],
     "error: model config not found: {tmp}/missing/model.json"),
    ("tvilfm_jax.evaluate", ["--config={sysu}", "--workdir={tmp}", "--which=worst"],
     "error: flag --which=worst: value should be one of <last|best>"),
    ("tvilfm_jax.evaluate", ["--config={sysu}", "--checkpoint={tmp}", "--checkpoints={tmp}"],
     "error: Unknown command line flag 'checkpoints'. Did you mean: checkpoint ?"),
    ("tvilfm_jax.evaluate", ["--checkpoint={tmp}"],
     "error: --config is required (e.g. --config configs/sysu.py:stage=tvilfm)"),
    ("tvilfm_jax.evaluate", ["--config={sysu}", "{tmp}"], "error: unexpected arguments ['{tmp}']"),
    ("tvilfm_jax.evaluate", ["--config={sysu}", "--workdir={tmp}", "--step=4", "--which=last"],
     "error: --step N evaluates the checkpoint <workdir>/checkpoints/N of a training run: pass it with --workdir, "
     "and without --checkpoint or --which"),
    ("tvilfm_jax.train", ["--workdir={tmp}", "--num_processes=two"],
     "error: flag --num_processes=two: invalid literal for int() with base 10: 'two'"),
    ("tvilfm_jax.convert", ["--kind=onnx", "--input=x.pth", "--num_classes=3", "--output={tmp}/out"],
     "error: flag --kind=onnx: value should be one of <torchvision|clip|official>"),
    ("tvilfm_jax.export", ["--model={tmp}/missing"], "error: model config not found: {tmp}/missing/model.json"),
    ("tvilfm_jax.extract", ["--model={tmp}/m", "--images={tmp}/missing", "--modality=rgb", "--output={tmp}/o"],
     "error: image folder {tmp}/missing does not exist (expected a directory of images)"),
    ("tvilfm_jax.search", ["--gallery={tmp}", "--queries={tmp}"],
     "error: --queries and --query_path go together (an IR features directory and a path in it)"),
    ("tvilfm_jax.serve", ["--gallery={tmp}", "--port=0"], "error: --port must be in 1..65535, got 0"),
    ("tvilfm_jax.demo", ["--epochs1=many"],
     "error: flag --epochs1=many: invalid literal for int() with base 10: 'many'"),
    ("tvilfm_jax.sweep", ["--config={sysu}", "--workdir={tmp}/root", "--seeds=0,one"],
     "error: --seeds: 'one' is not an integer or a range like 1-10"),
    ("tvilfm_jax.generators", ["caption", "--root={tmp}", "--layout=regdb", "--llm_model=x"],
     "error: caption does not use --llm_model"),
    ("tvilfm_jax.generators", ["filter", "--root={tmp}/missing", "--layout=regdb"],
     "error: {tmp}/missing: dataset root is not a directory"),
])
def test_bad_input_is_one_line(program, args, expected, tmp_path):
    fill = {"sysu": ROOT / "configs" / "sysu.py", "tmp": tmp_path}
    proc = cli(program, *(a.format(**fill) for a in args), timeout=120)
    error = one_line_error(proc)
    assert error == expected.format(**fill) and proc.stderr.strip() == error, proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
