"""Shared pieces of every PyTorch -> Flax conversion: loading, key bookkeeping, layouts.

PyTorch is imported lazily: only `load_torch_checkpoint` needs it, so the rest of the package
(and every consumer of converted params) runs without torch installed.
"""

from __future__ import annotations

import fnmatch
import os
import zipfile
from collections.abc import Iterable, Mapping

import numpy as np


class ConversionError(ValueError):
    """A checkpoint does not have the keys or shapes the target model expects."""


def load_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch checkpoint into a flat {key: float32/int ndarray} dict.

    Accepts a plain state_dict, a dict wrapping one under `model_state_dict`/`state_dict`/
    `model`, or a TorchScript archive (OpenAI CLIP's `RN50.pt`). Pickled objects other than
    tensors are refused (`weights_only=True`), so an untrusted file cannot run code, and so are
    floating tensors holding NaN or Inf (a diverged or damaged checkpoint).
    """
    try:
        import torch
    except ModuleNotFoundError as err:  # torch is an extra: only reading .pth files needs it
        raise ConversionError(
            "reading PyTorch checkpoints needs torch: pip install 'tvilfm-jax[convert]'") from err

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if _is_torchscript(path):
            obj = torch.jit.load(path, map_location="cpu").state_dict()
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for a bad file
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    if isinstance(obj, Mapping):
        for wrapper in ("model_state_dict", "state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: expected a state_dict (mapping of tensors), got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        out[str(key)] = value.numpy()
    bad = {k: int(np.size(v) - np.isfinite(v).sum()) for k, v in out.items() if np.issubdtype(v.dtype, np.floating)}
    bad = {k: n for k, n in bad.items() if n}
    if bad:
        shown = ", ".join(f"{k!r} ({n:,} of {out[k].size:,} values)" for k, n in list(bad.items())[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ConversionError(f"{path}: {len(bad)} tensor(s) hold NaN or Inf: {shown}{more}; refusing to convert "
                              "a diverged or damaged checkpoint")
    return out


def _is_torchscript(path: str) -> bool:
    """TorchScript archives (e.g. OpenAI's RN50.pt) are zips holding a constants.pkl."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("/constants.pkl") for name in zf.namelist())


class StateDict:
    """A flat checkpoint being consumed key by key, so leftovers can be reported at the end.

    Args:
      tensors: {key: ndarray}, e.g. from `load_torch_checkpoint` or `{k: v.numpy() ...}`.
      source: what to call the checkpoint in error messages (usually its path).
      prefix: prepended to every key passed to `take`/`has`.
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], source: str = "state_dict", prefix: str = ""):
        self._tensors = {k: np.asarray(v) for k, v in tensors.items()}
        self._used: set[str] = set()
        self.source = source
        self.prefix = prefix

    def scoped(self, prefix: str) -> "StateDict":
        """A view that shares bookkeeping with this one but prepends `prefix` to keys."""
        view = StateDict.__new__(StateDict)
        view._tensors, view._used, view.source = self._tensors, self._used, self.source
        view.prefix = self.prefix + prefix
        return view

    def has(self, key: str) -> bool:
        return self.prefix + key in self._tensors

    def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Returns the tensor at `prefix + key`, checking its shape when given."""
        full = self.prefix + key
        if full not in self._tensors:
            near = [k for k in self._tensors if k.endswith(key.split(".")[-1])][:3]
            hint = f"; keys with the same ending: {near}" if near else ""
            raise ConversionError(f"{self.source}: missing key {full!r}{hint}")
        value = self._tensors[full]
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ConversionError(
                f"{self.source}: key {full!r} has shape {tuple(value.shape)}, expected {tuple(shape)}"
            )
        self._used.add(full)
        return value

    def unused(self, ignore: Iterable[str] = ()) -> list[str]:
        """Keys never taken, minus those matching any fnmatch pattern in `ignore`."""
        patterns = list(ignore)
        return sorted(
            k for k in self._tensors
            if k not in self._used and not any(fnmatch.fnmatchcase(k, p) for p in patterns)
        )

    def finish(self, ignore: Iterable[str] = ()) -> None:
        """Raises if keys remain that the conversion did not consume (and are not ignored)."""
        left = self.unused(ignore)
        if left:
            shown = ", ".join(repr(k) for k in left[:10])
            more = f" and {len(left) - 10} more" if len(left) > 10 else ""
            raise ConversionError(f"{self.source}: {len(left)} unexpected key(s): {shown}{more}")


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch conv weight [O, I, kH, kW] -> Flax kernel [kH, kW, I, O]."""
    if weight.ndim != 4:
        raise ConversionError(f"conv weight must be 4-D [O,I,kH,kW], got shape {weight.shape}")
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def dense_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch linear weight [out, in] -> Flax Dense kernel [in, out]."""
    if weight.ndim != 2:
        raise ConversionError(f"linear weight must be 2-D [out,in], got shape {weight.shape}")
    return np.ascontiguousarray(weight.T)
