"""CLIP text tower (OpenAI CLIP RN50's, docs/original.md §1.4) as a Flax linen module.

Token + learned positional embedding, pre-LN transformer blocks with causal self-attention and
QuickGELU MLPs, a final LayerNorm and a bias-free projection. The sentence feature is the row at
the EOT token, found as argmax of the ids (EOT 49407 is the largest id). There is no padding
mask: causality already keeps the zeros after EOT out of every row up to EOT.

Parameter tree (names follow OpenAI's so conversion stays readable):
  token_embedding/embedding [V, W], positional_embedding [L, W],
  resblocks_{i}/{ln_1, attn/{q_proj, k_proj, v_proj, out_proj}, ln_2, mlp/{c_fc, c_proj}},
  ln_final/{scale, bias}, text_projection [W, E].
Params are float32; matmuls run in `config.dtype`; LayerNorm and softmax run in float32.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    layers: int = 12
    heads: int = 8
    embed_dim: int = 2048
    dtype: jnp.dtype = jnp.float32  # compute dtype

    def __post_init__(self):
        # One canonical form (np.dtype), so configs rebuilt from JSON hash equal and jit reuses.
        object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
        if self.width % self.heads:
            raise ValueError(f"TextConfig: width {self.width} is not divisible by heads {self.heads}")


def quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


def _layer_norm(name: str) -> nn.LayerNorm:
    # PyTorch's default eps; fp32 as in CLIP's LayerNorm subclass, whatever the compute dtype.
    return nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32, name=name)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with biases and a causal mask. [N, L, W] -> [N, L, W]."""

    width: int
    heads: int
    layers: int  # only for the init scale of the output projection
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, length, _ = x.shape
        head_dim = self.width // self.heads
        # OpenAI CLIP's initialisation (attn std W^-0.5, residual outputs further / sqrt(2*layers)).
        in_init = nn.initializers.normal(self.width**-0.5)
        out_init = nn.initializers.normal(self.width**-0.5 * (2 * self.layers) ** -0.5)

        def proj(name, init):
            return nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float32,
                            kernel_init=init, bias_init=nn.initializers.zeros, name=name)

        def split(t):  # [N, L, W] -> [N, heads, L, head_dim]
            return t.reshape(n, length, self.heads, head_dim).transpose(0, 2, 1, 3)

        q = split(proj("q_proj", in_init)(x)) * jnp.asarray(head_dim**-0.5, self.dtype)
        k = split(proj("k_proj", in_init)(x))
        v = split(proj("v_proj", in_init)(x))
        logits = jnp.einsum("nhqd,nhkd->nhqk", q, k).astype(jnp.float32)
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        # Every row keeps its diagonal, so -inf never fills a whole row.
        logits = jnp.where(causal, logits, -jnp.inf)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("nhqk,nhkd->nhqd", weights, v)
        out = out.transpose(0, 2, 1, 3).reshape(n, length, self.width)
        return proj("out_proj", out_init)(out)


class MLP(nn.Module):
    """W -> 4W -> W with QuickGELU."""

    width: int
    layers: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fc_init = nn.initializers.normal((2 * self.width) ** -0.5)
        out_init = nn.initializers.normal(self.width**-0.5 * (2 * self.layers) ** -0.5)
        x = nn.Dense(4 * self.width, dtype=self.dtype, param_dtype=jnp.float32,
                     kernel_init=fc_init, bias_init=nn.initializers.zeros, name="c_fc")(x)
        x = quick_gelu(x)
        return nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float32,
                        kernel_init=out_init, bias_init=nn.initializers.zeros, name="c_proj")(x)


class ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)). [N, L, W] -> [N, L, W]."""

    width: int
    heads: int
    layers: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _layer_norm("ln_1")(x).astype(self.dtype)
        x = x + CausalSelfAttention(self.width, self.heads, self.layers, self.dtype, name="attn")(h)
        h = _layer_norm("ln_2")(x).astype(self.dtype)
        return x + MLP(self.width, self.layers, self.dtype, name="mlp")(h)


class CLIPTextEncoder(nn.Module):
    """CLIP text tower.

    `__call__(ids)`: int32 [N, L] (L <= context_length) -> [N, embed_dim], the EOT row.
    `encode_tokens(ids)`: int32 [N, L] -> [N, L, embed_dim], every row (the original's
    `encode_text`). Outputs are in `config.dtype`.
    """

    config: TextConfig

    def setup(self):
        c = self.config
        self.token_embedding = nn.Embed(c.vocab_size, c.width, embedding_init=nn.initializers.normal(0.02),
                                        param_dtype=jnp.float32, dtype=c.dtype)
        self.positional_embedding = self.param(
            "positional_embedding", nn.initializers.normal(0.01), (c.context_length, c.width), jnp.float32)
        self.resblocks = [ResidualAttentionBlock(c.width, c.heads, c.layers, c.dtype) for _ in range(c.layers)]
        self.ln_final = _layer_norm("ln_final")
        self.text_projection = self.param(
            "text_projection", nn.initializers.normal(c.width**-0.5), (c.width, c.embed_dim), jnp.float32)

    def _hidden(self, ids: jax.Array) -> jax.Array:
        if ids.ndim != 2:
            raise ValueError(f"CLIPTextEncoder: token ids must be [N, L], got shape {ids.shape}")
        if ids.shape[1] > self.config.context_length:
            raise ValueError(f"CLIPTextEncoder: {ids.shape[1]} tokens exceed context_length {self.config.context_length}")
        dtype = self.config.dtype
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]].astype(dtype)
        for block in self.resblocks:
            x = block(x)
        return x

    def _project(self, x: jax.Array) -> jax.Array:
        x = self.ln_final(x).astype(self.config.dtype)
        return x @ self.text_projection.astype(self.config.dtype)

    def encode_tokens(self, ids: jax.Array) -> jax.Array:
        return self._project(self._hidden(ids))

    def __call__(self, ids: jax.Array) -> jax.Array:
        x = self._hidden(ids)
        # LN and projection act per token, so gather the EOT row first and skip the others.
        eot = jnp.argmax(ids, axis=-1)
        x = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
        return self._project(x)
