"""RegDB (Nguyen et al., Sensors 2017) with the TVI-LFM text, one config per split (docs/original.md §5.1, §9.1).

    tfds build tfds_builders/regdb --config trial1 --manual_dir /data/RegDB --file_format=array_record
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from tfds_builders.reid_builder import ManualReIdBuilder
from tvilfm_jax.data.datasets import REGDB_TRIALS, regdb_config_name


@dataclasses.dataclass(eq=False)
class RegDBConfig(tfds.core.BuilderConfig):
    """One of the ten train/test splits of `idx/*_{trial}.txt`."""

    trial: int = 1


class Builder(ManualReIdBuilder):
    """RegDB: per trial 206 training ids (2,060 visible / 2,060 thermal), 2,060 queries vs 2,060 gallery."""

    layout = "regdb"
    BUILDER_CONFIGS = [RegDBConfig(name=regdb_config_name(t), trial=t, description=f"RegDB split {t} (idx/*_{t}.txt)") for t in REGDB_TRIALS]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Pass --manual_dir (Python: download_config=tfds.download.DownloadConfig(manual_dir=...))
    pointing at the extracted RegDB root, which must hold:
      Visible/<pid>/<file>.bmp, Thermal/<pid>/<file>.bmp     pids 1..412
      idx/train_visible_<t>.txt, idx/train_thermal_<t>.txt,
      idx/test_visible_<t>.txt,  idx/test_thermal_<t>.txt     "<relative path> <label>" lines
      Text/Blip_RGB/caption_llm_dict_Blip_RGB.json, Text/Blip_IR/caption_llm_dict_Blip_IR.json
      Text/Blip_IR/caption_dict_Blip_IR.json, Text/Blip_RGB/id_caption_map_Blip_RGB.json
    JSON keys may carry any prefix before "Visible/" or "Thermal/" (the release uses
    "datasets/regdb/"). The images come from the RegDB authors (licence-gated); the Text/
    files from the TVI-LFM release.
    """

    @property
    def trial(self) -> int:
        return self.builder_config.trial
