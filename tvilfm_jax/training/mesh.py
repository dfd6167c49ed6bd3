"""Data parallelism: JAX's distributed runtime, a 1-D `data` mesh, and placing arrays on it.

Every device of every process is on the `data` axis, in `jax.devices()` order (process-major),
so process p's devices hold a contiguous block of rows of each global batch: exactly the share
`data/pipeline.py` gives process p. The training state is replicated; the batch is sharded on
its leading axis.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Starts JAX's distributed runtime when a coordinator is given; returns whether it did.

    The coordinator comes from the argument or JAX_COORDINATOR_ADDRESS (which JAX reads itself);
    the process count and index from the arguments, else JAX_NUM_PROCESSES / JAX_PROCESS_ID,
    else JAX's cluster detection (SLURM, Open MPI, ...). Without a coordinator this is a
    single-process run and nothing happens. Call before any other JAX use.
    """
    if not (coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")):
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise ValueError("num_processes / process_id were given without a coordinator address")
        return False

    def from_env(value: int | None, name: str) -> int | None:
        return value if value is not None or not os.environ.get(name) else int(os.environ[name])

    jax.distributed.initialize(
        coordinator_address=coordinator_address or None,
        num_processes=from_env(num_processes, "JAX_NUM_PROCESSES"),
        process_id=from_env(process_id, "JAX_PROCESS_ID"),
    )
    logging.info("distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def make_mesh() -> Mesh:
    """All devices on one `data` axis, process-major."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_global_batch(global_batch: int, mesh: Mesh) -> None:
    """The global batch (rows per modality) must split evenly over the devices."""
    devices = mesh.devices.size
    if global_batch % devices:
        raise ValueError(f"global batch ids_per_batch * images_per_id = {global_batch} is not divisible by the "
                         f"{devices} devices of the mesh; change data.ids_per_batch or data.images_per_id")


def put_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of a global batch -> global arrays sharded on `data`.

    local: arrays [b, ...] with b = global batch / process count (the pipeline's share).
    """
    sharding = batch_sharded(mesh)
    n = jax.process_count()
    return {k: jax.make_array_from_process_local_data(sharding, v, (v.shape[0] * n, *v.shape[1:]))
            for k, v in local.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Host arrays, equal on every process, -> replicated global arrays."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree)


def to_host(tree: Any) -> Any:
    """Replicated global arrays -> numpy (each process reads its own replica)."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree_util.tree_map(get, tree)
