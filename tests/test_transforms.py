"""Training augmentations (docs/original.md §5.5): exact deterministic parts, geometry, and statistics."""

import numpy as np
import pytest
from PIL import Image

from tvilfm_jax.data import transforms as T

MEAN = np.asarray(T.IMAGENET_MEAN, np.float32)
STD = np.asarray(T.IMAGENET_STD, np.float32)
FILL = np.asarray(T.ERASE_FILL, np.float32)
LOW = float(((0.0 - MEAN) / STD).min())
HIGH = float(((1.0 - MEAN) / STD).max())


def random_image(seed, h=288, w=144):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def gradient_image(h=48, w=24):
    """R grows along W, G along H, B constant: a flip reverses the R ramp."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([30 + 9 * x, 20 + 4 * y, np.full_like(x, 128)], -1).astype(np.uint8)


def denormalize(x):
    return np.rint((x * STD + MEAN) * 255.0)


def erased_mask(x):
    return np.all(x == FILL, axis=-1)


# --- deterministic building blocks ----------------------------------------------------------


def test_pil_grayscale_is_bit_exact_with_pil_L():
    img = random_image(0, 64, 64)
    img[0, :16] = [[v, v, v] for v in (0, 1, 127, 128, 254, 255, 3, 250, 17, 33, 99, 200, 2, 5, 7, 9)]
    img[1, :4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]
    expected = np.asarray(Image.fromarray(img).convert("L"))
    out = T.pil_grayscale(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 1], out[..., 2])
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    # A float (unrounded) luminance would differ from PIL on many pixels; the rounding matters.
    unrounded = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.any(np.floor(unrounded) != expected)


def test_normalize_matches_to_tensor_then_normalize_formula():
    img = random_image(1, 16, 8)
    out = T.normalize(img)
    expected = (img.astype(np.float32) / np.float32(255) - MEAN) / STD
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("top,left,flip", [(0, 0, False), (20, 20, True), (3, 17, True), (11, 0, False)])
def test_crop_flip_moves_a_marked_pixel_where_expected(top, left, flip):
    h, w = 288, 144
    img = np.zeros((h, w, 3), np.uint8)
    r, c = 100, 30
    img[r, c] = [255, 10, 20]
    out = T.crop_flip(T.pad(img), top, left, flip, (h, w))
    assert out.shape == (h, w, 3)
    rr, cc = r + T.PAD - top, c + T.PAD - left
    if flip:
        cc = w - 1 - cc
    assert np.count_nonzero(out.any(-1)) == 1
    np.testing.assert_array_equal(out[rr, cc], [255, 10, 20])


def test_pad_and_crop_reject_bad_input():
    with pytest.raises(ValueError, match="uint8 HWC"):
        T.pad(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="outside"):
        T.crop_flip(T.pad(random_image(0, 8, 8)), 21, 0, False, (8, 8))
    # In-place ops on a strided view would silently write into a temporary copy.
    with pytest.raises(ValueError, match="C-contiguous"):
        T.channel_random_erasing(np.zeros((8, 12, 3), np.float32)[:, ::2], np.random.default_rng(0), p=1.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        T.normalize(random_image(0, 8, 6), out=np.zeros((8, 12, 3), np.float32)[:, ::2])


@pytest.mark.torch
def test_pad_crop_flip_normalize_equal_torchvision_with_fixed_offsets():
    import torch
    from torchvision.transforms import functional as tvf
    img = random_image(2)
    h, w = img.shape[:2]
    for top, left, flip in [(0, 0, False), (20, 20, True), (7, 13, True), (15, 2, False)]:
        pil = tvf.crop(tvf.pad(Image.fromarray(img), T.PAD, fill=0), top, left, h, w)
        if flip:
            pil = tvf.hflip(pil)
        tensor = tvf.normalize(tvf.to_tensor(pil), list(T.IMAGENET_MEAN), list(T.IMAGENET_STD))
        ref = tensor.permute(1, 2, 0).numpy()
        ours = T.normalize(T.crop_flip(T.pad(img), top, left, flip, (h, w)))
        np.testing.assert_array_equal(ours, ref)  # same float32 operations
        # The grayscale branch of color1 against torchvision's RandomGrayscale path.
        gray_ref = np.asarray(tvf.rgb_to_grayscale(pil, num_output_channels=3))
        np.testing.assert_array_equal(T.pil_grayscale(np.asarray(pil)), gray_ref)
    assert torch.is_tensor(tensor)


# --- ChannelRandomErasing ---------------------------------------------------------------------


def test_erase_rectangle_area_and_aspect_bounds():
    rng = np.random.default_rng(3)
    x = np.zeros((288, 144, 3), np.float32)
    fractions, aspects = [], []
    for _ in range(2000):
        top, left, h, w = T.erase_rectangle(x, rng)
        assert 0 < h < 288 and 0 < w < 144
        assert 0 <= top <= 288 - h and 0 <= left <= 144 - w
        # Bounds of the unrounded h*w and h/w, widened by the rounding of h and w to integers.
        assert (h - 0.5) * (w - 0.5) <= 0.4 * 288 * 144 + 1e-9
        assert (h + 0.5) * (w + 0.5) >= 0.02 * 288 * 144
        assert (h - 0.5) / (w + 0.5) <= 1 / 0.3 and (h + 0.5) / (w - 0.5) >= 0.3
        fractions.append(h * w / (288 * 144))
        aspects.append(h / w)
    fractions, aspects = np.array(fractions), np.array(aspects)
    assert fractions.min() < 0.03 and fractions.max() > 0.3
    assert aspects.min() < 0.4 and aspects.max() > 2.5
    # w < W rejects wide rectangles, so accepted ones are mostly tall (h along 288).
    assert np.mean(aspects > 1) > 0.6


def test_erase_corner_range_is_inclusive():
    rng = np.random.default_rng(4)
    x = np.zeros((12, 9, 3), np.float32)
    at_bottom = at_right = 0
    for _ in range(3000):
        top, left, h, w = T.erase_rectangle(x, rng)
        assert 0 <= top <= 12 - h and 0 <= left <= 9 - w
        at_bottom += top == 12 - h
        at_right += left == 9 - w
    assert at_bottom > 0 and at_right > 0


def test_channel_random_erasing_fills_exactly_the_drawn_rectangle_with_constants():
    x = T.normalize(random_image(5, 288, 144))
    before = x.copy()
    replay = np.random.default_rng(0)
    replay.random()  # the probability test (always passes with p=1)
    top, left, h, w = T.erase_rectangle(x, replay)
    out = T.channel_random_erasing(x, np.random.default_rng(0), p=1.0)
    assert out is x
    mask = np.zeros((288, 144), bool)
    mask[top : top + h, left : left + w] = True
    np.testing.assert_array_equal(erased_mask(out), mask)
    np.testing.assert_array_equal(out[mask], np.broadcast_to(FILL, (mask.sum(), 3)))
    np.testing.assert_array_equal(out[~mask], before[~mask])


def test_channel_random_erasing_probability():
    rng = np.random.default_rng(6)
    for p in (0.6, 0.5):
        hits = sum(
            erased_mask(T.channel_random_erasing(np.zeros((24, 12, 3), np.float32), rng, p)).any()
            for _ in range(3000)
        )
        assert abs(hits / 3000 - p) < 0.04


# --- channel ops ------------------------------------------------------------------------------


def test_channel_exchange_copies_one_channel_or_nothing():
    rng = np.random.default_rng(7)
    x0 = T.normalize(random_image(8, 24, 12))
    counts = {"none": 0, 0: 0, 1: 0, 2: 0}
    n = 3000
    for _ in range(n):
        x = T.channel_exchange(x0.copy(), rng)
        if np.array_equal(x, x0):
            counts["none"] += 1
            continue
        sources = [c for c in range(3) if all(np.array_equal(x[..., k], x0[..., c]) for k in range(3))]
        assert len(sources) == 1, "all channels must equal one source channel"
        counts[sources[0]] += 1
    assert abs(counts["none"] / n - 0.5) < 0.04
    for c in range(3):
        assert abs(counts[c] / n - 1 / 6) < 0.03


def test_channel_adap_gray_outcomes_and_weighted_sum():
    rng = np.random.default_rng(9)
    x0 = T.normalize(random_image(10, 24, 12))
    gray = 0.2989 * x0[..., 0].astype(np.float64) + 0.5870 * x0[..., 1] + 0.1140 * x0[..., 2]
    counts = {"none": 0, "gray": 0, 0: 0, 1: 0, 2: 0}
    n = 4000
    for _ in range(n):
        x = T.channel_adap_gray(x0.copy(), rng, p=0.6)
        if np.array_equal(x, x0):
            counts["none"] += 1
            continue
        assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2])
        source = [c for c in range(3) if np.array_equal(x[..., 0], x0[..., c])]
        if source:
            counts[source[0]] += 1
        else:
            np.testing.assert_allclose(x[..., 0], gray, rtol=0, atol=1e-6)
            counts["gray"] += 1
    expected = {"none": 0.25 * 0.4, "gray": 0.25 * 0.6, 0: 0.25, 1: 0.25, 2: 0.25}
    for key, p in expected.items():
        assert abs(counts[key] / n - p) < 0.03, (key, counts)


# --- whole pipelines --------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [T.color1, T.color2, T.thermal])
def test_pipelines_shape_dtype_range_and_out_argument(fn):
    img = random_image(11)
    rng = np.random.default_rng(12)
    for _ in range(10):
        x = fn(img, rng)
        assert x.shape == (288, 144, 3) and x.dtype == np.float32
        assert np.isfinite(x).all()
        assert x.min() >= LOW - 1e-5 and x.max() <= HIGH + 1e-5
    out = np.full((288, 144, 3), np.nan, np.float32)
    assert fn(img, np.random.default_rng(13), out=out) is out
    np.testing.assert_array_equal(out, fn(img, np.random.default_rng(13)))
    np.testing.assert_array_equal(out, fn(img, np.random.default_rng(13), padded=T.pad(img)))


def _color1_replay(img, seed):
    """color1 recomposed from the building blocks with the same draws, in the original's order
    (docs/original.md §5.5)."""
    rng = np.random.default_rng(seed)
    top, left = int(rng.integers(0, 21)), int(rng.integers(0, 21))
    flip = bool(rng.random() < 0.5)
    gray = bool(rng.random() < 0.1)
    crop = T.crop_flip(T.pad(img), top, left, flip, img.shape[:2])
    if gray:
        crop = np.repeat(np.asarray(Image.fromarray(crop).convert("L"))[..., None], 3, axis=2)
    return T.channel_random_erasing(T.normalize(crop), rng, 0.6), gray


def test_color1_is_pad_crop_flip_gray_normalize_erase_in_order():
    img = random_image(14, 48, 24)
    seen_gray = 0
    for seed in range(60):
        expected, gray = _color1_replay(img, seed)
        seen_gray += gray
        np.testing.assert_array_equal(T.color1(img, np.random.default_rng(seed)), expected)
    assert seen_gray > 0, "the grayscale branch must be exercised"


def test_pipeline_probabilities_over_many_draws():
    img = gradient_image()
    rng = np.random.default_rng(15)
    n = 1500
    flips = grays = erased = judged = 0
    for _ in range(n):
        x = T.color1(img, rng)
        pix = denormalize(x)
        # Pixels that are neither erased nor zero padding still show the source ramp.
        kept = ~erased_mask(x) & (pix.sum(-1) > 0)
        pairs = kept[:, 1:] & kept[:, :-1]
        if pairs.any():
            judged += 1
            flips += np.diff(pix[..., 0], axis=1)[pairs].sum() < 0
        grays += np.mean((pix[..., 0] == pix[..., 1])[kept] & (pix[..., 1] == pix[..., 2])[kept]) > 0.9
        erased += erased_mask(x).any()
    assert judged > 0.95 * n
    assert abs(flips / judged - 0.5) < 0.05
    assert abs(grays / n - 0.1) < 0.03
    assert abs(erased / n - 0.6) < 0.05

    equal_channels = {"color2": 0, "thermal": 0}
    for name, fn in (("color2", T.color2), ("thermal", T.thermal)):
        for _ in range(n):
            x = fn(img, rng)
            equal_channels[name] += np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(
                x[..., 1], x[..., 2]
            )
    assert abs(equal_channels["color2"] / n - 0.5) < 0.05  # ChannelExchange fires half the time
    assert abs(equal_channels["thermal"] / n - 0.9) < 0.03  # 3/4 copy + 1/4 * 0.6 gray
