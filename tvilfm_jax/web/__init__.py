"""The search page of `python -m tvilfm_jax.serve`: `app` (the FastAPI app) and `static/` (the page)."""
