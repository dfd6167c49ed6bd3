"""RegDB (docs/original.md §2): `--config configs/regdb.py[:stage=base|tvilfm][,trial=1..10][,recipe=...]`.

One run per split: reads the TFDS dataset `regdb/trial<N>` (`tfds build tfds_builders/regdb
--manual_dir <root>`). Both stages use lr_visual 2e-3; stage 2 keeps lr_txt 1e-5, no text
bias decay and evaluation from epoch 80 (the RegDB script only changes lr_visual). Initial
weights as in configs/sysu.py, per trial.
"""

from tvilfm_jax.configs import common
from tvilfm_jax.data.datasets import REGDB_TRIALS, tfds_name


def get_config(arg=None):
    args = common.parse_arg(arg, {**common.ARGS, "trial": 1})
    if args["trial"] not in REGDB_TRIALS:
        raise ValueError(f"config argument trial={args['trial']}: RegDB has trials 1..10")
    c = common.base_config(args["stage"], args["recipe"])
    c.data.name = tfds_name("regdb", args["trial"])
    c.optim.lr_visual = 2e-3
    return common.finalize(c)
