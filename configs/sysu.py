"""SYSU-MM01: `--config configs/sysu.py[:args]` loads tvilfm_jax/configs/sysu.py (arguments and
settings documented there); config files are loaded by path, the configs ship in the package."""

from tvilfm_jax.configs.sysu import get_config  # noqa: F401
