"""tvilfm-jax: a JAX/Flax reimplementation of TVI-LFM (NeurIPS 2024).

Subpackages:
  data        tokenizer, on-disk layouts, test protocols, transforms, sampler, input pipeline
  models      dual-stem ResNet, GeM, CLIP text tower, BN-neck, fusion, the assembled model
  conversion  PyTorch checkpoints -> Flax variables
  eval        retrieval metrics and feature extraction
  configs     the experiment configs (ml_collections), shipped with the package

Modules at the top: `stages` (the stage and recipe names), `sections` (reading a config section
into its settings dataclass), `optim`, `losses`, `checkpoints`, and the entry points.
"""

__version__ = "0.1.0"
