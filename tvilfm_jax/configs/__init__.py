"""The experiment configs (ml_collections), shipped with the package.

  common     the tree every config builds on, from the settings dataclasses' defaults
  sysu       SYSU-MM01 (docs/original.md §2)
  regdb      RegDB, one run per split
  llcm       LLCM
  synthetic  the embedded default: synthetic people, a small network; runs on a laptop CPU

Each module's `get_config(arg)` returns a locked ConfigDict. The CLIs load a config by file
path (absl `config_flags`: `--config configs/sysu.py:stage=tvilfm`); the files in the
repository's `configs/` re-export these modules for that, and `train` without --config loads
`synthetic.py` from here, so an installed package needs no checkout.
"""
