"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), jitted.

    scores = rerank(sim_qg, sim_qq, sim_gg, k1=20, k2=6, lambda_=0.3)   # [Q, G], higher = closer

The paper's definitions, on the union P of the Q queries and G gallery items (N = Q + G), with
d(p, g) the original distance:

  N(p, k)   the k nearest items of p in P, p itself first (ties broken by the lower index;
            p goes first even when a duplicate of it lies at distance 0)
  R(p, k)   = {g in N(p, k+1) : p in N(g, k+1)}: the k-reciprocal neighbours (eq. 4; k+1 because
            p is in P and is its own nearest item)
  R*(p, k)  = R(p, k) united with every R(q, round(k/2)), q in R(p, k), that shares at least
            two thirds of its members with R(p, k) (eq. 6; the authors' released code demands
            strictly more than two thirds: sets of 3, 6, 9, ... members decide differently)
  V_p       V_{p,g} = exp(-d(p, g)) for g in R*(p, k1), 0 elsewhere (eq. 7, a Gaussian kernel of
            the Euclidean distance), divided by its sum (as the authors' code: every V_p sums to 1)
  local QE  V_p <- the mean of V_g over g in N(p, k2) (eq. 10; p included)
  d_J(p, g) = 1 - sum_j min(V_pj, V_gj) / sum_j max(V_pj, V_gj)   (Jaccard distance, eq. 11)
  d*(p, g)  = (1 - lambda) d_J(p, g) + lambda d(p, g)   (eq. 12)

d is the squared Euclidean distance of unit vectors, 2 - 2 cos, divided by the largest value of
its row (over all of P) as the authors' code does, so d lies in [0, 1] like d_J and lambda
weighs the two terms as in the paper's experiments. Inputs are cosine similarities of
L2-normalised embeddings; the result is -d* (higher = better, the convention of
`eval.metrics`). Sizes past N are clamped to N (k1 + 1, round(k1/2) + 1 and k2 items).

Cost: the [N, N] distance matrix, its k-reciprocal mask and the vectors V before and after
query expansion are dense, about 4 N^2 float32 at the peak (N = 11k, an LLCM trial: ~2 GB);
neighbour sets are [N, k1 + 1, round(k1/2) + 1] integers. The Jaccard term runs in query
chunks over the nonzeros of each query's V (at most S, the largest support, found with one
device-to-host read between the two jitted stages): O(Q G S) time, C x S x G memory per chunk.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Elements of one Jaccard chunk's [C, S, G] gather (64 MB of float32).
_CHUNK_ELEMENTS = 1 << 24


def rerank(sim_qg: jax.Array, sim_qq: jax.Array, sim_gg: jax.Array, k1: int = 20, k2: int = 6,
           lambda_: float = 0.3) -> jax.Array:
    """Re-ranked scores -d* [Q, G] (module docstring) from cosine similarities of unit vectors:
    query-gallery sim_qg [Q, G], query-query sim_qq [Q, Q], gallery-gallery sim_gg [G, G]."""
    num_query = sim_qg.shape[0]
    dist, vectors = _expanded_vectors(jnp.asarray(sim_qg, jnp.float32), jnp.asarray(sim_qq, jnp.float32),
                                      jnp.asarray(sim_gg, jnp.float32), k1=int(k1), k2=int(k2))
    vq, vg = vectors[:num_query], vectors[num_query:]
    support = _bucket(int(jnp.max(jnp.sum(vq > 0, axis=1))), vq.shape[1])
    chunk = int(max(1, min(num_query, _CHUNK_ELEMENTS // (vg.shape[0] * support))))
    return _final_scores(vq, vg, dist[:num_query, num_query:], jnp.float32(lambda_), support=support, chunk=chunk)


def _bucket(support: int, n: int) -> int:
    """The next power of two >= support (at most n): few distinct shapes, few compilations."""
    return min(n, 1 << max(0, support - 1).bit_length())


def _distances(sim_qg: jax.Array, sim_qq: jax.Array, sim_gg: jax.Array) -> jax.Array:
    """Row-normalised squared distances d [N, N] over queries then gallery (module docstring)."""
    sim = jnp.concatenate([jnp.concatenate([sim_qq, sim_qg], axis=1),
                           jnp.concatenate([sim_qg.T, sim_gg], axis=1)], axis=0)
    d = 2.0 - 2.0 * sim
    d = jnp.where(d > 0, d, 0.0)  # rounding below 0, and -0.0, become +0.0 (one bit pattern: ties by index)
    return d / jnp.maximum(jnp.max(d, axis=1, keepdims=True), jnp.finfo(jnp.float32).tiny)


def _reciprocal(nearest: jax.Array) -> jax.Array:
    """bool [N, k]: whether item nearest[i, a] has i among its own k nearest ([N, k] int32)."""
    mutual = nearest[nearest] == jnp.arange(nearest.shape[0])[:, None, None]  # [N, k, k]
    return jnp.any(mutual, axis=-1)


@functools.partial(jax.jit, static_argnames=("k1", "k2"))
def _expanded_vectors(sim_qg: jax.Array, sim_qq: jax.Array, sim_gg: jax.Array, *, k1: int,
                      k2: int) -> tuple[jax.Array, jax.Array]:
    """(d [N, N], V after local query expansion [N, N]) of the module docstring."""
    d = _distances(sim_qg, sim_qq, sim_gg)
    n = d.shape[0]
    k, kh, kq = min(k1 + 1, n), min(round(k1 / 2) + 1, n), min(k2, n)
    # Each item first in its own list: -1 is below every distance.
    _, order = jax.lax.top_k(-jnp.where(jnp.eye(n, dtype=bool), -1.0, d), max(k, kh, kq))
    # Without the barrier XLA (CPU) merges the top-k into its consumers, ~20x slower at N = 4k.
    order = jax.lax.optimization_barrier(order)
    nearest, half = order[:, :k], order[:, :kh]
    in_r, in_half = _reciprocal(nearest), _reciprocal(half)  # R(i, k1), R(i, k1/2) as masks over the lists
    # Candidate a of item i is c = nearest[i, a]; its half set is half[c] where in_half[c].
    cand, cand_in = half[nearest], in_half[nearest]  # [N, k, kh]
    shared = jnp.any((cand[..., None] == nearest[:, None, None, :]) & in_r[:, None, None, :], axis=-1)
    overlap, size = jnp.sum(shared & cand_in, axis=-1), jnp.sum(cand_in, axis=-1)
    accepted = in_r & (3 * overlap >= 2 * size)  # |R ∩ R_half| >= 2/3 |R_half|, in integers
    # R*(i): the members of both kinds, the rest pointed at a spare column n.
    members = jnp.concatenate([jnp.where(in_r, nearest, n),
                               jnp.where(accepted[..., None] & cand_in, cand, n).reshape(n, -1)], axis=1)
    mask = jnp.zeros((n, n + 1), bool).at[jnp.arange(n)[:, None], members].set(True)[:, :n]
    weights = jnp.where(mask, jnp.exp(-d), 0.0)
    v = weights / jnp.sum(weights, axis=1, keepdims=True)  # > 0: i is in R(i, k1)
    expanded = v[order[:, 0]]
    for a in range(1, kq):  # one [N, N] gather at a time, not a [N, k2, N] one
        expanded = expanded + v[order[:, a]]
    return d, expanded / kq


@functools.partial(jax.jit, static_argnames=("support", "chunk"))
def _final_scores(vq: jax.Array, vg: jax.Array, dist_qg: jax.Array, lambda_: jax.Array, *, support: int,
                  chunk: int) -> jax.Array:
    """-d* [Q, G] from the expanded vectors of the queries vq [Q, N] and the gallery vg [G, N]
    (each query row has at most `support` nonzeros) and the original distances [Q, G]."""
    num_query, n = vq.shape
    pad = -num_query % chunk
    vg_t = vg.T  # [N, G]: the gather below reads whole rows

    def shared_mass(block):  # [C, N] -> sum_j min(V_qj, V_gj) [C, G], over the query's nonzeros only
        values, index = jax.lax.top_k(block, support)  # [C, S]
        return jnp.sum(jnp.minimum(values[..., None], vg_t[index]), axis=1)

    blocks = jnp.pad(vq, ((0, pad), (0, 0))).reshape(-1, chunk, n)
    num = jax.lax.map(shared_mass, blocks).reshape(-1, vg.shape[0])[:num_query]
    # sum max = sum V_q + sum V_g - sum min.
    jaccard = 1.0 - num / (jnp.sum(vq, axis=1)[:, None] + jnp.sum(vg, axis=1)[None, :] - num)
    return -((1.0 - lambda_) * jaccard + lambda_ * dist_qg)

