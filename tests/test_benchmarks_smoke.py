"""The benchmark harness (benchmarks/run.py) at its tiniest sizes, so it cannot rot.

Timings are never asserted; what is checked is that every section runs, that the JAX and the
PyTorch sides compute the same thing (equal first-step losses, equal embeddings, equal
metrics), and that the report is complete.
"""

import json

import jax
import numpy as np
import pytest

# Start JAX's CPU client now, with the session's settings: `run.main` pins XLA to one thread via
# XLA_FLAGS when the client is not started yet, which would last for the rest of the test session.
jax.devices()

import torch
import torchvision  # noqa: F401 - the smoke run needs it

from benchmarks import run  # noqa: E402
from benchmarks import torch_reference as tref  # noqa: E402
from tvilfm_jax import optim  # noqa: E402

pytestmark = pytest.mark.torch


def _impl_ok(numbers):
    assert "error" not in numbers, numbers
    assert numbers["median_s"] > 0 and numbers["per_s"] > 0
    assert np.isfinite(numbers["median_cpu_s"])


def test_wrt_and_ce_match_the_jax_losses():
    import jax.numpy as jnp

    from tvilfm_jax import losses

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(12, 16)).astype(np.float32) * 3
    logits = rng.normal(size=(12, 5)).astype(np.float32)
    labels = np.repeat(np.arange(3), 4)
    got = tref.total_loss(torch.from_numpy(feats), torch.from_numpy(logits), torch.from_numpy(labels).long())
    want = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels)) + losses.weighted_regularized_triplet(
        jnp.asarray(feats), jnp.asarray(labels))
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)


def test_torch_reference_converts_to_the_jax_layout():
    from tvilfm_jax.conversion.official import convert_official

    cfg = run.model_config(run.PRESETS["tiny"], "float32")
    variables = convert_official(tref.state_dict_numpy(tref.TorchTVILFM(cfg)), cfg)  # raises on any leftover key
    assert variables["params"]["gem"]["p"].tolist() == [3.0]
    assert variables["params"]["neck"]["classifier"]["kernel"].shape == (cfg.embed_dim, cfg.num_classes)


def test_optimizer_groups_follow_the_stage():
    cfg = run.model_config(run.PRESETS["tiny"], "float32")
    model = tref.TorchTVILFM(cfg)
    optim_cfg = optim.OptimSettings()  # the docs/original.md §2 defaults
    opt = tref.make_optimizer(model, optim_cfg, "tvilfm")
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("base_model.visual") for n in trained)
    assert "base_model.token_embedding.weight" in trained and "classifier.BN.bias" in trained
    lrs = {g["lr"] for g in opt.param_groups}
    # Paper quirk (docs/original.md §4.5): embeddings train at lr_visual, blocks at lr_txt, neck at 2 x lr_visual.
    assert {optim_cfg.lr_visual, optim_cfg.lr_txt, 2 * optim_cfg.lr_visual} <= lrs


def test_interleaving_alternates_order():
    calls = []
    times = run.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert all(len(wall) == 3 and len(cpu) == 3 for wall, cpu in times.values())


@pytest.mark.parametrize("argv, message", [
    (["--sections", "stage1,bogus"], "--sections"),
    (["--resnet-blocks", "1,x,1,1"], "--resnet-blocks"),
    (["--image-size", "30", "16"], "multiples of 16"),
    (["--text-width", "30", "--text-heads", "4"], "invalid sizes"),
])
def test_bad_arguments_are_named(argv, message):
    with pytest.raises(SystemExit, match=message):
        run.main(["--preset", "tiny", *argv])


def test_eval_metrics_input_sections(tmp_path, capsys):
    out = tmp_path / "bench.json"
    report = run.main(["--preset", "tiny", "--sections", "eval,metrics,input", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["machine"]["torch"] == torch.__version__ and saved["sizes"]["image_size"] == [32, 16]
    res = report["results"]
    assert res["eval"]["max_abs_embedding_diff"] < 1e-4
    for problem in res["metrics"].values():
        assert problem["max_abs_metric_diff"] < 1e-6
        for numbers in problem["impls"].values():
            _impl_ok(numbers)
    for section in ("eval", "input"):
        for numbers in res[section]["impls"].values():
            _impl_ok(numbers)
    table = capsys.readouterr().out
    assert "numpy reference" in table and "torch reference" in table


@pytest.mark.slow
def test_train_step_sections_agree(tmp_path):
    report = run.main(["--preset", "tiny", "--sections", "stage1,stage2", "--json", str(tmp_path / "b.json")])
    for section in ("stage1", "stage2"):
        res = report["results"][section]
        assert set(res["impls"]) == {"jax", "torch eager"}
        for numbers in res["impls"].values():
            _impl_ok(numbers)
        # Same weights, same batch, fp32: the step-0 losses must agree.
        assert res["first_loss_max_rel_diff"] < 1e-4, res["impls"]
        assert res["impls"]["jax"]["memory"]["peak_estimate_mib"] > 0
        assert res["impls"]["torch eager"]["amp_skipped_timed_steps"] == 0
