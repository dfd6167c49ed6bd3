"""TFDS builder `sysu_mm01`: SYSU-MM01 read from `--manual_dir`."""
