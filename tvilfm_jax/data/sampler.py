"""Identity sampler of docs/original.md §5.6 as a pure function of (labels, P, K, seed, epoch).

One epoch is `steps_per_epoch` groups; each group draws P distinct identities uniformly without
replacement and, for each identity, K RGB and K IR sample indices uniformly *with* replacement.
Group g fills positions [g*P*K, (g+1)*P*K) of both index arrays, identity-major (K consecutive
positions per identity), so RGB and IR are aligned position by position and one group is one
global batch.

The order is global: every process computes the same arrays from (seed, epoch) and takes its own
contiguous share of each global batch with `process_share`, so the global batch, and therefore
training, does not depend on the number of hosts.
"""

from __future__ import annotations

import numpy as np

# Keeps the sampler's random stream apart from the per-example streams of the pipeline that
# are seeded from the same user seed.
SAMPLER_STREAM = 0


def steps_per_epoch(num_rgb: int, num_ir: int, ids_per_batch: int, images_per_id: int) -> int:
    """floor(max(#RGB, #IR) / (P*K)) + 1, the original's number of groups (= batches) per epoch."""
    return max(num_rgb, num_ir) // (ids_per_batch * images_per_id) + 1


def _as_labels(labels, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D integer array, got {labels.dtype} {labels.shape}")
    return labels


def _per_identity(labels: np.ndarray, identities: np.ndarray):
    """Sample indices grouped by identity: (indices sorted by label, start, count) per identity."""
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], identities, side="left")
    ends = np.searchsorted(labels[order], identities, side="right")
    return order, starts, ends - starts


def identity_epoch(
    labels_rgb,
    labels_ir,
    ids_per_batch: int,
    images_per_id: int,
    seed: int,
    epoch: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Global sample order of one epoch.

    Args:
      labels_rgb: int [N_rgb], identity label of every RGB training sample.
      labels_ir: int [N_ir], the same for IR; both must contain the same set of identities.
      ids_per_batch: P, identities per batch (8).
      images_per_id: K, images per identity and modality (4).
      seed, epoch: the order is a pure function of these (and the labels).

    Returns:
      (index_rgb, index_ir), int64 [S * P * K] with S = `steps_per_epoch(...)`; position i of
      both arrays holds the same identity, and each block of P*K positions holds P distinct
      identities with K samples each.
    """
    labels_rgb = _as_labels(labels_rgb, "labels_rgb")
    labels_ir = _as_labels(labels_ir, "labels_ir")
    identities = np.unique(labels_rgb)
    ir_identities = np.unique(labels_ir)
    if not np.array_equal(identities, ir_identities):
        only_rgb = np.setdiff1d(identities, ir_identities)[:5].tolist()
        only_ir = np.setdiff1d(ir_identities, identities)[:5].tolist()
        raise ValueError(
            "RGB and IR training labels must cover the same identities; "
            f"e.g. only in RGB: {only_rgb}, only in IR: {only_ir}"
        )
    if not 0 < ids_per_batch <= identities.size:
        raise ValueError(f"ids_per_batch must be in 1..{identities.size} (identities), got {ids_per_batch}")
    if images_per_id < 1:
        raise ValueError(f"images_per_id must be >= 1, got {images_per_id}")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got seed={seed} epoch={epoch}")

    steps = steps_per_epoch(labels_rgb.size, labels_ir.size, ids_per_batch, images_per_id)
    rng = np.random.default_rng([seed, SAMPLER_STREAM, epoch])
    # The first P columns of a uniformly random permutation per row: P distinct identities,
    # uniformly, in random order (np.random.choice(replace=False) semantics).
    chosen = np.argsort(rng.random((steps, identities.size)), axis=1)[:, :ids_per_batch]

    def draw(labels: np.ndarray) -> np.ndarray:
        order, starts, counts = _per_identity(labels, identities)
        picks = rng.integers(0, counts[chosen][..., None], size=(steps, ids_per_batch, images_per_id))
        return order[starts[chosen][..., None] + picks].reshape(-1).astype(np.int64)

    return draw(labels_rgb), draw(labels_ir)


def process_share(index: np.ndarray, global_batch: int, process_index: int, process_count: int) -> np.ndarray:
    """This process's part of every global batch: int [S * global_batch] -> [S, global_batch / n].

    Process p takes positions [p*b, (p+1)*b) of each global batch (b = global_batch / n), so the
    shares of all processes, concatenated in process order, give back the global batch.
    """
    index = np.asarray(index)
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index} of {process_count}")
    if global_batch % process_count:
        raise ValueError(f"global batch {global_batch} is not divisible by process_count {process_count}")
    if index.ndim != 1 or index.size % global_batch:
        raise ValueError(f"index of shape {index.shape} is not a whole number of batches of {global_batch}")
    local = global_batch // process_count
    batches = index.reshape(-1, global_batch)
    return batches[:, process_index * local : (process_index + 1) * local]
