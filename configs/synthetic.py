r"""The embedded default: synthetic people, a small network, small images; runs on a laptop CPU.

    python -m tvilfm_jax.train --workdir runs/synthetic_base
    python -m tvilfm_jax.train --config configs/synthetic.py:stage=tvilfm --workdir runs/synthetic_tvilfm \
        --config.init.checkpoint=runs/synthetic_base/variables/last

Arguments: stage=base|tvilfm, recipe=paper|clean, layout=sysu|regdb|llcm (which synthetic
TFDS config: `synthetic/<layout>`, built into data.data_dir on first use). The schedule is the
paper's shape (linear warmup, two decays) compressed to a few epochs; no pretrained weights
exist here, so stage 1 starts from a random initialisation.
"""

import importlib.util
from pathlib import Path

# Config files are loaded by path, so common.py is too.
_spec = importlib.util.spec_from_file_location("tvilfm_configs_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

LAYOUTS = ("sysu", "regdb", "llcm")


def get_config(arg=None):
    args = common.parse_arg(arg, {"stage": "base", "recipe": "paper", "layout": "sysu"})
    if args["layout"] not in LAYOUTS:
        raise ValueError(f"config argument layout={args['layout']!r}: expected one of {LAYOUTS}")
    c = common.base_config(args["stage"], args["recipe"])
    c.data.name = f"synthetic/{args['layout']}"
    c.data.build_synthetic = True
    c.data.data_dir = "tfds_data"  # relative to the working directory (the repo root: git-ignored)
    c.data.image_size = (64, 32)
    c.data.num_workers = 0

    c.model.resnet_blocks = (1, 1, 1, 1)
    c.model.resnet_width = 16  # D = 512
    c.model.text_width = 64
    c.model.text_layers = 2
    c.model.text_heads = 2
    c.model.compute_dtype = "float32"

    c.optim.warmup_epochs = 2
    c.optim.milestones = (12, 15)
    if c.stage == "base":
        # A network trained from scratch takes a larger step than the paper's ImageNet fine-tuning.
        c.optim.lr_visual = 3e-3
    else:
        # The SYSU stage-2 recipe; lr_visual also sets the neck's lr (x2), and in the paper recipe
        # the text embeddings' and projection's.
        common.sysu_llcm_stage2(c)

    c.train.num_epochs = 16
    c.train.log_every_steps = 8
    c.train.checkpoint_every_steps = 64
    c.train.eval_start_epoch = 2
    return common.finalize(c)
