"""CLIP text tower and its conversion, against PyTorch references, in fp32, random weights.

References: transformers' `CLIPTextModelWithProjection` (its keys mapped to OpenAI's names here,
test-side), and a small OpenAI-structured torch module (nn.MultiheadAttention with a packed
in-projection) that is also TorchScript-saved as a stand-in for `RN50.pt`.
"""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvilfm_jax.conversion.clip_text import (
    convert_openai_clip,
    text_params_from_torch,
    widen_projection,
)
from tvilfm_jax.conversion.common import ConversionError, StateDict
from tvilfm_jax.models.text import CLIPTextEncoder, TextConfig

import torch
pytestmark = pytest.mark.torch

SMALL = TextConfig(vocab_size=100, context_length=16, width=32, layers=2, heads=4, embed_dim=24)


def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.max(np.abs(got - want)) / np.max(np.abs(want))


def hf_model(config, seed=0):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    hf_config = CLIPTextConfig(
        vocab_size=config.vocab_size, hidden_size=config.width, intermediate_size=4 * config.width,
        num_hidden_layers=config.layers, num_attention_heads=config.heads,
        max_position_embeddings=config.context_length, projection_dim=config.embed_dim,
        hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
        pad_token_id=0, bos_token_id=config.vocab_size - 2, eos_token_id=config.vocab_size - 1,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = CLIPTextModelWithProjection(hf_config).eval()
    with torch.no_grad():  # HF zero-initialises biases and LN; make every parameter count.
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def hf_to_openai(state_dict):
    """transformers CLIP text keys -> OpenAI CLIP text keys (numpy)."""
    sd = {k: v.detach().numpy() for k, v in state_dict.items()}
    out = {
        "token_embedding.weight": sd.pop("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": sd.pop("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight": sd.pop("text_model.final_layer_norm.weight"),
        "ln_final.bias": sd.pop("text_model.final_layer_norm.bias"),
        "text_projection": sd.pop("text_projection.weight").T,
    }
    sd.pop("text_model.embeddings.position_ids", None)
    layers = {int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers.")}
    for i in sorted(layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attn.in_proj_{part}"] = np.concatenate(
                [sd.pop(src + f"self_attn.{n}_proj.{part}") for n in "qkv"])
            for hf, oa in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                           ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[dst + f"{oa}.{part}"] = sd.pop(src + f"{hf}.{part}")
    assert not sd, f"unmapped HF keys: {sorted(sd)}"
    return out


def random_ids(config, lengths, seed=0):
    """SOT, random ids below SOT, EOT, zero padding; EOT is the largest id as in CLIP."""
    rng = np.random.default_rng(seed)
    sot, eot = config.vocab_size - 2, config.vocab_size - 1
    ids = np.zeros((len(lengths), config.context_length), np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = [sot, *rng.integers(1, sot, n - 2), eot]
    return ids


@functools.cache
def _forward(config):
    model = CLIPTextEncoder(config)
    return jax.jit(lambda params, ids: model.apply(
        {"params": params}, ids, method=lambda m, x: (m(x), m.encode_tokens(x))))


def run(config, params, ids):
    """(EOT features [N, E], per-token features [N, L, E]) as numpy."""
    return jax.tree.map(np.asarray, _forward(config)(params, jnp.asarray(ids)))


def hf_parity(config, ids):
    model = hf_model(config)
    sd = StateDict(hf_to_openai(model.state_dict()))
    params = text_params_from_torch(sd, config)
    sd.finish()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids).long())
        want_eot = out.text_embeds.numpy()
        want_tokens = (out.last_hidden_state @ model.text_projection.weight.T).numpy()
    got_eot, got_tokens = run(config, params, ids)
    assert got_eot.shape == (len(ids), config.embed_dim)
    assert got_tokens.shape == (len(ids), ids.shape[1], config.embed_dim)
    return rel_err(got_eot, want_eot), rel_err(got_tokens, want_tokens)


def test_parity_with_transformers_small():
    # Lengths: short, EOT in the middle, and EOT in the very last slot (no padding at all).
    ids = random_ids(SMALL, [3, 9, SMALL.context_length])
    err_eot, err_tokens = hf_parity(SMALL, ids)
    assert err_eot <= 1e-5 and err_tokens <= 1e-5, (err_eot, err_tokens)


def test_parity_with_transformers_default_size():
    from tvilfm_jax.data.tokenizer import tokenize

    config = TextConfig()
    ids = tokenize(["a woman in a red coat and blue jeans carrying a black bag",
                    "the person in the infrared image wears a light top",
                    "a man " * 60])  # overflows: EOT in slot 76
    err_eot, err_tokens = hf_parity(config, ids)
    assert err_eot <= 1e-5 and err_tokens <= 1e-5, (err_eot, err_tokens)


def test_eot_row_and_causality():
    params = CLIPTextEncoder(SMALL).init(jax.random.key(0), jnp.zeros((1, SMALL.context_length), jnp.int32))["params"]
    ids = random_ids(SMALL, [5, 8])
    eot_feat, tokens = run(SMALL, params, ids)
    np.testing.assert_allclose(eot_feat, tokens[[0, 1], [4, 7]], rtol=1e-6, atol=1e-6)
    # No padding mask is needed: what follows EOT cannot reach it.
    noisy = ids.copy()
    noisy[0, 5:] = np.random.default_rng(1).integers(1, SMALL.vocab_size - 2, SMALL.context_length - 5)
    np.testing.assert_allclose(run(SMALL, params, noisy)[0][0], eot_feat[0], rtol=1e-6, atol=1e-6)
    # But the tower does attend: a change before EOT moves the feature.
    changed = ids.copy()
    changed[0, 1] = changed[0, 1] % 90 + 1
    assert np.abs(run(SMALL, params, changed)[0][0] - eot_feat[0]).max() > 1e-4
    # Shorter inputs use the first positional rows only.
    short_eot, _ = run(SMALL, params, ids[:, :8])
    np.testing.assert_allclose(short_eot, eot_feat, rtol=1e-5, atol=1e-6)


def test_init_tree_matches_conversion_and_bf16_runs():
    model = CLIPTextEncoder(SMALL)
    params = model.init(jax.random.key(0), jnp.zeros((2, SMALL.context_length), jnp.int32))["params"]
    converted = text_params_from_torch(StateDict(hf_to_openai(hf_model(SMALL).state_dict())), SMALL)
    def shapes(tree):
        return jax.tree.map(lambda x: (x.shape, str(x.dtype)), tree)

    assert shapes(jax.tree.map(jnp.asarray, converted)) == shapes(params)
    ids = random_ids(SMALL, [4, 12])
    half = CLIPTextEncoder(TextConfig(**{**SMALL.__dict__, "dtype": jnp.bfloat16}))
    got = half.apply({"params": converted}, jnp.asarray(ids))
    assert got.dtype == jnp.bfloat16
    want, _ = run(SMALL, converted, ids)
    assert rel_err(np.asarray(got, np.float32), want) < 5e-2


def test_bad_ids_shape():
    model = CLIPTextEncoder(SMALL)
    with pytest.raises(ValueError, match="exceed context_length"):
        model.init(jax.random.key(0), jnp.zeros((1, SMALL.context_length + 1), jnp.int32))
    with pytest.raises(ValueError, match=r"must be \[N, L\]"):
        model.init(jax.random.key(0), jnp.zeros((SMALL.context_length,), jnp.int32))


@pytest.mark.parametrize("shape", [(512, 1024, 2048), (8, 1000, 2000), (8, 100, 333), (8, 64, 64)])
def test_widen_projection_bitwise(shape):
    rows, in_dim, out_dim = shape
    w = (np.random.default_rng(in_dim).standard_normal((rows, in_dim)) * 0.05).astype(np.float32)
    want = torch.nn.functional.interpolate(
        torch.from_numpy(w)[None, None], size=(rows, out_dim), mode="bilinear", align_corners=False
    )[0, 0].half().float().numpy()
    got = widen_projection(w, out_dim)
    assert got.dtype == np.float32 and got.shape == (rows, out_dim)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


# A stand-in for OpenAI's RN50.pt: the text tower with OpenAI's module names, plus non-text keys.
class _QuickGELU(torch.nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class _Block(torch.nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(width, heads)
        self.ln_1 = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential(collections.OrderedDict([
            ("c_fc", torch.nn.Linear(width, 4 * width)), ("gelu", _QuickGELU()),
            ("c_proj", torch.nn.Linear(4 * width, width))]))
        self.ln_2 = torch.nn.LayerNorm(width)

    def forward(self, x):  # x: [L, N, W], OpenAI's sequence-first layout
        # Built here, not stored: OpenAI's mask is a plain attribute, absent from the state_dict.
        mask = torch.full((x.shape[0], x.shape[0]), float("-inf")).triu(1).to(x.dtype)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(torch.nn.Module):
    def __init__(self, width, heads, layers):
        super().__init__()
        self.resblocks = torch.nn.Sequential(*[_Block(width, heads) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class _OpenAIClipLike(torch.nn.Module):
    def __init__(self, config, proj_dim):
        super().__init__()
        c = config
        self.visual = torch.nn.Conv2d(3, 4, 3)
        self.token_embedding = torch.nn.Embedding(c.vocab_size, c.width)
        self.positional_embedding = torch.nn.Parameter(0.01 * torch.randn(c.context_length, c.width))
        self.transformer = _Transformer(c.width, c.heads, c.layers)
        self.ln_final = torch.nn.LayerNorm(c.width)
        self.text_projection = torch.nn.Parameter(c.width**-0.5 * torch.randn(c.width, proj_dim))
        self.logit_scale = torch.nn.Parameter(torch.ones([]))
        for name, value in (("input_resolution", 224), ("context_length", c.context_length), ("vocab_size", c.vocab_size)):
            self.register_buffer(name, torch.tensor(value))

    def forward(self, ids):
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


@pytest.fixture(scope="module")
def openai_like():
    """(fp16 module, fp32 module with the same fp16-rounded values) like OpenAI's JIT weights."""
    torch.manual_seed(0)
    model = _OpenAIClipLike(SMALL, proj_dim=12).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.half().float()  # round to fp16 values so both copies hold the same numbers
    half = _OpenAIClipLike(SMALL, proj_dim=12).eval()
    half.load_state_dict(model.state_dict())
    return half.half(), model


# TorchScript is deprecated upstream, but OpenAI's RN50.pt is such an archive.
@pytest.mark.filterwarnings("ignore:.*torch.jit:FutureWarning", "ignore:.*TorchScript archive:UserWarning")
def test_convert_openai_state_dict_and_torchscript_agree(openai_like, tmp_path):
    half, full = openai_like
    path = tmp_path / "RN50_like.pt"
    torch.jit.script(half).save(str(path))
    from_archive = convert_openai_clip(path, SMALL)
    from_state_dict = convert_openai_clip(half.state_dict(), SMALL)
    jax.tree.map(np.testing.assert_array_equal, from_archive, from_state_dict)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(from_archive))
    # 12 -> 24 columns, exactly as `widen_projection` does it.
    proj = full.text_projection.detach().numpy()
    np.testing.assert_array_equal(from_archive["text_projection"], widen_projection(proj, SMALL.embed_dim))
    # Same tower as the torch module itself (no widening: embed_dim = its projection width).
    narrow = TextConfig(**{**SMALL.__dict__, "embed_dim": 12})
    params = convert_openai_clip(path, narrow)
    ids = random_ids(SMALL, [3, 10, SMALL.context_length])
    with torch.no_grad():
        want = full(torch.from_numpy(ids).long()).numpy()
    assert rel_err(run(narrow, params, ids)[0], want) <= 1e-5


def test_convert_openai_errors_name_the_key(openai_like):
    half, _ = openai_like
    good = {k: v.float().numpy() for k, v in half.state_dict().items()}
    missing = {k: v for k, v in good.items() if k != "transformer.resblocks.1.mlp.c_fc.bias"}
    with pytest.raises(ConversionError, match=r"missing key 'transformer\.resblocks\.1\.mlp\.c_fc\.bias'"):
        convert_openai_clip(missing, SMALL)
    bad = {**good, "transformer.resblocks.0.attn.in_proj_weight": np.zeros((96, 31), np.float32)}
    with pytest.raises(ConversionError, match=r"'transformer\.resblocks\.0\.attn\.in_proj_weight' has shape \(96, 31\), expected \(96, 32\)"):
        convert_openai_clip(bad, SMALL)
    with pytest.raises(ConversionError, match=r"'text_projection' has shape \(31, 12\)"):
        convert_openai_clip({**good, "text_projection": np.zeros((31, 12), np.float32)}, SMALL)
    with pytest.raises(ConversionError, match=r"unexpected key.*'transformer\.resblocks\.2\.ln_1\.weight'"):
        convert_openai_clip({**good, "transformer.resblocks.2.ln_1.weight": np.ones(32, np.float32)}, SMALL)
    with pytest.raises(ConversionError, match="missing key 'token_embedding.weight'"):
        convert_openai_clip({k: v for k, v in good.items() if k != "token_embedding.weight"}, SMALL)


def test_text_params_under_a_prefix():
    # The official checkpoints keep the tower under `base_model.`, projection already widened.
    openai_keys = hf_to_openai(hf_model(SMALL).state_dict())
    tensors = {f"base_model.{k}": v for k, v in openai_keys.items()}
    tensors["classifier.classifier.weight"] = np.zeros((5, 24), np.float32)
    sd = StateDict(tensors, source="VI_sysu_BASE.pth")
    params = text_params_from_torch(sd.scoped("base_model."), SMALL)
    np.testing.assert_array_equal(params["resblocks_1"]["attn"]["k_proj"]["kernel"],
                                  openai_keys["transformer.resblocks.1.attn.in_proj_weight"][32:64].T)
    assert sd.unused() == ["classifier.classifier.weight"]
    narrow = {**tensors, "base_model.text_projection": np.zeros((32, 12), np.float32)}
    with pytest.raises(ConversionError, match=r"VI_sysu_BASE\.pth: key 'base_model\.text_projection' has shape"):
        text_params_from_torch(StateDict(narrow, source="VI_sysu_BASE.pth").scoped("base_model."), SMALL)
