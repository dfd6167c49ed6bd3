"""Writing files so that a reader (or a killed run) never sees half of one.

Each writer fills a temporary file beside the target, fsyncs it and renames it over the
target with ``os.replace``, which is atomic on POSIX and Windows within one filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable
from typing import IO

import numpy as np


def _write_atomically(path: str, fill: Callable[[IO[bytes]], None]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # open(..., "xb") rather than mkstemp: the file gets the umask's permissions (mkstemp's
    # are 0600), and "x" refuses to reuse a name.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str, obj, indent: int | None = 1) -> None:
    """Writes ``obj`` as UTF-8 JSON (non-ASCII kept readable)."""
    data = json.dumps(obj, ensure_ascii=False, indent=indent).encode("utf-8")
    _write_atomically(path, lambda f: f.write(data))


def write_npy(path: str, array: np.ndarray) -> None:
    """Writes ``array`` in .npy format (no pickles: object arrays are refused)."""
    if array.dtype == object:
        raise TypeError(f"{path}: refusing to write an object array; convert to str/int first")
    _write_atomically(path, lambda f: np.save(f, array, allow_pickle=False))
