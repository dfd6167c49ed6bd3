"""Test-session setup: CPU-only JAX, quiet TensorFlow, deterministic threads."""

import os

# Must be set before jax is imported anywhere: CI machines have no accelerator and a
# jax[cuda12] install would otherwise print CUDA discovery errors.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The whole suite shares 2 cores; keep PyTorch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")
