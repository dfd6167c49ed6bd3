"""TFDS builder `regdb`: RegDB read from `--manual_dir`, one config per trial (`regdb/trial1` ...)."""
