"""Faults in what a user feeds in (issue 19): damaged index files, stale TFDS build folders,
broken .pth files, and a stage-1 model evaluated as a stage-2 one. Each error names its cause."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time

import jax
import pytest

from tfds_builders.synthetic import synthetic_dataset_builder
from tvilfm_jax import artifacts, convert
from tvilfm_jax.eval import runner
from tvilfm_jax.eval.settings import EvalSettings
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import ModelConfig, init_variables
from tvilfm_jax.data.layouts import DatasetError, read_layout
from tvilfm_jax.data.synthetic import write_tree

TINY = {
    "sysu": dict(num_train_ids=2, num_val_ids=1, num_test_ids=2, images_per_cam=1, image_size=(32, 16)),
    "regdb": dict(num_train_ids=2, num_test_ids=2, images_per_id=2, num_trials=1, image_size=(32, 16)),
    "llcm": dict(num_train_ids=2, num_test_ids=2, images_per_cam=1, image_size=(32, 16)),
}
CONTENTS = {
    # Not UTF-8: what a split file overwritten by a binary (or saved as UTF-16) looks like.
    "binary": b"\xff\xfe\x00\x81\x00binary\xc3",
    "empty": b"",
    "blank": b"\n\n",
}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """Pristine tiny synthetic trees, one per layout (copied before damaging)."""
    base = tmp_path_factory.mktemp("pristine")
    for layout, sizes in TINY.items():
        write_tree(base / layout, layout, seed=0, **sizes)
    return base


def _read(root, layout):
    return read_layout(root, layout, trial=1 if layout == "regdb" else None, synthetic=True)


@pytest.mark.parametrize("layout, relative, content, expected", [
    ("sysu", "exp/train_id.txt", "binary", "id file {root}/exp/train_id.txt is not UTF-8 text"),
    ("sysu", "exp/test_id.txt", "binary", "id file {root}/exp/test_id.txt is not UTF-8 text"),
    ("llcm", "idx/test_id.txt", "binary", "id file {root}/idx/test_id.txt is not UTF-8 text"),
    ("llcm", "idx/train_vis.txt", "binary", "split file {root}/idx/train_vis.txt is not UTF-8 text"),
    ("regdb", "idx/train_visible_1.txt", "binary", "split file {root}/idx/train_visible_1.txt is not UTF-8 text"),
    ("regdb", "idx/test_thermal_1.txt", "binary", "split file {root}/idx/test_thermal_1.txt is not UTF-8 text"),
    # Empty test splits used to pass and fail in TFDS ("No examples were yielded"); empty training
    # splits were only reported as labels missing from the other modality.
    ("regdb", "idx/test_thermal_1.txt", "empty", "empty split files (expected '<relative path> <label>' lines) [1]: idx/test_thermal_1.txt"),
    ("regdb", "idx/test_visible_1.txt", "blank", "empty split files (expected '<relative path> <label>' lines) [1]: idx/test_visible_1.txt"),
    ("regdb", "idx/train_thermal_1.txt", "empty", "empty split files (expected '<relative path> <label>' lines) [1]: idx/train_thermal_1.txt"),
    ("llcm", "idx/train_nir.txt", "empty", "empty split files (expected '<relative path> <label>' lines) [1]: idx/train_nir.txt"),
])
def test_damaged_index_files_are_validation_errors_naming_the_file(trees, tmp_path, layout, relative, content, expected):
    root = tmp_path / layout
    shutil.copytree(trees / layout, root)
    (root / relative).write_bytes(CONTENTS[content])
    with pytest.raises(DatasetError, match=re.escape(expected.format(root=root))):
        _read(root, layout)


def test_a_split_left_empty_is_a_validation_error(trees, tmp_path):
    """SYSU test ids whose IR folders are all gone leave no query; TFDS cannot write that."""
    root = tmp_path / "sysu"
    shutil.copytree(trees / "sysu", root)
    test_ids = [int(x) for x in (root / "exp/test_id.txt").read_text().split(",") if x.strip()]
    for cam in (3, 6):
        for pid in test_ids:
            shutil.rmtree(root / f"cam{cam}" / f"{pid:04d}", ignore_errors=True)
    with pytest.raises(DatasetError, match=r"nothing left to write .*: no query images$"):
        read_layout(root, "sysu", with_text=False, synthetic=True)


def test_a_build_removes_what_killed_builds_left(tmp_path):
    """kill -9 during a TFDS build leaves incomplete.<6 chars>_<version>/; the next build clears
    those of its own version that nothing touches any more."""
    config_dir = tmp_path / "synthetic" / "regdb_tiny"
    builder = synthetic_dataset_builder.Builder(config="regdb_tiny", data_dir=str(tmp_path))
    version = str(builder.version)
    killed, other_version, active = (config_dir / f"incomplete.{s}" for s in (f"K1LLED_{version}", "OLDVER_0.9.0",
                                                                                   f"ACT1VE_{version}"))
    for folder in (killed, other_version, active):
        (folder / "synthetic-train_rgb.array_record-00000-of-00001").parent.mkdir(parents=True)
        (folder / "synthetic-train_rgb.array_record-00000-of-00001").write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    for path in (killed, killed / "synthetic-train_rgb.array_record-00000-of-00001", other_version):
        os.utime(path, (an_hour_ago, an_hour_ago))
    in_an_hour = time.time() + 3600  # still being written by a build that runs alongside
    os.utime(active / "synthetic-train_rgb.array_record-00000-of-00001", (in_an_hour, in_an_hour))

    builder.download_and_prepare(file_format="array_record")
    assert builder.is_prepared()
    assert not killed.exists()
    assert other_version.is_dir() and active.is_dir()


# --- python -m tvilfm_jax.convert ---------------------------------------------------------------


@pytest.fixture(scope="module")
def official_pth(tmp_path_factory):
    """A tiny official-layout stage-1 .pth (test_conversion's torch rebuild) and its CLI flags."""
    import torch  # the test extra's: a missing torch fails these tests rather than skipping them

    from test_conversion import BLOCKS, C, TEXT, WIDTH, random_official_state_dict

    model, _ = random_official_state_dict(backup=False, seed=5)
    path = tmp_path_factory.mktemp("pth") / "base.pth"
    torch.save(model.state_dict(), path)
    flags = ["--kind", "official", "--num_classes", str(C),
             "--model_json", json.dumps({"resnet_blocks": BLOCKS, "resnet_width": WIDTH, "text": TEXT})]
    return torch, path, flags


@pytest.mark.torch
def test_convert_refuses_non_finite_tensors_naming_them(official_pth, tmp_path):
    torch, path, flags = official_pth
    state = torch.load(path, weights_only=True)
    state["base_model.visual.GEM.p"][0] = float("nan")
    state["classifier.BN.running_var"][:3] = float("inf")
    torch.save(state, tmp_path / "diverged.pth")
    with pytest.raises(SystemExit, match=re.escape(
            f"{tmp_path / 'diverged.pth'}: 2 tensor(s) hold NaN or Inf: 'base_model.visual.GEM.p' (1 of 1 values), "
            "'classifier.BN.running_var' (3 of 128 values); refusing to convert")):
        convert.main([*flags, "--input", str(tmp_path / "diverged.pth"), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.torch
def test_convert_overwrite_refusal_names_the_flag(official_pth, tmp_path):
    _, path, flags = official_pth
    argv = [*flags, "--input", str(path), "--output", str(tmp_path / "out")]
    convert.main(argv)
    with pytest.raises(SystemExit, match=re.escape(
            f"error: {tmp_path / 'out' / 'variables'} already exists; pass --overwrite to replace it")):
        convert.main(argv)
    convert.main([*argv, "--overwrite"])


# --- python -m tvilfm_jax.evaluate --------------------------------------------------------------

STAGE2_EVAL_CONFIG = """
import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.stage = "tvilfm"
    config.recipe = "clean"
    config.data = ml_collections.ConfigDict({"name": "synthetic/llcm", "image_size": (32, 16), "build_synthetic": False})
    config.eval = ml_collections.ConfigDict({"batch_size": 8, "trials": (0,)})
    return config
"""
TINY_MODEL = ModelConfig(num_classes=2, resnet_blocks=(1, 1, 1, 1), resnet_width=4,
                         text=TextConfig(width=32, layers=1, heads=2, embed_dim=128))


def test_evaluate_refuses_text_queries_of_a_stage1_model(trees, tmp_path):
    """A stage-1 export (backup=false in its model.json) has an untrained text tower: its
    Text/Fusion/MER numbers used to be reported with exit 0."""
    variables = jax.jit(lambda key: init_variables(TINY_MODEL, key, (32, 16)))(jax.random.key(0))
    checkpoint = artifacts.save_model(tmp_path / "stage1", variables, TINY_MODEL)
    (tmp_path / "stage2.py").write_text(STAGE2_EVAL_CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "tvilfm_jax.evaluate", f"--config={tmp_path / 'stage2.py'}", f"--checkpoint={checkpoint}",
         f"--dataset_root={trees / 'llcm'}", f"--output={tmp_path / 'report'}", "--noprogress"],
        env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode != 0, done.stdout[-2000:]
    assert (f"{checkpoint} is a stage-1 model (its model.json has backup=false: stage 'base' never trains the text "
            "tower), but the config asks for text/fusion/mer queries") in done.stderr
    assert not (tmp_path / "report").exists()
    # What stays allowed: IR queries of a stage-1 model, every query of a stage-2 one.
    runner.require_trained_text(TINY_MODEL, EvalSettings(modalities=("ir",)), checkpoint)
    runner.require_trained_text(dataclasses.replace(TINY_MODEL, backup=True), EvalSettings(), checkpoint)
