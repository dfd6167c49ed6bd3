"""Evaluation: retrieval metrics (`metrics`), per-query reference (`reference_metrics`)."""
