"""Training and test image transforms of docs/original.md §5.5, in vectorised NumPy.

Every transform maps a uint8 HWC image [H, W, 3] to a normalised float32 HWC image [H, W, 3]
of the same size (the random crop is as large as the input, after a 10-pixel zero pad). The
three training pipelines are

  color1  (RGB view 1): pad, crop, hflip, RandomGrayscale(0.1), normalise, CRE(0.6)
  color2  (RGB view 2): pad, crop, hflip, normalise, CRE(0.6), ChannelExchange(gray=2)
  thermal (IR):         pad, crop, hflip, normalise, CRE(0.5), ChannelAdapGray(0.6)

All randomness comes from an explicit `numpy.random.Generator`; the draws happen in the order the
original draws them (crop rows, crop cols, flip, grayscale, erasing, channel op).

Speed notes (why the code looks the way it does): a HWC array has a last axis of 3, and NumPy
loops over such an axis element by element when it broadcasts or reverses along W. So the
arithmetic runs on the [H, W*3] view against per-column constants tiled W times, a flip is a
gather of whole columns of that view, and constant fills write a tiled row pattern.
"""

from __future__ import annotations

import functools
import math

import numpy as np

PAD = 10
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ChannelRandomErasing fill values; written into the already-normalised tensor (docs/original.md §5.5).
ERASE_FILL = (0.4914, 0.4822, 0.4465)
ERASE_AREA = (0.02, 0.4)
ERASE_MIN_ASPECT = 0.3
ERASE_ATTEMPTS = 100
# PIL's fixed-point "L" weights: L = (19595 R + 38470 G + 7471 B + 2^15) >> 16 (libImaging).
_PIL_L_WEIGHTS = (19595, 38470, 7471)
# ChannelAdapGray / ChannelExchange gray weights, applied to the normalised channels.
ADAPTIVE_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)

COLOR1_ERASE_P = 0.6
COLOR2_ERASE_P = 0.6
THERMAL_ERASE_P = 0.5
GRAYSCALE_P = 0.1
FLIP_P = 0.5
EXCHANGE_SKIP_P = 0.5
ADAPTIVE_GRAY_P = 0.6


def _check_image(img: np.ndarray) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a uint8 HWC RGB image [H, W, 3], got dtype {img.dtype} shape {img.shape}")


def _rows(x: np.ndarray) -> np.ndarray:
    """The [H, W*3] view of a float32 [H, W, 3]; in-place ops need a view, not a copy."""
    if x.dtype != np.float32 or x.ndim != 3 or x.shape[2] != 3 or not x.flags.c_contiguous:
        raise ValueError(
            f"expected a C-contiguous float32 [H, W, 3] array, got {x.dtype} {x.shape} "
            f"(contiguous={x.flags.c_contiguous})"
        )
    return x.reshape(x.shape[0], x.shape[1] * 3)


@functools.lru_cache(maxsize=16)
def _tiled_constants(width: int) -> dict[str, np.ndarray]:
    """Per-column constants for the [H, W*3] view of an HWC image of the given width."""
    f32 = np.float32
    return {
        "mean": np.tile(np.asarray(IMAGENET_MEAN, f32), width),
        "std": np.tile(np.asarray(IMAGENET_STD, f32), width),
        "fill": np.tile(np.asarray(ERASE_FILL, f32), width),
    }


@functools.lru_cache(maxsize=64)
def _flip_columns(width: int, left: int) -> np.ndarray:
    """Columns of the [Hp, Wp*3] padded view that form the mirrored crop starting at `left`."""
    pixels = left + np.arange(width - 1, -1, -1)
    return (pixels[:, None] * 3 + np.arange(3)).reshape(-1)


def pad(img: np.ndarray, padding: int = PAD) -> np.ndarray:
    """Zero pad on all four sides: uint8 [H, W, 3] -> [H + 2p, W + 2p, 3] (transforms.Pad)."""
    _check_image(img)
    h, w, _ = img.shape
    out = np.zeros((h + 2 * padding, w + 2 * padding, 3), np.uint8)
    out[padding : padding + h, padding : padding + w] = img
    return out


def crop_flip(padded: np.ndarray, top: int, left: int, flip: bool, size: tuple[int, int]) -> np.ndarray:
    """Crop `size` = (H, W) at (top, left) from a padded image, mirrored if `flip`.

    uint8 [Hp, Wp, 3] -> uint8 [H, W, 3]. Same result as torchvision's crop then hflip.
    """
    h, w = size
    hp, wp, _ = padded.shape
    if not (0 <= top <= hp - h and 0 <= left <= wp - w):
        raise ValueError(f"crop ({top}, {left}) of size {size} is outside the image {padded.shape}")
    rows = padded[top : top + h]
    if flip:
        cols = _flip_columns(w, left)
        return rows.reshape(h, wp * 3)[:, cols].reshape(h, w, 3)
    return np.ascontiguousarray(rows[:, left : left + w])


def pil_grayscale(img: np.ndarray) -> np.ndarray:
    """PIL `convert("L")` replicated to 3 channels: uint8 [H, W, 3] -> uint8 [H, W, 3].

    Bit-exact with PIL, whose fixed-point conversion rounds to uint8 before ToTensor.
    """
    _check_image(img)
    r, g, b = (img[..., c].astype(np.uint32) for c in range(3))
    wr, wg, wb = (np.uint32(x) for x in _PIL_L_WEIGHTS)
    lum = ((r * wr + g * wg + b * wb + np.uint32(0x8000)) >> np.uint32(16)).astype(np.uint8)
    return np.repeat(lum[..., None], 3, axis=2)


def normalize(img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """ToTensor + Normalize(ImageNet): uint8 [H, W, 3] -> float32 [H, W, 3].

    Computed as ((x / 255) - mean) / std in float32, the same operations as torchvision, so the
    result is bit-identical. This is also the whole test-time transform (docs/original.md §5.5, "Test").
    """
    _check_image(img)
    h, w, _ = img.shape
    if out is None:
        out = np.empty((h, w, 3), np.float32)
    elif out.shape != img.shape:
        raise ValueError(f"out must have the image's shape {img.shape}, got {out.shape}")
    consts = _tiled_constants(w)
    flat = _rows(out)
    np.copyto(flat, img.reshape(h, w * 3), casting="unsafe")
    np.true_divide(flat, np.float32(255), out=flat)
    np.subtract(flat, consts["mean"], out=flat)
    np.true_divide(flat, consts["std"], out=flat)
    return out


def erase_rectangle(x: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """Draw ChannelRandomErasing's rectangle (the part after its probability test).

    Up to 100 attempts: target area U(0.02, 0.4)*H*W, aspect U(0.3, 1/0.3),
    h = round(sqrt(area*aspect)) along H, w = round(sqrt(area/aspect)) along W; the first
    attempt with h < H and w < W wins and its top-left corner is uniform with inclusive
    bounds. Returns (top, left, h, w), or None if all attempts fail (then nothing is erased).
    """
    height, width = x.shape[:2]
    area = height * width
    lo, hi = ERASE_AREA
    r1 = ERASE_MIN_ASPECT
    # Scalar draws: about two attempts are needed on average, and scalar math is cheaper than
    # NumPy's per-call overhead on tiny arrays.
    for _ in range(ERASE_ATTEMPTS):
        target = (lo + (hi - lo) * rng.random()) * area
        aspect = r1 + (1.0 / r1 - r1) * rng.random()
        # round() rounds half to even, as in the original.
        h = round(math.sqrt(target * aspect))
        w = round(math.sqrt(target / aspect))
        if w < width and h < height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    return None


def channel_random_erasing(x: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """ChannelRandomErasing(p) in place on a normalised float32 [H, W, 3]; returns x."""
    if rng.random() >= p:
        return x
    rect = erase_rectangle(x, rng)
    if rect is not None:
        top, left, h, w = rect
        width = x.shape[1]
        fill = _tiled_constants(width)["fill"][: 3 * w]
        _rows(x)[top : top + h, 3 * left : 3 * (left + w)] = fill
    return x


def _copy_channel(x: np.ndarray, source: int) -> None:
    pixels = _rows(x).reshape(-1, 3)
    for c in range(3):
        if c != source:
            pixels[:, c] = pixels[:, source]


def channel_exchange(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ChannelExchange(gray=2) in place on float32 [H, W, 3]; returns x.

    With probability 0.5 nothing happens; otherwise channel c ~ U{0, 1, 2} is copied into all
    three channels (docs/original.md §5.5; the gray branch is unreachable with gray=2).
    """
    if rng.random() < EXCHANGE_SKIP_P:
        return x
    _copy_channel(x, int(rng.integers(0, 3)))
    return x


def adaptive_gray(x: np.ndarray) -> np.ndarray:
    """0.2989 R + 0.5870 G + 0.1140 B of a normalised float32 [H, W, 3] -> float32 [H, W]."""
    wr, wg, wb = (np.float32(v) for v in ADAPTIVE_GRAY_WEIGHTS)
    return wr * x[..., 0] + wg * x[..., 1] + wb * x[..., 2]


def channel_adap_gray(x: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """ChannelAdapGray(p) in place on float32 [H, W, 3]; returns x.

    idx ~ U{0..3}: idx < 3 copies channel idx into all channels; idx == 3 replaces all channels
    by `adaptive_gray(x)` with probability p and otherwise keeps the image.
    """
    idx = int(rng.integers(0, 4))
    if idx < 3:
        _copy_channel(x, idx)
    elif rng.random() < p:
        gray = adaptive_gray(x)
        for c in range(3):
            x[..., c] = gray
    return x


def _random_crop_flip(padded: np.ndarray, rng: np.random.Generator, size) -> np.ndarray:
    """RandomCrop(size) after the pad, then RandomHorizontalFlip(0.5); uint8 in and out."""
    h, w = size
    top = int(rng.integers(0, padded.shape[0] - h + 1))
    left = int(rng.integers(0, padded.shape[1] - w + 1))
    flip = bool(rng.random() < FLIP_P)
    return crop_flip(padded, top, left, flip, size)


def _padded_and_size(img: np.ndarray, padded: np.ndarray | None):
    _check_image(img)
    if padded is None:
        padded = pad(img)
    return padded, img.shape[:2]


def color1(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    padded: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """RGB view 1: uint8 [H, W, 3] -> float32 [H, W, 3].

    `padded` may pass a precomputed `pad(img)` so the two RGB views share one pad; `out` is an
    optional float32 [H, W, 3] destination (e.g. a row of the batch array).
    """
    padded, size = _padded_and_size(img, padded)
    crop = _random_crop_flip(padded, rng, size)
    if rng.random() < GRAYSCALE_P:
        crop = pil_grayscale(crop)
    x = normalize(crop, out)
    return channel_random_erasing(x, rng, COLOR1_ERASE_P)


def color2(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    padded: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """RGB view 2: uint8 [H, W, 3] -> float32 [H, W, 3]; arguments as `color1`."""
    padded, size = _padded_and_size(img, padded)
    x = normalize(_random_crop_flip(padded, rng, size), out)
    channel_random_erasing(x, rng, COLOR2_ERASE_P)
    return channel_exchange(x, rng)


def thermal(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    padded: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """IR: uint8 [H, W, 3] -> float32 [H, W, 3]; arguments as `color1`."""
    padded, size = _padded_and_size(img, padded)
    x = normalize(_random_crop_flip(padded, rng, size), out)
    channel_random_erasing(x, rng, THERMAL_ERASE_P)
    return channel_adap_gray(x, rng, ADAPTIVE_GRAY_P)
