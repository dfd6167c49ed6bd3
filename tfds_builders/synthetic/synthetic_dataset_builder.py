"""Synthetic tri-modal datasets in the real layouts (docs/design.md §8 "The embedded default").

    tfds build tfds_builders/synthetic --config sysu --file_format=array_record --data_dir ~/tfds

The builder writes the tree with `write_tree` into `<download_dir>/synthetic/<config>/` (kept:
the records' paths are relative to it) and then reads, validates and writes it exactly as the
manual builders do a real dataset.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import tensorflow_datasets as tfds

from tfds_builders.reid_builder import ReIdBuilder
from tvilfm_jax.data.datasets import (LAYOUTS, REGDB_TRIALS, SYNTHETIC_REGDB_TRIAL, synthetic_config_name,
                                      synthetic_trial)
from tvilfm_jax.data.synthetic import write_tree


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
    """A layout, `write_tree` size knobs and seed; `trial` is the RegDB split to write."""

    layout: str = "sysu"
    sizes: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    trial: int | None = None


# Tiny: a few dozen small source images (the builder resizes them to 288x144), for tests.
_TINY = {
    "sysu": {"num_train_ids": 4, "num_val_ids": 1, "num_test_ids": 3, "images_per_cam": 1, "image_size": (96, 48)},
    "regdb": {"num_train_ids": 3, "num_test_ids": 3, "images_per_id": 2, "num_trials": 1, "image_size": (96, 48)},
    "llcm": {"num_train_ids": 3, "num_test_ids": 3, "images_per_cam": 1, "image_size": (96, 48)},
}


def _configs() -> list[SyntheticConfig]:
    configs = []
    for layout in LAYOUTS:
        trial = synthetic_trial(layout)
        configs.append(SyntheticConfig(
            name=synthetic_config_name(layout), layout=layout, trial=trial,
            description=f"{layout} layout, write_tree's default (demo) sizes" + (", trial 1" if trial else ""),
        ))
    for layout in LAYOUTS:
        configs.append(SyntheticConfig(
            name=synthetic_config_name(layout, tiny=True), layout=layout, trial=synthetic_trial(layout),
            sizes=_TINY[layout], description=f"{layout} layout, tiny sizes for tests: {_TINY[layout]}",
        ))
    # The other RegDB splits of the same trees (a tiny tree writes as many split files as it needs).
    for trial in (t for t in REGDB_TRIALS if t != SYNTHETIC_REGDB_TRIAL):
        for tiny in (False, True):
            sizes = {**_TINY["regdb"], "num_trials": trial} if tiny else {}
            configs.append(SyntheticConfig(
                name=synthetic_config_name("regdb", trial, tiny), layout="regdb", trial=trial, sizes=sizes,
                description=f"regdb layout, {'tiny sizes' if tiny else 'default sizes'}, trial {trial}",
            ))
    return configs


class Builder(ReIdBuilder):
    """Synthetic people; configs sysu, regdb, llcm, their *_tiny variants, and regdb[_tiny]_trial2..10."""

    BUILDER_CONFIGS = _configs()
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        **ReIdBuilder.RELEASE_NOTES,
        "1.1.0": "sysu: 120 training / 24 test identities, 2 images per camera (was 40 / 16, 4), so that "
                 "features generalise to unseen people.",
    }

    @property
    def layout(self) -> str:
        return self.builder_config.layout

    @property
    def trial(self) -> int | None:
        return self.builder_config.trial

    @property
    def synthetic(self) -> bool:
        return True

    def _dataset_root(self, dl_manager: tfds.download.DownloadManager) -> Path:
        config = self.builder_config
        root = Path(dl_manager.download_dir) / "synthetic" / config.name
        # write_tree wants an empty folder; a leftover is a previous (maybe interrupted) run.
        shutil.rmtree(root, ignore_errors=True)
        summary = write_tree(root, config.layout, seed=config.seed, **config.sizes)
        self.info.metadata["source"] = {"seed": summary["seed"], "options": summary["options"], "num_files": summary["num_files"]}
        return root
