"""RegDB (docs/original.md §2): `--config configs/regdb.py[:stage=base|tvilfm][,trial=1..10][,recipe=...]`.

One run per split: reads the TFDS dataset `regdb/trial<N>` (`tfds build tfds_builders/regdb
--manual_dir <root>`). Both stages use lr_visual 2e-3; stage 2 keeps lr_txt 1e-5, no text
bias decay and evaluation from epoch 80 (the RegDB script only changes lr_visual). Initial
weights as in configs/sysu.py, per trial.
"""

import importlib.util
from pathlib import Path

from tvilfm_jax.data.datasets import REGDB_TRIALS, tfds_name

# Config files are loaded by path, so common.py is too.
_spec = importlib.util.spec_from_file_location("tvilfm_configs_common", Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

def get_config(arg=None):
    args = common.parse_arg(arg, {"stage": "base", "recipe": "paper", "trial": 1})
    if args["trial"] not in REGDB_TRIALS:
        raise ValueError(f"config argument trial={args['trial']}: RegDB has trials 1..10")
    c = common.base_config(args["stage"], args["recipe"])
    c.data.name = tfds_name("regdb", args["trial"])
    c.optim.lr_visual = 2e-3
    return common.finalize(c)
