"""The embedded synthetic default: `--config configs/synthetic.py[:args]` loads tvilfm_jax/configs/synthetic.py (arguments and
settings documented there); config files are loaded by path, the configs ship in the package."""

from tvilfm_jax.configs.synthetic import get_config  # noqa: F401
