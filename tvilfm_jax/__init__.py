"""tvilfm-jax: a JAX/Flax reimplementation of TVI-LFM (NeurIPS 2024).

Subpackages:
  data        dataset registry, tokenizer, image reading, on-disk layouts and their Text/ files,
              test protocols, transforms, sampler, input pipeline, synthetic trees
  models      dual-stem ResNet, GeM, CLIP text tower, BN-neck, fusion, the assembled model
  conversion  PyTorch checkpoints -> Flax variables
  training    config checks, train state and steps, mesh, resumable checkpoints, the loop
  eval        test sets, features, scoring, retrieval metrics, reports
  generators  BLIP captions, LLM rephrases and the colour filter -> Text/ files (torch extra)
  configs     the experiment configs (ml_collections), shipped with the package

Modules: `losses`, `optim`, `viz` (report figures), `artifacts` (a model on disk: model.json +
variables/), `run_layout` (a training run directory), `cli` (what the command lines share),
`stages` (the stage and recipe names), `sections` (reading a config section into its settings
dataclass). Command lines (`python -m tvilfm_jax.X`): `train`, `evaluate`, `convert`, `demo`,
`generators`.
"""

__version__ = "0.1.0"
