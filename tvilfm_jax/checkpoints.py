"""Model checkpoints on disk: a variables pytree ({"params", "batch_stats"}) + its ModelConfig.

Layout of a checkpoint directory:
  config.json   `ModelConfig.to_json()`
  variables/    orbax StandardCheckpointer tree of float arrays

Arrays are saved as host numpy arrays (no device sharding is recorded), so a checkpoint written on
one machine restores on any other; `load_*` return numpy arrays that callers place as they need.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from tvilfm_jax.models.tvilfm import ModelConfig, init_variables

CONFIG_FILE = "config.json"
VARIABLES_DIR = "variables"


class CheckpointMismatchError(ValueError):
    """A stored tree does not have the keys or shapes the caller expects."""


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def tree_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{'params/visual/.../kernel': shape} for every leaf of a nested-dict tree."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_str(path): tuple(leaf.shape) for path, leaf in leaves}


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any], config: ModelConfig,
                   overwrite: bool = False) -> str:
    """Writes `variables` and `config` under `directory` (created); returns its absolute path.

    Refuses to replace an existing checkpoint unless `overwrite`.
    """
    directory = os.path.abspath(os.fspath(directory))
    target = os.path.join(directory, VARIABLES_DIR)
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    tree = jax.tree_util.tree_map(lambda x: np.asarray(x), {k: dict(v) for k, v in variables.items()})
    os.makedirs(directory, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, tree, force=overwrite)
    checkpointer.wait_until_finished()
    tmp = os.path.join(directory, CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(config.to_json())
    os.replace(tmp, os.path.join(directory, CONFIG_FILE))
    return directory


def load_config(directory: str | os.PathLike) -> ModelConfig:
    """The ModelConfig stored next to a checkpoint."""
    path = os.path.join(os.fspath(directory), CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint config not found: {path}")
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
    """Restores the variables tree as numpy arrays, on any device count.

    expected: optional tree of arrays or `jax.ShapeDtypeStruct`s (e.g. `jax.eval_shape` of
    `init_variables`); the stored tree must have exactly its key paths and shapes, and leaves are
    restored in its dtypes.

    Leaves are read into host numpy whatever sharding a checkpoint recorded, so an export
    written by an older multi-device run restores too.
    """
    target = os.path.join(os.path.abspath(os.fspath(directory)), VARIABLES_DIR)
    if not os.path.isdir(target):
        raise FileNotFoundError(f"checkpoint variables not found: {target}")
    checkpointer = ocp.PyTreeCheckpointer()
    stored = checkpointer.metadata(target).item_metadata.tree
    if expected is None:
        dtypes = jax.tree_util.tree_map(lambda m: m.dtype, stored)
    else:
        check_tree(tree_shapes(stored), tree_shapes(expected), target)
        dtypes = jax.tree_util.tree_map(lambda x: x.dtype, expected)
    restore_args = jax.tree_util.tree_map(lambda d: ocp.RestoreArgs(restore_type=np.ndarray, dtype=d), dtypes)
    return checkpointer.restore(target, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def load_checkpoint(directory: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """(config, variables), the variables checked against the model that config builds."""
    config = load_config(directory)
    expected = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
    return config, load_variables(directory, expected)
