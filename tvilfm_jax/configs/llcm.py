"""LLCM (docs/original.md §2): `--config configs/llcm.py[:stage=base|tvilfm][,recipe=paper|clean]`.

Reads the TFDS dataset `llcm` (`tfds build tfds_builders/llcm --manual_dir <root>`). The
overrides are SYSU's: defaults in stage 1; text lr 3.5e-4, text bias decay 5e-4 and evaluation
from the start in stage 2. Initial weights as in configs/sysu.py.
"""

from tvilfm_jax.configs import common


def get_config(arg=None):
    return common.sysu_llcm_config("llcm", arg)
