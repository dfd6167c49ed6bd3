r"""The embedded default: synthetic people, a small network, small images; runs on a laptop CPU.

    python -m tvilfm_jax.train --workdir runs/synthetic_base
    python -m tvilfm_jax.train --config configs/synthetic.py:stage=tvilfm --workdir runs/synthetic_tvilfm \
        --config.init.checkpoint=runs/synthetic_base/models/last

Arguments: stage=base|tvilfm, recipe=paper|clean, layout=sysu|regdb|llcm (which synthetic
TFDS config: `synthetic/<layout>`, built into data.data_dir on first use), trial=1..10 (the
RegDB split, layout=regdb only: `synthetic/regdb_trial<N>`; 0: split 1), epochs=N (0: the
stage's default below; the schedule's milestones scale with it). The schedule is the paper's
shape (linear warmup, two decays) compressed to a few epochs; `python -m tvilfm_jax.demo` runs
both stages and the evaluation.

No pretrained weights exist here, so both towers start from scratch, which is what the
differences from the paper's recipe are for: a larger visual lr in stage 1 and a larger text
lr in stage 2 (the paper fine-tunes ImageNet / CLIP weights with small steps), and a crop
padding scaled to the small images.
"""

from tvilfm_jax.configs import common
from tvilfm_jax.data.datasets import LAYOUTS, SYNTHETIC_PREFIX, synthetic_config_name

# Default epochs per stage (about 28 x 23 = 644 stage-1 steps on synthetic/sysu) and where the
# two lr decays fall, as fractions of the run.
EPOCHS = {"base": 28, "tvilfm": 16}
MILESTONES = (0.72, 0.9)


def get_config(arg=None):
    args = common.parse_arg(arg, {**common.ARGS, "layout": "sysu", "trial": 0, "epochs": 0})
    if args["layout"] not in LAYOUTS:
        raise ValueError(f"config argument layout={args['layout']!r}: expected one of {LAYOUTS}")
    try:
        config_name = synthetic_config_name(args["layout"], args["trial"] or None)
    except ValueError as err:
        raise ValueError(f"config argument trial={args['trial']}: {err}") from None
    c = common.base_config(args["stage"], args["recipe"])
    c.data.name = SYNTHETIC_PREFIX + config_name
    c.data.build_synthetic = True
    c.data.data_dir = "tfds_data"  # relative to the working directory (the repo root: git-ignored)
    c.data.image_size = (64, 32)
    c.data.crop_padding = 3  # 10 px at 288x144 is ~7% of the width; about that here too
    c.data.num_workers = 0

    c.model.resnet_blocks = (1, 1, 1, 1)
    c.model.resnet_width = 16  # D = 512
    c.model.text_width = 64
    c.model.text_layers = 2
    c.model.text_heads = 2
    c.model.compute_dtype = "float32"

    epochs = args["epochs"] or EPOCHS[c.stage]
    if epochs < 4:
        raise ValueError(f"config argument epochs={epochs}: expected >= 4 (2 warmup epochs, then training)")
    c.optim.warmup_epochs = 2
    c.optim.milestones = tuple(sorted({max(3, min(epochs - 1, round(f * epochs))) for f in MILESTONES}))
    if c.stage == "base":
        # A network trained from scratch takes a larger step than the paper's ImageNet fine-tuning.
        c.optim.lr_visual = 1e-2
    else:
        # The SYSU stage-2 recipe; lr_visual also sets the neck's lr (x2), and in the paper recipe
        # the text embeddings' and projection's. The text tower starts from scratch here.
        common.sysu_llcm_stage2(c)
        c.optim.lr_txt = 1e-2

    c.train.num_epochs = epochs
    c.train.log_every_steps = 8
    c.train.checkpoint_every_steps = 64
    c.train.eval_start_epoch = 2
    return common.finalize(c)
