"""SYSU-MM01 (docs/original.md §2): `--config configs/sysu.py[:stage=base|tvilfm][,recipe=paper|clean]`.

Reads the TFDS dataset `sysu_mm01` (`tfds build tfds_builders/sysu_mm01 --manual_dir <root>`).
Stage 1 should start from converted ImageNet/CLIP weights (`--config.init.checkpoint=...` from
`python -m tvilfm_jax.convert --kind torchvision`); stage 2 starts from the stage-1 model
(`<stage-1 workdir>/models/last`, or a converted official base model).
"""

from tvilfm_jax.configs import common


def get_config(arg=None):
    return common.sysu_llcm_config("sysu", arg)
