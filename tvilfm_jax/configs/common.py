"""The tree every experiment config builds on, and the helpers the dataset configs use.

`base_config(stage, recipe)` is the original's defaults (docs/original.md §2) at full size:
each section is built from the defaults of the settings dataclass that reads it, which is
also where each key is documented:

  stage, recipe, seed   tvilfm_jax.training.config.ExperimentSettings
  data                  tvilfm_jax.training.config.DataSettings
  model                 tvilfm_jax.training.config.ModelSettings
  optim                 tvilfm_jax.optim.OptimSettings
  train                 tvilfm_jax.training.config.TrainSettings
  eval                  tvilfm_jax.eval.settings.EvalSettings (recipe and image size come from
                        the experiment: settings.FROM_EXPERIMENT)
  init                  tvilfm_jax.training.config.InitSettings

A dataset config (sysu.py, regdb.py, llcm.py, synthetic.py) builds on `base_config()`, applies
its per-dataset overrides and returns `finalize(config)`: the tree is locked, so a misspelt
`--config.optim.lr_visul=...` is an error instead of a silent new key.
"""

from __future__ import annotations

import ml_collections

from tvilfm_jax.data.datasets import tfds_name
from tvilfm_jax.eval.settings import FROM_EXPERIMENT, EvalSettings, stage_modalities
from tvilfm_jax.optim import OptimSettings
from tvilfm_jax.sections import section_dict
from tvilfm_jax.stages import RECIPES, STAGES
from tvilfm_jax.training.config import (DataSettings, ExperimentSettings, InitSettings, ModelSettings,
                                        TrainSettings)


def parse_arg(arg: str | None, defaults: dict) -> dict:
    """`"stage=tvilfm,trial=3"` -> {"stage": "tvilfm", "trial": 3} over `defaults`.

    Values take the type of their default; keys not in `defaults` are errors.
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            raise ValueError(f"config argument {item!r}: expected key=value with key in {sorted(defaults)}")
        try:
            values[key] = type(defaults[key])(value.strip())
        except ValueError as err:
            raise ValueError(f"config argument {item!r}: {err}") from None
    if values.get("stage", STAGES[0]) not in STAGES:
        raise ValueError(f"config argument stage={values['stage']!r}: expected one of {STAGES}")
    if values.get("recipe", RECIPES[0]) not in RECIPES:
        raise ValueError(f"config argument recipe={values['recipe']!r}: expected one of {RECIPES}")
    return values


#: The arguments every dataset config takes.
ARGS = {"stage": STAGES[0], "recipe": RECIPES[0]}


def base_config(stage: str = STAGES[0], recipe: str = RECIPES[0]) -> ml_collections.ConfigDict:
    """The original's defaults (docs/original.md §2) at full size: ResNet-50 + CLIP RN50 text tower."""
    c = ml_collections.ConfigDict()
    c.stage = stage
    c.recipe = recipe
    c.seed = ExperimentSettings.seed
    c.data = ml_collections.ConfigDict(section_dict(DataSettings))
    c.model = ml_collections.ConfigDict(section_dict(ModelSettings))
    c.optim = ml_collections.ConfigDict(section_dict(OptimSettings))
    c.train = ml_collections.ConfigDict(section_dict(TrainSettings))
    # The paper selects stage 1 by IR R1 (the only modality scored) and stage 2 by Fusion R1 (the
    # official script tests --test_modality Fusion without --CAT_EVAL, docs/original.md §7).
    c.train.best_metric = "fusion/R1" if stage == "tvilfm" and recipe == "paper" else "rank1"
    c.eval = ml_collections.ConfigDict(section_dict(EvalSettings, exclude=FROM_EXPERIMENT))
    # Protocols empty: all of the dataset's for `python -m tvilfm_jax.evaluate`, its main one
    # (SYSU all-search, RegDB t->v, LLCM i->v) during training, as the original.
    c.eval.modalities = stage_modalities(stage)
    # Empty: all gallery trials (EvalSettings: None); a tuple here keeps the key overridable
    # with one (`--config.eval.trials=(0,1)`).
    c.eval.trials = ()
    c.init = ml_collections.ConfigDict(section_dict(InitSettings))
    return c


def sysu_llcm_stage2(c: ml_collections.ConfigDict) -> None:
    """The SYSU and LLCM stage-2 script flags (docs/original.md §2): lr_txt 3.5e-4, text bias decay 5e-4,
    evaluation from the first epochs (text_weight_decay is also set there, but never read)."""
    c.optim.lr_txt = 3.5e-4
    c.optim.text_weight_decay_bias = 5e-4
    c.train.eval_start_epoch = 0


def sysu_llcm_config(layout: str, arg: str | None) -> ml_collections.ConfigDict:
    """The SYSU-MM01 or LLCM config: the defaults in stage 1, `sysu_llcm_stage2` in stage 2."""
    args = parse_arg(arg, ARGS)
    c = base_config(args["stage"], args["recipe"])
    c.data.name = tfds_name(layout)
    if c.stage == "tvilfm":
        sysu_llcm_stage2(c)
    return finalize(c)


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks the tree: overriding an existing key works, adding a new one raises."""
    config.lock()
    return config
