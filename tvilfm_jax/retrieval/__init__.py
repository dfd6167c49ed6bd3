"""Using a trained model on one's own images: embed them once, then search (`python -m tvilfm_jax.extract`,
`python -m tvilfm_jax.search`).

Modules: `inputs` (which images, their pid / cam and captions), `store` (the features file
format, resumable), `embedding` (what is stored and the query vectors, through the evaluator's
`FeatureExtractor` and the model's heads), `index` (exact and faiss top-k), `ranking` (printing,
JSON, the grid PNG).
"""
