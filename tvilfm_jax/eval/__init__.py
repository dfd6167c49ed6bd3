"""Evaluation: test sets, features, query texts, scoring, metrics and reports.

Modules: `settings` (the benchmarks' protocols, `EvalSettings` from `config.eval`), `testset`
(the test data from TFDS records or a dataset tree), `features` (one jitted pass of every image
and caption), `texts` (which caption each query gets), `scoring` (every protocol, text source,
TTA variant, trial and query modality), `metrics` (CMC, mAP, mINP in JAX) and
`reference_metrics` (their per-query NumPy reference), `report` (JSON, Markdown, figures),
`runner` (`Evaluator`, the trainer's `evaluate_fn`, loading a model to score), `aggregate`
(mean ± std over runs of reports). The CLI is
`tvilfm_jax.evaluate`.
"""
