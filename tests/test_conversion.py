"""PyTorch -> Flax conversion (torchvision ResNet, official TVI-LFM checkpoints), checkpoints, CLI.

The official layout comes from the shared PyTorch reference (`benchmarks.torch_reference`, the
original's attribute names, docs/original.md §1.9) with random weights and a tiny configuration, and the
converted model's eval embeddings are checked against its PyTorch computation of docs/original.md §6.2-6.3.
"""

import json
import os
import sys

import jax
import numpy as np
import pytest

from tvilfm_jax import checkpoints
from tvilfm_jax.conversion.common import ConversionError
from tvilfm_jax.conversion.official import convert_official
from tvilfm_jax.conversion.resnet import convert_torchvision_resnet
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig

import torch

from benchmarks import torch_reference as tref  # noqa: E402
from test_models_visual import nchw, randomize_batchnorm  # noqa: E402 - shared test helpers

pytestmark = pytest.mark.torch

BLOCKS, WIDTH, D, C = (1, 1, 1, 1), 4, 128, 5
TEXT = {"vocab_size": 64, "context_length": 77, "width": 16, "layers": 2, "heads": 2, "embed_dim": D}
B, HW = 3, (32, 16)


def tiny_config(backup: bool) -> ModelConfig:
    return ModelConfig(num_classes=C, resnet_blocks=BLOCKS, resnet_width=WIDTH, text=TextConfig(**TEXT), backup=backup)


def random_official_state_dict(backup: bool, seed: int = 0) -> tuple[tref.TorchTVILFM, dict]:
    """The reference model with random weights everywhere (BN statistics, LayerNorms, biases, a
    backup GeM exponent of 2, not 3) and its state_dict as numpy arrays."""
    torch.manual_seed(seed)
    model = tref.TorchTVILFM(tiny_config(backup))
    randomize_batchnorm(model, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for name, p in model.base_model.named_parameters():
            if name.startswith("visual."):
                continue
            if ".ln" in name or name.startswith("ln_"):  # LayerNorm: near-identity but not trivial
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.normal_(0, 0.1, generator=g)
        # Embeddings of unit size (CLIP's init is 0.02 / 0.01), so token ids and positions both count.
        model.base_model.token_embedding.weight.normal_(0, 1.0, generator=g)
        model.base_model.positional_embedding.normal_(0, 0.1, generator=g)
        model.classifier.classifier.weight.normal_(0, 0.1, generator=g)
        if backup:
            model.backup_pool.p.fill_(2.0)
    return model, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def inputs(seed=0):
    rs = np.random.RandomState(seed)
    rgb, ir = (rs.randn(B, *HW, 3).astype(np.float32) for _ in range(2))
    text_rgb, text_ir = (rs.randint(1, TEXT["vocab_size"] - 1, (B, 77)).astype(np.int32) for _ in range(2))
    return rgb, ir, text_rgb, text_ir


# --- official checkpoints ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def stage2():
    return random_official_state_dict(backup=True)


def test_official_stage2_checkpoint_end_to_end(stage2):
    model, sd = stage2
    assert any(k.endswith("num_batches_tracked") for k in sd) and "logit_scale" in sd
    config = tiny_config(backup=True)
    variables = convert_official(sd, config)
    rgb, ir, text_rgb, text_ir = inputs()
    ref_gallery, ref_query = model.eval_embeddings(
        nchw(rgb), nchw(ir), torch.from_numpy(text_rgb).long(), torch.from_numpy(text_ir).long())

    apply = jax.jit(TVILFM(config).apply, static_argnames="method")
    gallery = apply(variables, rgb, method="gallery_embeddings")
    query = apply(variables, ir, text_rgb, text_ir, method="query_embeddings")
    for name, ref in [*(("gallery " + k, (gallery[k], v)) for k, v in ref_gallery.items()),
                      *(("query " + k, (query[k], v)) for k, v in ref_query.items())]:
        np.testing.assert_allclose(ref[0], ref[1].numpy(), rtol=1e-4, atol=2e-5, err_msg=name)
    # The backups hold other weights than gem/neck, so matching them means they were used.
    assert not np.allclose(gallery["ir"], gallery["current"], atol=1e-3)


def test_official_checkpoint_key_errors(stage2):
    _, sd = stage2
    config = tiny_config(backup=True)
    missing = "base_model.visual.shared_model.resnet_conv.2.0.conv2.weight"
    broken = {k: v for k, v in sd.items() if k != missing}
    with pytest.raises(ConversionError, match=f"missing key '{missing}'"):
        convert_official(broken, config)

    extra = {**sd, "base_model.visual.GEM.q": np.ones(1, np.float32)}
    with pytest.raises(ConversionError, match=r"unexpected key\(s\): 'base_model.visual.GEM.q'"):
        convert_official(extra, config)

    wrong = {**sd, "classifier.classifier.weight": np.zeros((C + 1, D), np.float32)}
    with pytest.raises(ConversionError, match=rf"'classifier.classifier.weight' has shape \({C + 1}, {D}\), expected \({C}, {D}\)"):
        convert_official(wrong, config)

    # A stage-2 checkpoint into a model without backups: the backup keys are left over.
    with pytest.raises(ConversionError, match="'backup_classifier.BN.bias'"):
        convert_official(sd, tiny_config(backup=False))
    # nn.DataParallel checkpoints (every key under "module.") convert the same.
    wrapped = convert_official({"module." + k: v for k, v in sd.items()}, config)
    direct = convert_official(sd, config)
    for path, value in jax.tree_util.tree_leaves_with_path(direct):
        np.testing.assert_array_equal(dict(jax.tree_util.tree_leaves_with_path(wrapped))[path], value)


def test_torchvision_checkpoint_key_errors():
    torch.manual_seed(0)
    sd = {k: v.numpy() for k, v in tref.torchvision_resnet(BLOCKS, WIDTH).state_dict().items()}
    sd["fc.weight"], sd["fc.bias"] = np.zeros((10, 4 * 8 * WIDTH), np.float32), np.zeros(10, np.float32)
    variables = convert_torchvision_resnet(sd, BLOCKS, WIDTH)  # the ImageNet head is dropped knowingly
    np.testing.assert_array_equal(variables["params"]["rgb_stem"]["conv"]["kernel"],
                                  sd["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["params"]["ir_stem"]["conv"]["kernel"],
                                  variables["params"]["rgb_stem"]["conv"]["kernel"])
    np.testing.assert_array_equal(variables["batch_stats"]["body"]["layer2_0"]["downsample_bn"]["var"],
                                  sd["layer2.0.downsample.1.running_var"])
    with pytest.raises(ConversionError, match="missing key 'layer3.0.bn2.running_var'"):
        convert_torchvision_resnet({k: v for k, v in sd.items() if k != "layer3.0.bn2.running_var"}, BLOCKS, WIDTH)
    with pytest.raises(ConversionError, match="'conv1.weight' has shape"):
        convert_torchvision_resnet({**sd, "conv1.weight": np.zeros((WIDTH, 3, 3, 3), np.float32)}, BLOCKS, WIDTH)
    with pytest.raises(ConversionError, match="'layer4.1.conv1.weight'"):  # more blocks than configured
        convert_torchvision_resnet({**sd, "layer4.1.conv1.weight": sd["layer4.0.conv1.weight"]}, BLOCKS, WIDTH)


# --- checkpoints and the CLI -------------------------------------------------------------------

def test_checkpoint_roundtrip_and_mismatch_errors(tmp_path):
    config = tiny_config(backup=False)
    tree = {"params": {"neck": {"classifier": {"kernel": np.arange(D * C, dtype=np.float32).reshape(D, C)}},
                       "gem": {"p": np.array([3.0], np.float32)}},
            "batch_stats": {"neck": {"bn": {"mean": np.linspace(0, 1, D, dtype=np.float32)}}}}
    checkpoints.save_variables(tmp_path / "ckpt", tree, config)
    assert checkpoints.load_config(tmp_path / "ckpt") == config
    restored = checkpoints.load_variables(tmp_path / "ckpt", expected=tree)
    for path, value in jax.tree_util.tree_leaves_with_path(tree):
        np.testing.assert_array_equal(dict(jax.tree_util.tree_leaves_with_path(restored))[path], value)
    with pytest.raises(FileExistsError):
        checkpoints.save_variables(tmp_path / "ckpt", tree, config)

    wrong = jax.tree_util.tree_map(lambda x: x, tree)
    wrong["params"]["neck"]["classifier"]["kernel"] = jax.ShapeDtypeStruct((D, C + 1), np.float32)
    with pytest.raises(checkpoints.CheckpointMismatchError,
                       match=rf"params/neck/classifier/kernel: stored shape \({D}, {C}\), expected \({D}, {C + 1}\)"):
        checkpoints.load_variables(tmp_path / "ckpt", expected=wrong)
    del wrong["params"]["gem"]
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"unexpected params/gem/p \(shape \(1,\)\)"):
        checkpoints.load_variables(tmp_path / "ckpt", expected=wrong)


@pytest.mark.slow
def test_convert_cli_torchvision_resnet50_roundtrip(tmp_path):
    from tvilfm_jax import convert

    torch.manual_seed(0)
    model = tref.torchvision_resnet50_last_stride1()
    torch.save(model.state_dict(), tmp_path / "resnet50.pth")
    # Full ResNet-50; a 1-layer, narrow text tower keeps the checkpoint small.
    argv = ["--kind", "torchvision", "--input", str(tmp_path / "resnet50.pth"), "--num_classes", "7",
            "--output", str(tmp_path / "ckpt"),
            "--model_json", json.dumps({"text": {"vocab_size": 64, "width": 16, "layers": 1, "heads": 2}})]
    convert.main(argv)
    config, loaded = checkpoints.load_checkpoint(tmp_path / "ckpt")
    assert config.resnet_blocks == (3, 4, 6, 3) and config.num_classes == 7 and not config.backup
    _, expected = convert.convert(convert.parse_args(argv))  # deterministic: same seed, same input
    flat_loaded = dict(jax.tree_util.tree_leaves_with_path(loaded))
    flat_expected = dict(jax.tree_util.tree_leaves_with_path(expected))
    assert flat_loaded.keys() == flat_expected.keys()
    for path, value in flat_expected.items():
        np.testing.assert_array_equal(flat_loaded[path], value, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_array_equal(loaded["params"]["visual"]["body"]["layer4_2"]["conv3"]["kernel"],
                                  model.layer4[2].conv3.weight.detach().numpy().transpose(2, 3, 1, 0))
    with pytest.raises(SystemExit, match="already exists; pass --overwrite to replace it"):
        convert.main(argv)


def test_convert_cli_official_stage1_with_backup_copy(tmp_path):
    from tvilfm_jax import convert

    model, sd = random_official_state_dict(backup=False, seed=3)
    torch.save(model.state_dict(), tmp_path / "base.pth")
    common = ["--kind", "official", "--input", str(tmp_path / "base.pth"), "--num_classes", str(C),
              "--model_json", json.dumps({"resnet_blocks": BLOCKS, "resnet_width": WIDTH, "text": TEXT})]
    convert.main([*common, "--backup", "copy", "--output", str(tmp_path / "stage2_init")])
    config, loaded = checkpoints.load_checkpoint(tmp_path / "stage2_init")
    assert config == tiny_config(backup=True)
    for collection in ("params", "batch_stats"):
        for src, dst in (("gem", "backup_gem"), ("neck", "backup_neck")):
            if src in loaded[collection]:
                for a, b in zip(jax.tree_util.tree_leaves(loaded[collection][src]),
                                jax.tree_util.tree_leaves(loaded[collection][dst])):
                    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded["params"]["neck"]["classifier"]["kernel"], sd["classifier.classifier.weight"].T)
    np.testing.assert_array_equal(loaded["params"]["text"]["positional_embedding"], sd["base_model.positional_embedding"])
    with pytest.raises(SystemExit, match="no backup_pool"):
        convert.main([*common, "--backup", "checkpoint", "--output", str(tmp_path / "other")])
    assert not os.path.exists(tmp_path / "other")


def test_convert_without_torch_says_which_extra_to_install(tmp_path, monkeypatch):
    """torch is the `convert` extra, not a core dependency: its absence is one line, no traceback."""
    from tvilfm_jax import convert

    path = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ModuleNotFoundError
    with pytest.raises(SystemExit, match=r"needs torch: pip install 'tvilfm-jax\[convert\]'"):
        convert.main(["--kind", "official", "--input", str(path), "--num_classes", "3",
                      "--output", str(tmp_path / "out")])
