"""LLCM: `--config configs/llcm.py[:args]` loads tvilfm_jax/configs/llcm.py (arguments and
settings documented there); config files are loaded by path, the configs ship in the package."""

from tvilfm_jax.configs.llcm import get_config  # noqa: F401
