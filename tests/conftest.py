"""Test-session setup: CPU-only JAX, quiet TensorFlow, deterministic threads."""

import os

# Must be set before jax is imported anywhere: CI machines have no accelerator and a
# jax[cuda12] install would otherwise print CUDA discovery errors.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The whole suite shares 2 cores; keep PyTorch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


import pytest  # noqa: E402

TINY_DATASET = "synthetic/sysu_tiny"  # 4 identities, 14 RGB + 8 IR images: 4 steps per epoch at P=2, K=2


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A TFDS data_dir holding `TINY_DATASET`, built once per session."""
    from tvilfm_jax.training.inputs import build_synthetic

    data_dir = tmp_path_factory.mktemp("tiny_tfds")
    build_synthetic(TINY_DATASET, str(data_dir))
    return data_dir
