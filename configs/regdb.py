"""RegDB: `--config configs/regdb.py[:args]` loads tvilfm_jax/configs/regdb.py (arguments and
settings documented there); config files are loaded by path, the configs ship in the package."""

from tvilfm_jax.configs.regdb import get_config  # noqa: F401
