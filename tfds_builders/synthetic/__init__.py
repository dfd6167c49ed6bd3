"""TFDS builder `synthetic`: generated people in the real layouts, no download needed."""
