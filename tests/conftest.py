"""Test-session setup: CPU-only JAX, quiet TensorFlow, deterministic threads."""

import os

# Must be set before jax is imported anywhere: CI machines have no accelerator and a
# jax[cuda12] install would otherwise print CUDA discovery errors.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The whole suite shares 2 cores; keep PyTorch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sysu_tiny(tmp_path_factory):
    """TFDS data_dir holding the built `synthetic/sysu_tiny` (4 identities; 4 steps per epoch at
    P=2, K=2): (name, data_dir)."""
    from tfds_builders.prepare import build_synthetic

    name, data_dir = "synthetic/sysu_tiny", tmp_path_factory.mktemp("sysu_tiny_tfds")
    build_synthetic(name, str(data_dir))
    return name, data_dir
