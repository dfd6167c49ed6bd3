"""The features file format `python -m tvilfm_jax.extract` writes and `search` reads.

A features directory:

    meta.json     {"format": "tvilfm-features/1", "complete": bool, "count": N, "root": image folder,
                   "modality": "rgb" | "ir", "pid_pattern": the regex pid / cam were read with
                   (or null), "kinds": {kind: D}, "shard_size": rows per shard,
                   "settings": {"image_size": [H, W], "dtype", "flip"},
                   "model": {"path", "fingerprint", "config"}}
    index.jsonl   N lines {"path", "pid", "cam", "caption"}, row i of every array (`inputs.Entry`;
                  path relative to "root", pid / cam / caption null where unknown)
    <kind>.npy    float32 [N, D] per kind, once complete (`embedding.kinds` says which)
    shards/<start>.npz   while incomplete: rows [start, start + shard_size) of every kind

`model.fingerprint` is a SHA-256 of model.json and every variable, so features of another model
(or another checkpoint of the same config) are told apart, and a copy of the model elsewhere is
the same model. An extract writes index.jsonl and
meta.json first, then one shard at a time (each written to a temporary name and renamed, so a
killed run leaves whole shards only); a rerun with the same inputs, model and settings writes
the missing shards, then joins them into the .npy files and marks meta.json complete. A rerun
with another model, settings or image list is refused naming what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from tvilfm_jax.models.tvilfm import ModelConfig
from tvilfm_jax.retrieval.inputs import Entry

FORMAT = "tvilfm-features/1"
META_FILE = "meta.json"
INDEX_FILE = "index.jsonl"
SHARDS_DIR = "shards"
# What must agree for a rerun to continue a directory (everything but "complete").
_IDENTITY = ("format", "count", "root", "modality", "pid_pattern", "kinds", "shard_size", "settings", "model")


def model_fingerprint(config: ModelConfig, variables: Mapping[str, Any]) -> str:
    """SHA-256 hex of the model config and every variable (paths, dtypes, shapes and bytes)."""
    digest = hashlib.sha256(config.to_json().encode())
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _write_atomic(path: str, write) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def _write_json(path: str, data: Any) -> None:
    _write_atomic(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()))


def _entry_line(entry: Entry) -> str:
    return json.dumps(dataclasses.asdict(entry), sort_keys=True)


def _read_meta(directory: str) -> dict:
    path = os.path.join(directory, META_FILE)
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{directory} is not a features directory ({META_FILE} not found; "
                         "expected the output of python -m tvilfm_jax.extract)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is unreadable ({err}); expected the meta.json of a features directory") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                         f"expected {FORMAT!r}")
    return meta


def _read_index(directory: str) -> list[Entry]:
    path = os.path.join(directory, INDEX_FILE)
    try:
        with open(path) as f:
            return [Entry(**json.loads(line)) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path} is unreadable ({err}); expected one JSON object per image") from None


def prepare(directory: str | os.PathLike, meta: Mapping[str, Any], entries: Sequence[Entry]) -> bool:
    """Starts a features directory, or checks that an existing one continues the same extract.

    meta: meta.json without "complete"; entries: the rows, in order. Returns True if the
    directory is already complete. A directory of another model, settings or image list, and a
    non-empty folder that is not a features directory, are ValueErrors naming them.
    """
    directory = os.fspath(directory)
    meta = json.loads(json.dumps(dict(meta)))  # as it reads back (lists, not tuples)
    if os.path.isfile(os.path.join(directory, META_FILE)):
        stored, now = _identity(_read_meta(directory)), _identity(meta)
        differs = [k for k in _IDENTITY if stored[k] != now[k]]
        if differs:
            shown = "; ".join(f"{k}: stored {_brief(stored[k])}, now {_brief(now[k])}" for k in differs)
            raise ValueError(f"{os.path.join(directory, META_FILE)} holds another extract ({shown}); "
                             "use another --output or delete it")
        if [_entry_line(e) for e in _read_index(directory)] != [_entry_line(e) for e in entries]:
            raise ValueError(f"{os.path.join(directory, INDEX_FILE)} lists other images, pids or captions than "
                             "this extract; use another --output or delete it")
        return bool(_read_meta(directory).get("complete"))
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise ValueError(f"--output {directory} exists and is not a features directory (no {META_FILE}); "
                         "expected a new or empty folder")
    os.makedirs(os.path.join(directory, SHARDS_DIR), exist_ok=True)
    lines = "".join(_entry_line(e) + "\n" for e in entries)
    _write_atomic(os.path.join(directory, INDEX_FILE), lambda f: f.write(lines.encode()))
    _write_json(os.path.join(directory, META_FILE), {**meta, "complete": False})
    return False


def _identity(meta: Mapping[str, Any]) -> dict:
    """What two extracts must share to be one: the model by its fingerprint (not its path)."""
    out = {k: meta.get(k) for k in _IDENTITY}
    out["model"] = (meta.get("model") or {}).get("fingerprint")
    return out


def _brief(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _shard_path(directory: str, start: int) -> str:
    return os.path.join(directory, SHARDS_DIR, f"{start:010d}.npz")


def shard_starts(count: int, shard_size: int) -> range:
    return range(0, count, shard_size)


def pending_shards(directory: str | os.PathLike, count: int, shard_size: int) -> list[int]:
    """First rows of the shards not yet written."""
    return [s for s in shard_starts(count, shard_size) if not os.path.isfile(_shard_path(os.fspath(directory), s))]


def write_shard(directory: str | os.PathLike, start: int, arrays: Mapping[str, np.ndarray]) -> None:
    """Rows from `start` of every kind (float32 [n, D] each), as one whole file."""
    arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
    _write_atomic(_shard_path(os.fspath(directory), start), lambda f: np.savez(f, **arrays))


def finalize(directory: str | os.PathLike) -> None:
    """Joins the shards into one float32 [N, D] .npy per kind and marks meta.json complete."""
    directory = os.fspath(directory)
    meta = _read_meta(directory)
    count, size = meta["count"], meta["shard_size"]
    for kind, dim in meta["kinds"].items():
        tmp = os.path.join(directory, f"{kind}.npy.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, dim))
        for start in shard_starts(count, size):
            with np.load(_shard_path(directory, start)) as shard:
                out[start:start + len(shard[kind])] = shard[kind]
        out.flush()
        del out
        os.replace(tmp, os.path.join(directory, f"{kind}.npy"))
    _write_json(os.path.join(directory, META_FILE), {**meta, "complete": True})
    shutil.rmtree(os.path.join(directory, SHARDS_DIR), ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Features:
    """A complete features directory: meta.json, the rows (`entries`), and `array(kind)`."""

    directory: str
    meta: Mapping[str, Any]
    entries: tuple[Entry, ...]

    def array(self, kind: str) -> np.ndarray:
        """float32 [N, D] of `kind`, memory-mapped (read-only)."""
        if kind not in self.meta["kinds"]:
            raise ValueError(f"{self.directory} has no {kind!r} features (it holds {sorted(self.meta['kinds'])})")
        return np.load(os.path.join(self.directory, f"{kind}.npy"), mmap_mode="r")

    def image_path(self, row: int) -> str:
        return os.path.join(self.meta["root"], self.entries[row].path)


def open_features(directory: str | os.PathLike) -> Features:
    """Reads a complete features directory; an incomplete or foreign one is a ValueError naming it."""
    directory = os.fspath(directory)
    meta = _read_meta(directory)
    if not meta.get("complete"):
        raise ValueError(f"{directory} is incomplete (its extract was interrupted): rerun the same extract "
                         "command to finish it")
    missing = [k for k in meta["kinds"] if not os.path.isfile(os.path.join(directory, f"{k}.npy"))]
    if missing:
        raise ValueError(f"{directory}: {', '.join(k + '.npy' for k in missing)} missing; expected one array per kind")
    entries = tuple(_read_index(directory))
    if len(entries) != meta["count"]:
        raise ValueError(f"{os.path.join(directory, INDEX_FILE)} has {len(entries)} rows, meta.json says {meta['count']}")
    return Features(directory, meta, entries)
