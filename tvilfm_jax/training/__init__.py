"""Training: experiment config checks, the train state, the jitted data-parallel steps of both
stages, mesh placement and JAX's distributed runtime, resumable checkpoints, and reporting.

Modules: `config` (the settings dataclasses of a run; `validate` reads a config tree into
them), `state` (TrainState), `step` (pure train steps), `mesh` (devices, shardings, multi-host
start), `inputs` (TFDS splits -> input pipeline), `initialization` (start variables:
init.checkpoint or a fresh init), `checkpointing` (the resumable train state, one orbax
CheckpointManager), `logging` (progress bar, metrics.jsonl, TensorBoard), `loop` (`prepare` +
`train`), `stage_runs` (both stages of one experiment in one folder, finished ones reused). The CLI is `tvilfm_jax.train`; the workdir's layout is `tvilfm_jax.run_layout`, the
exported models are `tvilfm_jax.artifacts`.
"""
