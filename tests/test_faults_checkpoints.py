"""Faults around checkpoints: exports across device counts, non-finite states, damaged
checkpoints and failing asynchronous saves (issue 19)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from tvilfm_jax.eval import runner
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import ModelConfig, init_variables
from tvilfm_jax.training import checkpointing

ROOT = Path(__file__).resolve().parents[1]
HW = (32, 16)
TINY_MODEL = ModelConfig(num_classes=2, resnet_blocks=(1, 1, 1, 1), resnet_width=4,
                         text=TextConfig(width=32, layers=1, heads=2, embed_dim=128))


def tiny_variables(seed: int = 0) -> dict:
    """Random numpy variables shaped as TINY_MODEL's (from shapes alone: nothing compiles)."""
    shapes = jax.eval_shape(lambda: init_variables(TINY_MODEL, jax.random.key(0), image_hw=HW))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


# Exports a training state replicated over a 2-device mesh, as the end of a 2-device run does.
EXPORT_ON_TWO_DEVICES = """
import sys
import jax
import optax
from tests.test_faults_checkpoints import TINY_MODEL, tiny_variables
from tvilfm_jax.training import checkpointing, mesh
from tvilfm_jax.training.state import create_state

two = mesh.make_mesh()
assert two.devices.size == 2, two
state = create_state(mesh.replicate(tiny_variables(), two), optax.sgd(0.1), seed=0)
checkpointing.export_variables(sys.argv[1], state, TINY_MODEL)
"""


def test_an_export_of_a_two_device_run_loads_on_one_device(tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", EXPORT_ON_TWO_DEVICES, str(workdir / "variables" / "last")],
                   cwd=ROOT, env=env, check=True, timeout=600)
    assert jax.device_count() == 1
    expected = tiny_variables()
    # As `python -m tvilfm_jax.evaluate --workdir` loads it ...
    config, variables, _ = runner.load_model(workdir=workdir, which="last")
    assert config == TINY_MODEL
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree_util.tree_leaves(variables))
    assert_trees_equal(variables, expected)
    # ... and as a stage-2 run's init.checkpoint.
    stage2 = checkpointing.load_init_variables(str(workdir / "variables" / "last"),
                                               dataclasses.replace(TINY_MODEL, backup=True))
    assert_trees_equal(stage2["params"]["backup_neck"], expected["params"]["neck"])
    assert_trees_equal(stage2["params"]["visual"], expected["params"]["visual"])


def assert_trees_equal(a, b) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
