"""LLCM (Zhang and Wang, CVPR 2023) with the TVI-LFM text (docs/original.md §5.1, §5.3, §9.3).

    tfds build tfds_builders/llcm --manual_dir /data/LLCM --file_format=array_record
"""

from __future__ import annotations

from tfds_builders.reid_builder import ManualReIdBuilder


class Builder(ManualReIdBuilder):
    """LLCM: 713 training ids (idx/train_{vis,nir}.txt), 351 test ids, IR->VIS protocol."""

    layout = "llcm"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Pass --manual_dir (Python: download_config=tfds.download.DownloadConfig(manual_dir=...))
    pointing at the extracted LLCM root, which must hold:
      vis/<pid>/<file>, nir/<pid>/<file>                 training images
      test_vis/cam1..9/<pid:04d>/<file>                  gallery candidates
      test_nir/cam{1,2,4..9}/<pid:04d>/<file>            queries (twin at nir/<pid>/<file>)
      idx/train_vis.txt, idx/train_nir.txt               "<relative path> <label>" lines
      idx/test_id.txt                                    comma-separated test ids
      Text/Blip_RGB/caption_llm_dict_Blip_RGB.json, Text/Blip_IR/caption_llm_dict_Blip_IR.json
      Text/Blip_IR/caption_dict_Blip_IR.json, Text/Blip_RGB/id_caption_map_Blip_RGB.json
    JSON keys may carry any prefix before "vis/" or "nir/". The images come from the LLCM
    authors (licence-gated); the Text/ files from `python -m tvilfm_jax.generators`.
    """
