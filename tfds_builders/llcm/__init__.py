"""TFDS builder `llcm`: LLCM read from `--manual_dir`."""
