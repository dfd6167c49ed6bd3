"""`python -m tvilfm_jax.evaluate` end to end on built synthetic records and a random small model."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tfds_builders.llcm import llcm_dataset_builder
from tvilfm_jax import artifacts
from tvilfm_jax.data.layouts import DatasetCountWarning
from tvilfm_jax.data.synthetic import write_tree
from tvilfm_jax.eval import runner
from tvilfm_jax.eval.settings import PROTOCOLS, settings_from_config
from tvilfm_jax.eval.testset import from_layout, from_tfds
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import ModelConfig, add_backup, init_variables

REPO = Path(__file__).resolve().parents[1]
HW = (32, 16)
CONFIG = ModelConfig(num_classes=2, resnet_blocks=(1, 1, 1, 1), resnet_width=4,
                     text=TextConfig(width=32, layers=1, heads=2, embed_dim=128), backup=True)
# As a GPU run exports its model (compute_dtype "auto"): evaluation still embeds in eval.dtype.
EXPORTED = dataclasses.replace(CONFIG, dtype="bfloat16")
CONFIG_FILE = """
import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.stage = "tvilfm"
    config.recipe = "clean"
    config.data = ml_collections.ConfigDict({{"name": "llcm", "data_dir": {data_dir!r}, "image_size": {hw!r},
                                              "build_synthetic": False}})
    config.eval = ml_collections.ConfigDict({{
        "text_sources": ("paper", "non_gallery", "ir_only"),
        "flip": (False, True),
        "trials": (0, 1, 2),
        "batch_size": 8,
        "ranking_queries": 3,
        "ranking_top_k": 4,
    }})
    return config
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A synthetic LLCM tree, its TFDS records, and a random small model checkpoint."""
    base = tmp_path_factory.mktemp("eval_cli")
    root = base / "llcm_tree"
    write_tree(root, "llcm", seed=4, num_train_ids=2, num_test_ids=4, images_per_cam=2, image_size=(48, 24))
    data_dir = base / "tfds"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetCountWarning)
        llcm_dataset_builder.Builder(data_dir=str(data_dir)).download_and_prepare(
            file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    variables = jax.jit(lambda key: add_backup(init_variables(CONFIG, key, HW)))(jax.random.key(0))
    checkpoint = artifacts.save_model(base / "checkpoint", variables, EXPORTED)
    config = base / "eval_config.py"
    config.write_text(CONFIG_FILE.format(data_dir=str(data_dir), hw=HW))
    return {"root": root, "data_dir": data_dir, "checkpoint": checkpoint, "config": config, "base": base}


def test_tfds_and_layout_give_the_same_test_set(built):
    a = from_tfds("llcm", built["data_dir"])
    b = from_layout(built["root"], "llcm", synthetic=True)
    assert (a.layout, a.split) == (b.layout, b.split) == ("llcm", None)
    for table in ("query", "gallery"):
        x, y = getattr(a, table), getattr(b, table)
        assert x.paths == y.paths and x.captions == y.captions
        np.testing.assert_array_equal(x.pids, y.pids)
        np.testing.assert_array_equal(x.cams, y.cams)
        for i in (0, len(x) - 1):
            np.testing.assert_array_equal(x.images[i], y.images[i])
    assert a.galleries.keys() == b.galleries.keys()
    for trial, idx in a.galleries["all"].items():
        np.testing.assert_array_equal(idx, b.galleries["all"][trial])
    assert a.id_caption_map == b.id_caption_map


def test_cli_writes_tables_and_figures(built):
    output = built["base"] / "report"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "tvilfm_jax.evaluate", f"--config={built['config']}",
         f"--checkpoint={built['checkpoint']}", f"--output={output}", "--noprogress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## Mean over trials" in proc.stdout  # the tables are printed too

    report = json.loads((output / "report.json").read_text())
    assert report["dataset"] == "LLCM" and report["units"] == "percent" and report["settings"]["recipe"] == "clean"
    keys = [c["key"] for c in report["conditions"]]
    assert keys == [f"{p}/{s}/{f}" for f in ("noflip", "flip") for s in ("paper", "non_gallery", "ir_only")
                    for p in ("llcm-i2v", "llcm-v2i")]
    for c in report["conditions"]:
        protocol = PROTOCOLS[c["protocol"]]
        assert protocol.title in c["label"] and c["text_source"] in c["label"]
        expected = ["ir", "text", "fusion", "mer"] if protocol.ir_to_rgb else ["ir", "text", "fusion"]
        assert list(c["results"]) == expected
        for r in c["results"].values():
            assert r["metric"] == "llcm"  # the clean recipe scores LLCM IR with eval_llcm too
            assert [t["trial"] for t in r["trials"]] == [0, 1, 2]
            assert r["mean"]["mAP"] == pytest.approx(np.mean([t["mAP"] for t in r["trials"]]))
            assert r["std"]["mAP"] == pytest.approx(np.std([t["mAP"] for t in r["trials"]]))
            assert r["std"]["R1"] == pytest.approx(np.std([t["R1"] for t in r["trials"]]))
            assert len(r["std"]["cmc"]) == 20 and r["std"]["R20"] == 0.0
            assert 0 <= r["mean"]["R1"] <= r["mean"]["R5"] <= r["mean"]["R20"] == 100.0
            assert len(r["mean"]["cmc"]) == 20
    markdown = (output / "report.md").read_text()
    # The exported model says bfloat16; the evaluation embedded in eval.dtype's default, and says so.
    assert report["numerics"]["embedding_dtype"] == report["settings"]["dtype"] == "float32"
    assert "embeddings in float32 (eval.dtype), scores in float32, matmul precision HIGHEST" in markdown
    mean_rows = [line for line in markdown.splitlines() if line.startswith("| LLCM")]
    assert len(mean_rows) == sum(len(c["results"]) for c in report["conditions"])
    first = report["conditions"][0]["results"]["ir"]
    cells = [c.strip() for c in mean_rows[0].strip("|").split("|")]
    assert cells[6] == f"{first['mean']['R1']:.2f} ± {first['std']['R1']:.2f}"  # every metric: mean ± std
    assert cells[-1] == f"{first['mean']['mINP']:.2f} ± {first['std']['mINP']:.2f}"
    trial_rows = [line for line in markdown.splitlines() if line.startswith("| llcm-")]
    assert len(trial_rows) == 3 * len(mean_rows)
    for c in report["conditions"]:
        assert f"### {c['label']}" in markdown

    pngs = sorted(p.name for p in output.glob("*.png"))
    assert pngs == sorted([f"cmc_{k.replace('/', '_')}.png" for k in keys]
                          + ["ranking_llcm-i2v_paper_noflip.png", "ranking_worst_llcm-i2v_paper_noflip.png"])
    for name in pngs:
        with Image.open(output / name) as im:
            im.verify()
            assert im.format == "PNG" and min(im.size) > 100


def test_settings_from_config_and_loading_errors(built, tmp_path):
    with pytest.raises(ValueError, match=r"config.eval: unknown key\(s\) \['text_source'\]"):
        settings_from_config({"eval": {"text_source": "paper"}})
    with pytest.raises(ValueError, match=r"eval.text_sources: unknown value\(s\) \['gallery'\]"):
        settings_from_config({"eval": {"text_sources": ("gallery",)}})
    with pytest.raises(ValueError, match="eval.recipe .* must be one of"):
        settings_from_config({"recipe": "fancy"})
    # Without an eval section: recipe, image size and (by stage) modalities come from the experiment.
    base = settings_from_config({"stage": "base", "recipe": "clean", "data": {"image_size": (64, 32)}})
    assert (base.modalities, base.recipe, base.image_size, base.trials) == (("ir",), "clean", (64, 32), None)
    assert settings_from_config({"stage": "tvilfm"}).modalities == ("ir", "text", "fusion", "mer")
    assert settings_from_config({"eval": {"flip": True, "trials": ()}}).flip == (True,)
    with pytest.raises(ValueError, match="do not apply to a 'llcm' test set"):
        settings_from_config({"eval": {"protocols": ("sysu-all",)}}).protocols_for("llcm")

    assert runner.layout_of("regdb/trial7") == ("regdb", 7)
    assert runner.layout_of("synthetic/sysu_tiny") == ("sysu", None)
    assert runner.layout_of("sysu_mm01") == ("sysu", None)
    with pytest.raises(ValueError, match="cannot tell the dataset layout"):
        runner.layout_of("market1501")
    test = runner.load_test_set({"data": {"name": "synthetic/llcm"}}, built["root"])  # synthetic: no count warning
    assert test.layout == "llcm" and len(test.query) > 0

    with pytest.raises(ValueError, match="exactly one of --checkpoint"):
        runner.load_model(built["checkpoint"], workdir=tmp_path)
    with pytest.raises(ValueError, match="has no models/best export"):
        runner.load_model(workdir=tmp_path)
    with pytest.raises(ValueError, match=r"which must be one of \('last', 'best'\), got 'first'"):
        runner.load_model(workdir=tmp_path, which="first")
    with pytest.raises(FileNotFoundError, match="model config not found"):
        runner.load_model(tmp_path)
    (tmp_path / "variables").mkdir()  # a run directory in the layout before models/
    with pytest.raises(ValueError) as err:
        runner.load_model(workdir=tmp_path)
    assert str(err.value).startswith(f"{tmp_path} is a run directory in the old layout (it has variables/): move "
                                     "variables/ to models/, rename models/*/config.json to model.json")
    (tmp_path / "variables").rmdir()
    with pytest.raises(ValueError, match="config.data.name must name the dataset"):
        runner.load_test_set({"data": {}})
    config, variables, described = runner.load_model(built["checkpoint"])
    assert config == EXPORTED and "backup_neck" in variables["params"] and described == str(built["checkpoint"])
