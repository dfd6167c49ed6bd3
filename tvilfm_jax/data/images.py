"""Reading person images from disk the way the original does.

All three datasets are stored and fed at 288x144 (H x W): the original opens each file with
PIL, resizes it to W144 x H288 with Lanczos (`Image.ANTIALIAS`) and keeps uint8 HWC. Test
images go through the same resize, so the test-time `Resize((288, 144))` is a no-op.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

IMAGE_HEIGHT = 288
IMAGE_WIDTH = 144
# (H, W): the size records are stored at, and the default size training and evaluation feed.
IMAGE_SIZE = (IMAGE_HEIGHT, IMAGE_WIDTH)
# The smallest side fed to the network: the ResNet downsamples by 16 (last stride 1).
MIN_SIDE = 16

# Errors PIL raises for files that are not images, are truncated or are otherwise undecodable.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ImageReadError(ValueError):
    """An image file is missing, unreadable or corrupt; the message names the file."""


def check_size(size, key: str) -> tuple[int, int]:
    """`size` as (H, W) ints; a ValueError naming `key` unless both are ints >= MIN_SIDE."""
    if (isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < MIN_SIDE for v in size)):
        raise ValueError(f"{key} must be (H, W) ints >= {MIN_SIDE}, got {size!r}")
    return int(size[0]), int(size[1])


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos resize (the original's resampling) of uint8 [h, w, 3] to `size` = (H, W)."""
    if image.shape[:2] == tuple(size):
        return image
    height, width = size
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def load_image(path: str | os.PathLike, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH) -> np.ndarray:
    """Decodes `path` to uint8 [height, width, 3]: PIL open, convert RGB, Lanczos resize."""
    try:
        with Image.open(path) as image:
            decoded = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"image file {os.fspath(path)} does not exist") from None
    except _PIL_ERRORS as err:
        raise ImageReadError(f"cannot decode image {os.fspath(path)}: {err}") from None
    array = resize(decoded, (height, width))
    if array.shape != (height, width, 3):  # defensive: convert("RGB") guarantees 3 channels
        raise ImageReadError(f"image {os.fspath(path)} decoded to shape {array.shape}, expected ({height}, {width}, 3)")
    return array


def probe_image(path: str | os.PathLike) -> tuple[int, int]:
    """Reads only the header of `path` and returns its (width, height); cheap integrity check.

    Catches non-image and zero-length files; truncated pixel data needs `load_image`.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise ImageReadError(f"image file {os.fspath(path)} does not exist") from None
    except _PIL_ERRORS as err:
        raise ImageReadError(f"cannot read image header of {os.fspath(path)}: {err}") from None
    if width <= 0 or height <= 0:
        raise ImageReadError(f"image {os.fspath(path)} has an empty size {width}x{height}")
    return width, height
