"""Test-time features: every image and caption through the network once, in jitted batches.

Extraction stops before the BN-neck and keeps the pre-neck features (GeM image features, EOT
caption features), so that one pass serves every protocol, text source and trial: the query
embeddings of docs/original.md §6.2-6.3 are then cheap functions of those features (the model's
heads, `TVILFM.gallery_heads` / `query_heads`), whatever caption each query is given. Images go
to the device as uint8 and are normalised in the jitted function (ToTensor + ImageNet Normalize,
as `data.transforms.normalize`).

Flip test-time augmentation (not in the original, docs/original.md §6.1) averages the GeM features of an
image and of its mirror image before the neck. BN in eval mode is affine, so this equals
averaging the two un-normalised BN outputs before the L2 norm; Fusion uses the averaged f_IR.

In eval mode every row is independent of the rest of its batch, so batch size and padding do
not change the features (up to float reassociation).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from tvilfm_jax.data.images import resize
from tvilfm_jax.data.tokenizer import tokenize
from tvilfm_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD

MODALITIES = ("rgb", "ir")


def normalize_images(images: jax.Array) -> jax.Array:
    """uint8 [N, H, W, 3] -> float32 ImageNet-normalised [N, H, W, 3]."""
    x = images.astype(jnp.float32) / jnp.float32(255)
    return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


# The network and its heads are methods of the model (`TVILFM.eval_image_features`,
# `text_features`, `embed`, `gallery_heads`, `query_heads`); this module batches, jits and calls
# them. The jitted functions take the (hashable) model as a static argument, so every extractor
# of one model definition shares their compilation cache.


@functools.partial(jax.jit, static_argnames=("model", "modality", "flip"))
def _image_fn(model: nn.Module, variables, images: jax.Array, modality: str, flip: bool):
    x = normalize_images(images)
    b = x.shape[0]
    if flip:
        x = jnp.concatenate([x, jnp.flip(x, axis=2)])
    rgb, ir = (x, None) if modality == "rgb" else (None, x)
    out = model.apply(variables, rgb, ir, method="eval_image_features")
    if not flip:
        return out
    return {k: v[:b] for k, v in out.items()} | {f"{k}_flip": v[b:] for k, v in out.items()}


@functools.partial(jax.jit, static_argnames=("model", "method"))
def _apply_fn(model: nn.Module, variables, *args, method: str):
    return model.apply(variables, *args, method=method)


@dataclasses.dataclass(frozen=True)
class ImageFeatures:
    """Pre-neck GeM features of N images (jax arrays [N, D]).

    current: through the current GeM; backup: through backup_gem (None without backups);
    current_flip / backup_flip: the same of the mirrored images (None unless extracted).
    """

    current: jax.Array
    backup: jax.Array | None = None
    current_flip: jax.Array | None = None
    backup_flip: jax.Array | None = None

    def with_tta(self, flip: bool) -> ImageFeatures:
        """Plain features, or (flip=True) the mean of plain and mirrored features."""
        if not flip:
            return ImageFeatures(self.current, self.backup)
        if self.current_flip is None:
            raise ValueError("flip TTA was requested but mirrored features were not extracted (flip=True)")
        backup = None if self.backup is None else (self.backup + self.backup_flip) / 2
        return ImageFeatures((self.current + self.current_flip) / 2, backup)


class FeatureExtractor:
    """Jitted, batched feature extraction and embedding heads for one model definition.

    Args:
      model: a `TVILFM` module (its config decides backups and fusion).
      batch_size: images / captions per jitted call (the last batch is zero-padded to it);
        `EvalSettings.batch_size` in an evaluation.
      image_size: (H, W) fed to the network; stored images of another size are Lanczos-resized
        (`EvalSettings.image_size`: the training size).
      sharding: optional sharding of the batch axis (e.g. NamedSharding(mesh, P("data")) of a
        single-process mesh); the batch size is rounded up to a multiple of its device count.
        Default: jit's placement.
      progress: show tqdm progress bars.
    """

    def __init__(self, model: nn.Module, batch_size: int, image_size: tuple[int, int],
                 sharding: jax.sharding.Sharding | None = None, progress: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = model
        if sharding is not None:
            devices = len(sharding.device_set)
            batch_size = -(-int(batch_size) // devices) * devices
        self.batch_size = int(batch_size)
        self.image_size = tuple(int(s) for s in image_size)
        self.sharding = sharding
        self.progress = progress

    # --- batching ------------------------------------------------------------------------------

    def _put(self, array: np.ndarray) -> jax.Array:
        return jax.device_put(array, self.sharding) if self.sharding is not None else jnp.asarray(array)

    def _batch_size(self, n: int) -> int:
        # Small sets run as one batch of their own size rather than mostly padding.
        return max(1, min(self.batch_size, n)) if self.sharding is None else self.batch_size

    def _image_batches(self, images: Sequence[np.ndarray], batch: int) -> Iterator[tuple[np.ndarray, int]]:
        """(uint8 [batch, H, W, 3], valid rows); the next batch is read while this one runs."""

        def load(start: int) -> tuple[np.ndarray, int]:
            stop = min(start + batch, len(images))
            out = np.zeros((batch, *self.image_size, 3), np.uint8)
            for j, i in enumerate(range(start, stop)):
                image = np.asarray(images[i])
                if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                    raise ValueError(f"image {i} must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
                out[j] = resize(image, self.image_size)
            return out, stop - start

        starts = range(0, len(images), batch)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(load, starts[0]) if len(starts) else None
            for k in range(len(starts)):
                current = pending.result()
                pending = pool.submit(load, starts[k + 1]) if k + 1 < len(starts) else None
                yield current

    # --- extraction ----------------------------------------------------------------------------

    def image_features(self, variables, images: Sequence[np.ndarray], modality: str, *, flip: bool = False,
                       desc: str | None = None) -> ImageFeatures:
        """Pre-neck features of uint8 [H, W, 3] images of `modality` ("rgb" or "ir")."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if not len(images):
            raise ValueError("image_features needs at least one image")
        batch = self._batch_size(len(images))
        parts: dict[str, list[jax.Array]] = {}
        bar = tqdm(total=len(images), desc=desc or f"{modality} features", unit="img", disable=not self.progress,
                   leave=False)
        for array, valid in self._image_batches(images, batch):
            out = _image_fn(self.model, variables, self._put(array), modality, bool(flip))
            for key, value in out.items():
                parts.setdefault(key, []).append(value[:valid])
            bar.update(valid)
        bar.close()
        return ImageFeatures(**{k: jnp.concatenate(v) for k, v in parts.items()})

    def text_features(self, variables, captions: Sequence[str], *, desc: str = "caption features") -> jax.Array:
        """Pre-neck EOT features [U, D] of `captions` (tokenised here, CLIP BPE, 77 tokens)."""
        if not len(captions):
            raise ValueError("text_features needs at least one caption")
        ids = tokenize(list(captions))
        batch = self._batch_size(len(ids))
        parts = []
        for start in tqdm(range(0, len(ids), batch), desc=desc, disable=not self.progress, leave=False):
            chunk = ids[start:start + batch]
            padded = np.zeros((batch, ids.shape[1]), np.int32)
            padded[: len(chunk)] = chunk
            parts.append(_apply_fn(self.model, variables, self._put(padded), method="text_features")[: len(chunk)])
        return jnp.concatenate(parts)

    # --- heads ---------------------------------------------------------------------------------

    def embed(self, variables, feats: jax.Array) -> jax.Array:
        """As `TVILFM.embed`: L2(BN(feats)) through the current neck, [N, D] -> [N, D]."""
        return _apply_fn(self.model, variables, feats, method="embed")

    def gallery_embeddings(self, variables, feats: ImageFeatures) -> dict[str, jax.Array]:
        """As `TVILFM.gallery_heads`: {"current", "ir"} from RGB pre-neck features."""
        return _apply_fn(self.model, variables, feats.current, feats.backup, method="gallery_heads")

    def query_embeddings(self, variables, feats: ImageFeatures, t_rgb: jax.Array,
                         t_ir: jax.Array) -> dict[str, jax.Array]:
        """As `TVILFM.query_heads`, from IR pre-neck features and caption features [Q, D]:
        {"ir", "ir_current", "text", "fusion"} (MER = fusion + ir_current + text scores)."""
        return _apply_fn(self.model, variables, feats.current, feats.backup, t_rgb, t_ir, method="query_heads")
