"""LLCM (docs/original.md §2): `--config configs/llcm.py[:stage=base|tvilfm][,recipe=paper|clean]`.

Reads the TFDS dataset `llcm` (`tfds build tfds_builders/llcm --manual_dir <root>`). The
overrides are SYSU's: defaults in stage 1; text lr 3.5e-4, text bias decay 5e-4 and evaluation
from the start in stage 2. Initial weights as in configs/sysu.py.
"""

import importlib.util
from pathlib import Path

from tvilfm_jax.data.datasets import tfds_name

# Config files are loaded by path, so common.py is too.
_spec = importlib.util.spec_from_file_location("tvilfm_configs_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def get_config(arg=None):
    args = common.parse_arg(arg, {"stage": "base", "recipe": "paper"})
    c = common.base_config(args["stage"], args["recipe"])
    c.data.name = tfds_name("llcm")
    if c.stage == "tvilfm":
        common.sysu_llcm_stage2(c)
    return common.finalize(c)
