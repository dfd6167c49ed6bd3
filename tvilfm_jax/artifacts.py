"""Model artifacts: a model's variables ({"params", "batch_stats"}) and the ModelConfig that builds it.

A model artifact is a directory:
  model.json    `ModelConfig.to_json()`, written last (atomically): its presence marks a complete save
  variables/    orbax tree of host numpy arrays

`python -m tvilfm_jax.convert` writes one, a training run exports one to `models/last` and
`models/best` (see `run_layout`), `init.checkpoint` and `python -m tvilfm_jax.evaluate` read one.
Arrays are saved as host numpy arrays (no device sharding is recorded), so an artifact written on
one machine restores on any other; `load_*` return numpy arrays that callers place as they need.

The layout before model.json (a `config.json` next to `variables/`) is refused with the fix
(`mv config.json model.json`): the variables tree itself is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from tvilfm_jax.models.tvilfm import ModelConfig, init_variables

MODEL_FILE = "model.json"
VARIABLES_DIR = "variables"
# The name model.json had before; an artifact holding it is refused (see `load_model_config`).
OLD_MODEL_FILE = "config.json"


class CheckpointMismatchError(ValueError):
    """A stored tree does not have the keys or shapes the caller expects."""


class OldLayoutError(ValueError):
    """A model artifact in the layout before model.json (config.json + variables/)."""


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def tree_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{'params/visual/.../kernel': shape} for every leaf of a nested-dict tree."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_str(path): tuple(leaf.shape) for path, leaf in leaves}


def save_model(directory: str | os.PathLike, variables: Mapping[str, Any], config: ModelConfig,
               overwrite: bool = False) -> str:
    """Writes `variables` and `config` as a model artifact in `directory` (created); returns its
    absolute path.

    variables: {"params", "batch_stats"} of host arrays (numpy, or arrays every process can read
      whole; a training run passes `mesh.to_host` of its replicated state).

    Refuses to replace an existing artifact unless `overwrite`. Collective: in a multi-process
    run every process calls it with equal arrays (orbax writes them from the primary process),
    process 0 writes model.json, and all return once it is written.
    """
    directory = os.path.abspath(os.fspath(directory))
    target = os.path.join(directory, VARIABLES_DIR)
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    tree = jax.tree_util.tree_map(np.asarray, {k: dict(v) for k, v in variables.items()})
    os.makedirs(directory, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, tree, force=overwrite)
    checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        tmp = os.path.join(directory, MODEL_FILE + ".tmp")
        with open(tmp, "w") as f:
            f.write(config.to_json())
        os.replace(tmp, os.path.join(directory, MODEL_FILE))
    ocp.multihost.sync_global_processes(f"save_model {directory}")
    return directory


def is_complete(directory: str | os.PathLike) -> bool:
    """Whether a model artifact was written to the end: its variables tree is finalized (orbax
    renames it into place when done) and model.json, written last, is there."""
    directory = os.fspath(directory)
    return os.path.isfile(os.path.join(directory, MODEL_FILE)) and os.path.isdir(os.path.join(directory, VARIABLES_DIR))


def load_model_config(directory: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of a model artifact; OldLayoutError for one in the layout before model.json."""
    directory = os.fspath(directory)
    path = os.path.join(directory, MODEL_FILE)
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(directory, OLD_MODEL_FILE)):
            raise OldLayoutError(f"{directory} is a model in the old layout ({OLD_MODEL_FILE} + {VARIABLES_DIR}/); "
                                 f"rename its config file: mv {os.path.join(directory, OLD_MODEL_FILE)} {path}")
        raise FileNotFoundError(f"model config not found: {path}")
    with open(path) as f:
        return ModelConfig.from_json(f.read(), source=path)


def check_tree(stored: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Raises CheckpointMismatchError naming missing/unexpected key paths and shape mismatches."""
    problems = [f"missing {k} (expected shape {expected[k]})" for k in sorted(set(expected) - set(stored))]
    problems += [f"unexpected {k} (shape {stored[k]})" for k in sorted(set(stored) - set(expected))]
    problems += [f"{k}: stored shape {stored[k]}, expected {expected[k]}"
                 for k in sorted(set(stored) & set(expected)) if stored[k] != expected[k]]
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise CheckpointMismatchError(f"{source}: checkpoint does not match the expected tree: {shown}{more}")


def load_variables(directory: str | os.PathLike, expected: Any = None) -> dict:
    """Restores a model artifact's variables tree as numpy arrays, on any device count.

    expected: optional tree of arrays or `jax.ShapeDtypeStruct`s (e.g. `jax.eval_shape` of
    `init_variables`); the stored tree must have exactly its key paths and shapes, and leaves are
    restored in its dtypes.

    Leaves are read into host numpy whatever sharding a checkpoint recorded, so an export
    written by an older multi-device run restores too.
    """
    target = os.path.join(os.path.abspath(os.fspath(directory)), VARIABLES_DIR)
    if not os.path.isdir(target):
        raise FileNotFoundError(f"model variables not found: {target}")
    checkpointer = ocp.PyTreeCheckpointer()
    stored = checkpointer.metadata(target).item_metadata.tree
    if expected is None:
        dtypes = jax.tree_util.tree_map(lambda m: m.dtype, stored)
    else:
        check_tree(tree_shapes(stored), tree_shapes(expected), target)
        dtypes = jax.tree_util.tree_map(lambda x: x.dtype, expected)
    restore_args = jax.tree_util.tree_map(lambda d: ocp.RestoreArgs(restore_type=np.ndarray, dtype=d), dtypes)
    return checkpointer.restore(target, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def load_model(directory: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """(config, variables) of a model artifact, the variables checked against the model that
    config builds."""
    config = load_model_config(directory)
    expected = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
    return config, load_variables(directory, expected)
