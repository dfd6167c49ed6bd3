"""SYSU-MM01 (Wu et al., ICCV 2017) with the TVI-LFM text (docs/original.md §5.1-5.3, §9.2).

    tfds build tfds_builders/sysu_mm01 --manual_dir /data/SYSU-MM01 --file_format=array_record
    TVILFM_TFDS_TEXT=0 tfds build tfds_builders/sysu_mm01 ...    # text-free, stage 1 only
"""

from __future__ import annotations

from tfds_builders.reid_builder import ManualReIdBuilder


class Builder(ManualReIdBuilder):
    """SYSU-MM01: 395 training ids (22,258 RGB / 11,909 IR), 96 test ids, 3,803 IR queries."""

    layout = "sysu"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Pass --manual_dir (Python: download_config=tfds.download.DownloadConfig(manual_dir=...))
    pointing at the extracted SYSU-MM01 root, which must hold:
      cam1/ ... cam6/<pid:04d>/<img>.jpg       RGB cameras 1, 2, 4, 5; IR cameras 3, 6
      exp/train_id.txt, exp/val_id.txt, exp/test_id.txt
      Text/Blip_RGB/train_text_Blip_RGB.npy, Text/Blip_RGB/train_llm_text_Blip_RGB.npy
      Text/Blip_IR/train_text_Blip_IR.npy,   Text/Blip_IR/train_llm_text_Blip_IR.npy
      Text/Blip_RGB/id_caption_map_Blip_RGB.json
      Text/Blip_IR/caption_dict_Blip_IR.json   (test IR image path -> {"description"})
    Optional: Text/Blip_RGB/caption_dict_Blip_RGB.json (RGB image path -> {"description"})
    gives gallery images their own captions. The images come from the SYSU-MM01 authors
    (licence-gated); the Text/ files from the TVI-LFM release (which lacks the caption arrays)
    or `python -m tvilfm_jax.generators`. Without Text/, build text-free for stage 1:
    TVILFM_TFDS_TEXT=0 (Python: Builder(with_text=False)).
    """
