"""`python -m tvilfm_jax.export`: every encoder of a small random model exported to ONNX, run in
onnxruntime and compared with the evaluation's own JAX path (`FeatureExtractor`) in fp32.

Tolerance: `onnx_export.TOLERANCE`, 1e-5 max abs error per element of every output (unit rows;
mer a sum of three).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import onnxruntime
import pytest

from tvilfm_jax import artifacts, export, onnx_export
from tvilfm_jax.data.tokenizer import tokenize
from tvilfm_jax.eval.features import FeatureExtractor, normalize_images
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig, add_backup, init_variables

REPO = Path(__file__).resolve().parents[1]
HW = (32, 16)
# Stage 2 (backups), exported from a bfloat16 run: the graphs still compute in float32.
CONFIG = ModelConfig(num_classes=2, resnet_blocks=(1, 1, 1, 1), resnet_width=4,
                     text=TextConfig(width=32, layers=1, heads=2, embed_dim=128), backup=True, dtype="bfloat16")
STAGE1 = dataclasses.replace(CONFIG, backup=False)
CAPTIONS = ["a man in a green jacket", "a woman with a black backpack and white shoes", "a person in red",
            "someone wearing a long grey coat", "a child holding a blue umbrella"]
ROWS = 5  # not the export check's 3 rows: the symbolic batch must take any size


@pytest.fixture(scope="module")
def stage2_variables():
    variables = jax.jit(lambda key: add_backup(init_variables(CONFIG, key, HW)))(jax.random.key(0))
    # Backups unlike the current heads, so that a swapped "ir" / "ir_current" output shows.
    variables["params"]["backup_gem"]["p"] = variables["params"]["backup_gem"]["p"] + 1.0
    stats = variables["batch_stats"]["backup_neck"]["bn"]
    stats["mean"] = stats["mean"] + 0.3
    return variables


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "tvilfm_jax.export", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, stage2_variables):
    base = tmp_path_factory.mktemp("export")
    model_dir = artifacts.save_model(base / "model", stage2_variables, CONFIG)
    proc = _run_cli(f"--model={model_dir}", f"--output={base / 'onnx'}", "--image_size=32,16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"base": base, "model": model_dir, "onnx": base / "onnx", "stdout": proc.stdout,
            "variables": artifacts.load_model(model_dir)[1]}


def _reference(variables, name, images, rgb_caps, ir_caps):
    """The encoder's outputs as evaluation computes them (float32, `FeatureExtractor`)."""
    fx = FeatureExtractor(TVILFM(dataclasses.replace(CONFIG, dtype="float32")), 2, HW, progress=False)
    if name == "gallery":
        return fx.gallery_embeddings(variables, fx.image_features(variables, list(images), "rgb"))
    if name == "text":
        return {"text": fx.embed(variables, fx.text_features(variables, rgb_caps))}
    feats = fx.image_features(variables, list(images), "ir")
    q = fx.query_embeddings(variables, feats, fx.text_features(variables, rgb_caps),
                            fx.text_features(variables, ir_caps))
    q["mer"] = q["fusion"] + q["ir_current"] + q["text"]
    return q if name == "fusion" else {k: q[k] for k in ("ir", "ir_current")}


@pytest.mark.parametrize("name", list(onnx_export.ENCODERS))
def test_onnxruntime_matches_evaluation(exported, name):
    images = np.random.default_rng(1).integers(0, 256, (ROWS, *HW, 3), dtype=np.uint8)
    rgb_caps, ir_caps = CAPTIONS, CAPTIONS[::-1]
    feeds = {"rgb_image": images, "ir_image": images, "ids": tokenize(rgb_caps), "text_rgb": tokenize(rgb_caps),
             "text_ir": tokenize(ir_caps)}
    sess = onnxruntime.InferenceSession(str(exported["onnx"] / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]
    assert inputs == list(onnx_export.ENCODERS[name].inputs)
    assert all(i.shape[0] == onnx_export.DYNAMIC for i in sess.get_inputs())
    outputs = [o.name for o in sess.get_outputs()]
    got = dict(zip(outputs, sess.run(None, {k: feeds[k] for k in inputs})))
    want = _reference(exported["variables"], name, images, rgb_caps, ir_caps)
    assert sorted(got) == sorted(want)
    for key, value in got.items():
        w = np.asarray(want[key])
        assert value.dtype == np.float32 and value.shape == w.shape == (ROWS, CONFIG.embed_dim)
        np.testing.assert_allclose(value, w, rtol=0, atol=onnx_export.TOLERANCE, err_msg=f"{name}.{key}")
        if key != "mer":  # unit rows: a wrong or missing normalisation would show here
            np.testing.assert_allclose(np.linalg.norm(value, axis=1), 1, atol=1e-5)
    if name == "gallery":  # the backup heads differ, so the two galleries must too
        assert np.max(np.abs(got["ir"] - got["current"])) > 1e-3


def test_manifest_describes_and_checks_every_encoder(exported):
    manifest = json.loads((exported["onnx"] / onnx_export.MANIFEST).read_text())
    assert list(manifest["encoders"]) == list(onnx_export.ENCODERS)
    assert manifest["image_size"] == list(HW) and manifest["batch"] == "N"
    assert manifest["tolerance"] == {"max_abs": onnx_export.TOLERANCE}
    assert manifest["model_config"] == CONFIG.to_dict()
    fusion = manifest["encoders"]["fusion"]
    assert fusion["inputs"] == [{"name": "ir_image", "dtype": "uint8", "shape": ["N", 32, 16, 3]},
                                {"name": "text_rgb", "dtype": "int32", "shape": ["N", 77]},
                                {"name": "text_ir", "dtype": "int32", "shape": ["N", 77]}]
    assert [o["name"] for o in fusion["outputs"]] == ["ir", "ir_current", "text", "fusion", "mer"]
    for name, entry in manifest["encoders"].items():
        assert (exported["onnx"] / entry["file"]).is_file()
        assert entry["check"]["rows"] == 3
        assert set(entry["check"]["errors"]) == {o["name"] for o in entry["outputs"]}
        for errors in entry["check"]["errors"].values():
            assert 0 <= errors["max_abs"] <= onnx_export.TOLERANCE
    assert str(exported["onnx"]) in exported["stdout"]


@pytest.fixture(scope="module")
def stage1_model(tmp_path_factory, stage2_variables):
    variables = {c: {k: v for k, v in tree.items() if not k.startswith("backup_")}
                 for c, tree in stage2_variables.items()}
    return artifacts.save_model(tmp_path_factory.mktemp("stage1") / "model", variables, STAGE1)


def test_stage1_fixed_batch_exports_the_image_encoders(stage1_model, tmp_path):
    manifest = export.main([f"--model={stage1_model}", "--image_size=32,16", "--batch_size=2"])
    assert list(manifest["encoders"]) == ["gallery", "ir"]  # the default: what stage 1 trained
    sess = onnxruntime.InferenceSession(os.path.join(stage1_model, "onnx", "ir.onnx"))
    assert sess.get_inputs()[0].shape == [2, 32, 16, 3]
    images = np.random.default_rng(2).integers(0, 256, (2, *HW, 3), dtype=np.uint8)
    ir, ir_current = sess.run(["ir", "ir_current"], {"ir_image": images})
    np.testing.assert_array_equal(ir, ir_current)  # no backups: the IR query is the current head

    with pytest.raises(SystemExit) as err:
        export.main([f"--model={stage1_model}", f"--output={tmp_path / 'text'}", "--encoders=gallery,text"])
    message = str(err.value)
    assert message.startswith("error: ") and "\n" not in message
    assert "stage-1 model" in message and "text" in message
    assert not (tmp_path / "text").exists()  # refused before anything is written


@pytest.mark.parametrize("args, expected", [
    (["--encoders=gallery,depth"], "unknown encoder(s) ['depth']"),
    (["--image_size=32"], "--image_size must be H,W (two ints >= 16), got 32"),
    (["--batch_size=-1"], "flag --batch_size=-1"),
])
def test_bad_input_is_one_line(stage1_model, tmp_path, args, expected):
    with pytest.raises(SystemExit) as err:
        export.main([f"--model={stage1_model}", f"--output={tmp_path}", *args])
    assert str(err.value).startswith("error: ") and expected in str(err.value)


def test_add_fusion_takes_no_ir_caption(stage2_variables, tmp_path):
    config = dataclasses.replace(CONFIG, fusion="add", dtype="float32")
    onnx_export.export(config, stage2_variables, tmp_path, ["fusion"], HW, batch=2, print_fn=None)
    sess = onnxruntime.InferenceSession(str(tmp_path / "fusion.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["ir_image", "text_rgb"]
    images = np.random.default_rng(3).integers(0, 256, (2, *HW, 3), dtype=np.uint8)
    ids = tokenize(CAPTIONS[:2])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"ir_image": images, "text_rgb": ids})))
    want = TVILFM(config).apply(stage2_variables, normalize_images(images), ids, method="query_embeddings")
    assert sorted(got) == sorted(want)
    for key, value in got.items():
        np.testing.assert_allclose(value, want[key], rtol=0, atol=onnx_export.TOLERANCE, err_msg=key)


def test_the_exported_max_pool_is_the_models():
    """The -inf pad + "VALID" form handed to jax2onnx gives the model's padded max-pool exactly."""
    x = jax.random.normal(jax.random.key(4), (2, 9, 7, 3))  # odd sizes, negative values at the borders

    def pool(x):
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    with onnx_export._string_padding_max_pool():
        padded = pool(x)
    np.testing.assert_array_equal(padded, pool(x))
