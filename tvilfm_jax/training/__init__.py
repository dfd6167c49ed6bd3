"""Training: experiment config checks, the train state, the jitted data-parallel steps of both
stages, mesh placement and JAX's distributed runtime, resumable checkpoints, and reporting.

Modules: `config` (the settings dataclasses of a run; `validate` reads a config tree into
them), `state` (TrainState), `step` (pure train steps), `mesh` (devices, shardings, multi-host
start), `inputs` (TFDS splits -> input pipeline), `checkpointing` (orbax CheckpointManager,
variables exports), `logging` (progress bar, metrics.jsonl, TensorBoard), `loop` (`prepare`,
`train`, and `run`: both in a workdir). The CLI is `tvilfm_jax.train`.
"""
