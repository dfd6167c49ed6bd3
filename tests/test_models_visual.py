"""Visual side vs PyTorch: BatchNorm, dual-stem ResNet (torchvision weights), GeM, BN-neck.

The PyTorch modules are the shared reference, `benchmarks.torch_reference`; the test helpers
here (`nchw`, `randomize_batchnorm`) are also used by test_conversion.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvilfm_jax.models.batchnorm import BatchNorm
from tvilfm_jax.models.gem import GeM
from tvilfm_jax.models.neck import BNNeck
from tvilfm_jax.models.resnet import DualResNet

import torch
nn = torch.nn

from benchmarks import torch_reference as tref  # noqa: E402


def assert_close_scaled(actual, expected, rtol=1e-4, what="output"):
    """max |a - e| <= rtol * max |e|: activations of random deep nets span many magnitudes."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err, scale = np.abs(actual - expected).max(), np.abs(expected).max()
    assert err <= rtol * scale, f"{what}: max abs diff {err:.3g} > {rtol} x output scale {scale:.3g}"


def nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


def randomize_batchnorm(module, seed: int) -> None:
    """Random affine and running statistics in every BN, so eval mode is non-trivial.

    The last BN of each residual branch (`bn3`) gets gamma in [0.1, 0.3], as in trained ResNets:
    with gamma ~ 1 there, a random 16-block ResNet-50 in train mode is so sensitive that PyTorch's
    own fp32 result is ~7e-5 (relative to the output scale) away from its fp64 result, i.e. a
    1e-4 parity bound would test rounding noise. With damped branches fp32 noise is ~3e-6.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in module.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(*((0.1, 0.3) if name.endswith("bn3") else (0.5, 1.5)), generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)


def stats_from_torch_dual(dual: tref.DualResNet, blocks, width):
    """The running statistics of a torch DualResNet in the JAX DualResNet's batch_stats layout."""
    from tvilfm_jax.conversion.common import StateDict
    from tvilfm_jax.conversion.resnet import body_from_torch, stem_from_torch

    sd = StateDict({k: v.numpy() for k, v in dual.state_dict().items()})
    rgb = stem_from_torch(sd, "rgb_model.resnet_conv.0", "rgb_model.resnet_conv.1", width)[1]
    ir = stem_from_torch(sd, "ir_model.resnet_conv.0", "ir_model.resnet_conv.1", width)[1]
    body = body_from_torch(sd, [f"shared_model.resnet_conv.{i}" for i in range(4)], blocks, width)[1]
    return {"rgb_stem": rgb, "ir_stem": ir, "body": body}


def images(n, h, w, seed):
    return np.random.RandomState(seed).randn(n, h, w, 3).astype(np.float32)


# --------------------------------------------------------------------------------------------
# BatchNorm


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(6, 5, 3, 4), (7, 4)])
def test_batchnorm_matches_torch_outputs_and_running_stats(shape):
    x = np.random.RandomState(0).randn(*shape).astype(np.float32) * 3 + 1
    channels = shape[-1]
    ref = nn.BatchNorm2d(channels) if len(shape) == 4 else nn.BatchNorm1d(channels)
    randomize_batchnorm(ref, seed=1)
    variables = {
        "params": {"scale": ref.weight.detach().numpy(), "bias": ref.bias.detach().numpy()},
        "batch_stats": {"mean": ref.running_mean.numpy().copy(), "var": ref.running_var.numpy().copy()},
    }
    xt = nchw(x) if len(shape) == 4 else torch.from_numpy(x)
    to_last = nhwc if len(shape) == 4 else (lambda t: t.detach().numpy())

    ref.eval()
    y_eval = BatchNorm().apply(variables, x, use_running_average=True)
    np.testing.assert_allclose(y_eval, to_last(ref(xt)), rtol=1e-5, atol=1e-5)

    ref.train()
    y, updated = BatchNorm().apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    np.testing.assert_allclose(y, to_last(ref(xt)), rtol=1e-5, atol=1e-5)
    # PyTorch's running_var uses the unbiased batch variance; Flax's own BatchNorm would not match.
    np.testing.assert_allclose(updated["batch_stats"]["mean"], ref.running_mean.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(updated["batch_stats"]["var"], ref.running_var.numpy(), rtol=1e-6, atol=1e-6)


def test_batchnorm_bf16_keeps_fp32_statistics_and_rejects_single_values():
    x = jnp.asarray(np.random.RandomState(0).randn(4, 3, 2, 6), jnp.bfloat16)
    bn = BatchNorm(dtype=jnp.bfloat16)
    variables = bn.init(jax.random.key(0), x, use_running_average=True)
    y, updated = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16
    assert updated["batch_stats"]["var"].dtype == jnp.float32
    assert jax.tree_util.tree_leaves(variables["params"])[0].dtype == jnp.float32
    x32 = np.asarray(x, np.float32)
    expected = (x32 - x32.mean((0, 1, 2))) / np.sqrt(x32.var((0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(np.asarray(y, np.float32), expected, atol=0.05)
    with pytest.raises(ValueError, match="more than one value per channel"):
        bn.apply(variables, x[:1, :1, :1], use_running_average=False, mutable=["batch_stats"])


# --------------------------------------------------------------------------------------------
# Dual-stem ResNet


def _check_dual_resnet_parity(torch_resnet, blocks, width, n_rgb, n_ir, hw):
    from tvilfm_jax.conversion.resnet import convert_torchvision_resnet

    randomize_batchnorm(torch_resnet, seed=3)
    variables = convert_torchvision_resnet(
        {k: v.detach().numpy() for k, v in torch_resnet.state_dict().items()}, blocks, width)
    net = DualResNet(blocks, width)
    rgb, ir = images(n_rgb, *hw, seed=4), images(n_ir, *hw, seed=5)

    ref = tref.DualResNet.from_torchvision(torch_resnet).eval()
    with torch.no_grad():
        expected = nhwc(ref.feature_map(nchw(rgb), nchw(ir)))
    assert_close_scaled(net.apply(variables, rgb, ir, train=False), expected, what="eval-mode features")

    ref.train()
    with torch.no_grad():
        expected = nhwc(ref.feature_map(nchw(rgb), nchw(ir)))
    out, updated = net.apply(variables, rgb, ir, train=True, mutable=["batch_stats"])
    assert out.shape == (n_rgb + n_ir, hw[0] // 16, hw[1] // 16, 32 * width)
    assert_close_scaled(out, expected, what="train-mode features")
    torch_stats = stats_from_torch_dual(ref, blocks, width)
    flat_ref = dict(jax.tree_util.tree_leaves_with_path(torch_stats))
    flat_jax = dict(jax.tree_util.tree_leaves_with_path(updated["batch_stats"]))
    assert flat_ref.keys() == flat_jax.keys()
    for path, value in flat_ref.items():
        np.testing.assert_allclose(flat_jax[path], value, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))
    # The two stems saw different images, so their statistics must have moved apart.
    assert not np.allclose(updated["batch_stats"]["rgb_stem"]["bn"]["mean"], updated["batch_stats"]["ir_stem"]["bn"]["mean"])
    return net, {"params": variables["params"], **updated}, ref, rgb, ir


@pytest.mark.slow
@pytest.mark.torch
def test_resnet50_matches_torchvision_in_train_and_eval_mode():
    torch.manual_seed(0)
    _check_dual_resnet_parity(tref.torchvision_resnet50_last_stride1(), (3, 4, 6, 3), 64, 2, 2, (64, 32))


@pytest.mark.torch
def test_small_resnet_matches_torch_and_routes_single_modalities():
    torch.manual_seed(1)
    blocks, width = (1, 2, 1, 1), 8
    # The returned variables carry the statistics of the train-mode pass, as `ref` does now.
    net, variables, ref, rgb, ir = _check_dual_resnet_parity(tref.torchvision_resnet(blocks, width), blocks, width, 3, 2, (64, 48))
    ref.eval()
    with torch.no_grad():
        only_rgb, only_ir = nhwc(ref.feature_map(rgb=nchw(rgb))), nhwc(ref.feature_map(ir=nchw(ir)))
    assert_close_scaled(net.apply(variables, rgb, None), only_rgb, what="rgb-only")
    assert_close_scaled(net.apply(variables, rgb[:0], ir), only_ir, what="ir-only (empty rgb)")
    with pytest.raises(ValueError, match="at least one"):
        net.apply(variables, None, ir[:0])


@pytest.mark.torch
def test_resnet_bf16_compute_keeps_fp32_params_and_statistics():
    from tvilfm_jax.conversion.resnet import convert_torchvision_resnet

    blocks, width = (1, 1, 1, 1), 8
    torch.manual_seed(2)
    variables = convert_torchvision_resnet(
        {k: v.numpy() for k, v in tref.torchvision_resnet(blocks, width).state_dict().items()}, blocks, width)
    rgb, ir = images(4, 32, 16, 0), images(4, 32, 16, 1)
    out16, stats = DualResNet(blocks, width, dtype=jnp.bfloat16).apply(
        variables, rgb, ir, train=True, mutable=["batch_stats"])
    assert out16.dtype == jnp.bfloat16 and bool(jnp.isfinite(out16).all())
    assert {x.dtype for x in jax.tree_util.tree_leaves(stats)} == {jnp.dtype(jnp.float32)}
    # Eval mode: bf16 keeps ~3 significant digits per op, well under 2% after 5 conv+BN stages.
    # (Train-mode BN over this tiny batch, 8 values per channel in layer4, amplifies it ~10x.)
    out32 = DualResNet(blocks, width).apply(variables, rgb, ir)
    out16 = DualResNet(blocks, width, dtype=jnp.bfloat16).apply(variables, rgb, ir)
    diff = np.linalg.norm(np.asarray(out16, np.float32) - out32) / np.linalg.norm(out32)
    assert diff < 0.02, diff


# --------------------------------------------------------------------------------------------
# GeM and BN-neck


@pytest.mark.torch
def test_gem_matches_torch_including_gradient_of_p():
    x = np.random.RandomState(0).randn(3, 5, 4, 6).astype(np.float32)  # negatives get clamped
    p0 = 2.5
    ref_gem = tref.GeM(p=p0)
    ref = ref_gem(nchw(x))
    ref.sum().backward()

    gem = GeM()
    params = {"params": {"p": jnp.array([p0], jnp.float32)}}
    np.testing.assert_allclose(gem.apply(params, x), ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda p: gem.apply(p, x).sum())(params)
    np.testing.assert_allclose(grad["params"]["p"], ref_gem.p.grad.numpy(), rtol=1e-4)
    init = gem.init(jax.random.key(0), x)
    assert init["params"]["p"].shape == (1,) and float(init["params"]["p"][0]) == 3.0
    # bf16 input: the pow still runs in fp32.
    assert gem.apply(params, x.astype(jnp.bfloat16)).dtype == jnp.float32


@pytest.mark.torch
def test_bnneck_train_and_eval_match_torch():
    rs = np.random.RandomState(0)
    x = rs.randn(10, 16).astype(np.float32) * 4
    ref = tref.Classifier(16, 7)
    bn, fc = ref.BN, ref.classifier
    fc.reset_parameters()  # nn.Linear's own scale (~0.14), not the neck's N(0, 0.001): logits of size ~1
    randomize_batchnorm(bn, seed=2)
    variables = {
        "params": {"bn": {"scale": bn.weight.detach().numpy(), "bias": bn.bias.detach().numpy()},
                   "classifier": {"kernel": fc.weight.detach().numpy().T}},
        "batch_stats": {"bn": {"mean": bn.running_mean.numpy().copy(), "var": bn.running_var.numpy().copy()}},
    }
    neck = BNNeck(7)
    (feats, logits), updated = neck.apply(variables, x, train=True, mutable=["batch_stats"])
    with torch.no_grad():
        ref_logits = ref.train()(torch.from_numpy(x))
    np.testing.assert_array_equal(feats, x)
    np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(updated["batch_stats"]["bn"]["var"], bn.running_var.numpy(), rtol=1e-6)

    emb = neck.apply({"params": variables["params"], **updated}, x, train=False)  # torch's stats moved too
    with torch.no_grad():
        ref_emb = ref.eval()(torch.from_numpy(x))
    np.testing.assert_allclose(emb, ref_emb.numpy(), rtol=1e-5, atol=1e-6)

    init = neck.init(jax.random.key(0), x, train=True)
    kernel = np.asarray(init["params"]["classifier"]["kernel"])
    assert kernel.shape == (16, 7) and 0.0005 < kernel.std() < 0.002
    np.testing.assert_array_equal(init["params"]["bn"]["scale"], 1.0)
    np.testing.assert_array_equal(init["params"]["bn"]["bias"], 0.0)
