"""SYSU-MM01 (docs/original.md §2): `--config configs/sysu.py[:stage=base|tvilfm][,recipe=paper|clean]`.

Reads the TFDS dataset `sysu_mm01` (`tfds build tfds_builders/sysu_mm01 --manual_dir <root>`).
Stage 1 should start from converted ImageNet/CLIP weights (`--config.init.checkpoint=...` from
`python -m tvilfm_jax.convert --kind torchvision`); stage 2 starts from the stage-1 model
(`<stage-1 workdir>/models/last`, or a converted official base model).
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
    c.data.name = tfds_name("sysu")
    if c.stage == "tvilfm":
        common.sysu_llcm_stage2(c)
    return common.finalize(c)
