"""Defaults shared by every experiment config (docs/original.md §2), and the helpers the dataset configs use.

A dataset config (sysu.py, regdb.py, llcm.py, synthetic.py) reads its `:key=value` argument with
`parse_arg`, builds on `base_config(stage, recipe)`, sets its dataset and per-dataset overrides
(`sysu_llcm_stage2` for the SYSU and LLCM stage 2), and returns `finalize(config)`: the tree is
locked, so a misspelt `--config.optim.lr_visul=...` is an error instead of a silent new key.

Config files are loaded by path (absl `config_flags`), not imported as a package, so a dataset
config loads this file by its path too (the few `importlib` lines at its top).

The tree (what each key does is documented where it is defined below):
  stage, recipe, seed
  data     TFDS dataset, batch shape (P identities x K images), augmentation, input workers
  model    network size, fusion and compute dtype (num_classes comes from the dataset)
  optim    docs/original.md §4.5-4.6 parameter groups and schedule (read by tvilfm_jax.optim)
  train    epochs, logging / checkpoint / evaluation cadence, the best-model metric
  eval     what the evaluator scores (read by tvilfm_jax.eval.settings)
  init     the checkpoint a run starts from
"""

from __future__ import annotations

import ml_collections

from tvilfm_jax.data.datasets import tfds_name

STAGES = ("base", "tvilfm")
RECIPES = ("paper", "clean")


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


def base_config(stage: str = "base", recipe: str = "paper") -> ml_collections.ConfigDict:
    """The original's defaults (docs/original.md §2) at full size: ResNet-50 + CLIP RN50 text tower."""
    c = ml_collections.ConfigDict()
    # "base": stage 1 (RGB_IR, docs/original.md §3.3). "tvilfm": stage 2 (RGB_IR_Text, SFF + MJL,
    # visual frozen, §3.4).
    c.stage = stage
    # "paper": the original's behaviour incl. its silent quirks (docs/original.md §10.2: lr grouping by name,
    # drifting frozen visual BN statistics). "clean": those fixed.
    c.recipe = recipe
    # Seeds the model initialisation and every random draw of the input pipeline.
    c.seed = 1

    c.data = ml_collections.ConfigDict()
    # TFDS name with config, e.g. "sysu_mm01", "regdb/trial1", "llcm", "synthetic/sysu".
    c.data.name = tfds_name("sysu")
    # TFDS data_dir; "" = TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
    c.data.data_dir = ""
    # Build a missing synthetic/* dataset into data_dir before training (real datasets are built
    # with `tfds build`, see README).
    c.data.build_synthetic = False
    # (H, W) of training images; stored 288x144 records are Lanczos-resized at load otherwise.
    c.data.image_size = (288, 144)
    # Zero pad before the training random crop, in pixels at image_size (docs/original.md §5.5: 10).
    c.data.crop_padding = 10
    # P identities x K images per modality make one global batch (B = 32).
    c.data.ids_per_batch = 8
    c.data.images_per_id = 4
    # Stage 2: each caption is replaced by its LLM rephrase with this probability (docs/original.md §5.3).
    c.data.llm_aug = True
    c.data.llm_aug_prob = 0.5
    # grain worker processes per host (0: in the training process) and batches read ahead.
    c.data.num_workers = 8
    c.data.prefetch = 2

    c.model = ml_collections.ConfigDict()
    c.model.resnet_blocks = (3, 4, 6, 3)
    # The visual feature size D = 32 * resnet_width (2048); the text projection matches it.
    c.model.resnet_width = 64
    # CLIP text tower size (vocabulary 49408 and context 77 are fixed by the tokenizer).
    c.model.text_width = 512
    c.model.text_layers = 12
    c.model.text_heads = 8
    # "sff": F = f_IR + T(rgb caption) - T(ir caption) (TVI-LFM); "add": F = f_IR + T(rgb caption).
    c.model.fusion = "sff"
    # Training compute dtype of the ResNet and the text tower; params, BN statistics and losses
    # stay fp32. "auto": bfloat16 on GPU/TPU, float32 on CPU. Evaluation uses eval.dtype instead.
    c.model.compute_dtype = "auto"

    c.optim = ml_collections.ConfigDict()
    c.optim.lr_visual = 3.5e-4
    c.optim.lr_txt = 1e-5
    c.optim.text_bias_lr_factor = 2.0
    c.optim.visual_bias_lr_factor = 1.0
    c.optim.classifier_lr_factor = 2.0
    c.optim.visual_weight_decay = 5e-4
    c.optim.visual_weight_decay_bias = 5e-4
    c.optim.text_weight_decay_bias = 0.0
    c.optim.warmup_epochs = 10
    c.optim.warmup_factor = 0.01
    c.optim.milestones = (40, 60, 100)
    c.optim.gamma = 0.1
    c.optim.adam_b1 = 0.9
    c.optim.adam_b2 = 0.999
    c.optim.adam_eps = 1e-8

    c.train = ml_collections.ConfigDict()
    c.train.num_epochs = 120
    # Console + metrics.jsonl + TensorBoard every this many steps (and at every epoch end).
    c.train.log_every_steps = 50
    # The latest checkpoint is written every this many steps and at every epoch end.
    c.train.checkpoint_every_steps = 500
    # How many latest checkpoints to keep (the best model is exported apart, to <workdir>/models/best).
    c.train.keep_checkpoints = 2
    # Evaluation after epoch e (0-based) when e + 1 >= eval_start_epoch and (e + 1) % eval_every_epochs
    # == 0 (docs/original.md §6.7); the best model is the one with the highest `best_metric` (ties: later),
    # a key of the evaluation's metrics: "<modality>/<R1|R5|R10|R20|mAP|mINP>" of the main protocol,
    # or "rank1" = R1 of its primary modality (MER if scored, else Fusion, Text, IR). The paper
    # selects stage 1 by IR R1 (the only modality scored) and stage 2 by Fusion R1 (the official
    # script tests --test_modality Fusion without --CAT_EVAL, docs/original.md §7), so "paper" does too.
    c.train.eval_every_epochs = 2
    c.train.eval_start_epoch = 80
    c.train.best_metric = "fusion/R1" if stage == "tvilfm" and recipe == "paper" else "rank1"
    # Run the evaluator (section `eval` below) on that schedule; False trains without it.
    c.train.evaluate = True

    c.eval = ml_collections.ConfigDict()
    # Read by tvilfm_jax.eval.settings.settings_from_config (image size and recipe come from
    # data.image_size and recipe). Protocols among tvilfm_jax.eval.settings.PROTOCOLS; empty:
    # all of the dataset's for `python -m tvilfm_jax.evaluate`, its main one (SYSU all-search,
    # RegDB t->v, LLCM i->v) during training, as the original.
    c.eval.protocols = ()
    # Query modalities; the stage-1 model's text tower is untrained, so it is scored on IR only.
    c.eval.modalities = ("ir",) if stage == "base" else ("ir", "text", "fusion", "mer")
    # "paper" (identity caption of the query's ground truth, as the original), "non_gallery",
    # "ir_only" (no identity information); see README.
    c.eval.text_sources = ("paper",)
    # Flip test-time augmentation variants to report: (False,) as the original; (False, True) both.
    c.eval.flip = (False,)
    # SYSU/LLCM gallery trials to score; empty: all ten.
    c.eval.trials = ()
    c.eval.batch_size = 128
    # Compute dtype while embedding: "float32" (the original evaluates without autocast) or
    # "bfloat16" (faster, ~1e-2 relative embedding error); independent of model.compute_dtype.
    c.eval.dtype = "float32"
    # Seed of the per-query caption draws.
    c.eval.seed = 0
    c.eval.max_rank = 20
    # Ranking grid of the evaluate CLI: queries shown, gallery images per query.
    c.eval.ranking_queries = 8
    c.eval.ranking_top_k = 10

    c.init = ml_collections.ConfigDict()
    # A model artifact (tvilfm_jax.artifacts: model.json + variables/), e.g. from
    # `python -m tvilfm_jax.convert` or `<stage-1 workdir>/models/last`. Stage "base": optional
    # (random init when empty); stage "tvilfm": required (the stage-1 model).
    c.init.checkpoint = ""
    return c


def sysu_llcm_stage2(c: ml_collections.ConfigDict) -> None:
    """The SYSU and LLCM stage-2 script flags (docs/original.md §2): lr_txt 3.5e-4, text bias decay 5e-4,
    evaluation from the first epochs (text_weight_decay is also set there, but never read)."""
    c.optim.lr_txt = 3.5e-4
    c.optim.text_weight_decay_bias = 5e-4
    c.train.eval_start_epoch = 0


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks the tree: overriding an existing key works, adding a new one raises."""
    config.lock()
    return config
