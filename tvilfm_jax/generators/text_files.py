"""Writing the Text/ file set the loaders read from an `ImageSet`, stage by stage (docs/original.md §5.3, §9).

The formats, file names and key prefixes are those of `tvilfm_jax.data.text.files`; this module
decides which files each stage writes and which images each covers. Files under ``Text/``:

After captioning (every image of the modality, train and test):
  Blip_RGB/caption_dict_Blip_RGB.json       {key: {"description"}}          regdb, llcm
  Blip_RGB/id_caption_map_Blip_RGB.json     {pid: [unique descriptions]}    all layouts
  Blip_IR/caption_dict_Blip_IR.json         {key: {"description"}}          all layouts
  Blip_IR/id_caption_map_Blip_IR.json       {pid: [unique descriptions]}    sysu
  Blip_<M>/train_text_Blip_<M>.npy          [N_train] str                   sysu
  Blip_<M>/train_text_label_Blip_<M>.npy    [N_train] pid str               sysu
After rephrasing (training images):
  Blip_RGB/caption_llm_dict_Blip_RGB.json   {key: {"description", "aug_description"}}  regdb, llcm
  Blip_RGB/train_llm_text_Blip_RGB.npy      [N_train] str                   sysu
  Blip_IR/origin_llm_color_dict/<layout>_ir_blip_caption_LLM_dict.json   raw IR rephrases, all
After the colour filter (training images):
  Blip_IR/caption_llm_dict_Blip_IR.json     filtered "aug_description"      regdb, llcm
  Blip_IR/train_llm_text_Blip_IR.npy        filtered, [N_train] str         sysu
  Blip_IR/llm_color_filte(r)d_output/<layout>_ir_blip_caption_LLM_filtered_dict.json   all

Training images are, for RegDB, every image (each is trained on in some trial, docs/original.md §9.1).
SYSU arrays follow the §5.2 training order row for row; the label arrays copy the released
ones (RGB zero-padded, IR not). The RegDB folder name keeps the release's "filterd" typo.
LLCM test images are keyed at their originals ``vis|nir/<pid>/<file>`` (``image_sets``).
"""

from __future__ import annotations

from tvilfm_jax.data.text import files as fmt
from tvilfm_jax.data.text.colour_filter import remove_colours
from tvilfm_jax.data.text.files import (
    CAPTION_DICT,
    ID_CAPTION_MAP,
    LLM_DICT,
    TRAIN_LABELS,
    TRAIN_LLM_TEXT,
    TRAIN_TEXT,
    file_name,
    filtered_rephrase_file,
    normalise_key_prefix,
    raw_rephrase_file,
)
from tvilfm_jax.generators.image_sets import ImageEntry, ImageSet


def caption_file_names(layout: str) -> list[str]:
    """Files (relative to Text/) written once all captions exist."""
    if layout == "sysu":
        return [file_name(ID_CAPTION_MAP, "RGB"), file_name(CAPTION_DICT, "IR"), file_name(ID_CAPTION_MAP, "IR"),
                file_name(TRAIN_TEXT, "RGB"), file_name(TRAIN_LABELS, "RGB"),
                file_name(TRAIN_TEXT, "IR"), file_name(TRAIN_LABELS, "IR")]
    return [file_name(CAPTION_DICT, "RGB"), file_name(ID_CAPTION_MAP, "RGB"), file_name(CAPTION_DICT, "IR")]


def rephrase_file_names(layout: str) -> list[str]:
    """Files written once all training captions are rephrased (IR ones before filtering)."""
    return [file_name(TRAIN_LLM_TEXT if layout == "sysu" else LLM_DICT, "RGB"), raw_rephrase_file(layout)]


def filtered_file_names(layout: str) -> list[str]:
    """Files written by the colour filter from the IR rephrases."""
    return [file_name(TRAIN_LLM_TEXT if layout == "sysu" else LLM_DICT, "IR"), filtered_rephrase_file(layout)]


def all_file_names(layout: str) -> list[str]:
    return caption_file_names(layout) + rephrase_file_names(layout) + filtered_file_names(layout)


def _require(values: dict, entries, what: str) -> None:
    missing = [e.key for e in entries if e.key not in values]
    if missing:
        raise ValueError(f"{len(missing)} of {len(entries)} {what} are missing, e.g. {missing[0]!r}")


def _caption_dict(entries, captions, prefix) -> dict:
    return fmt.caption_dict(((e.key, captions[e.key]) for e in entries), prefix)


def _id_caption_map(entries: tuple[ImageEntry, ...], captions: dict[str, str]) -> dict[str, list[str]]:
    return fmt.id_caption_map((e.pid, captions[e.key]) for e in entries)


def write_caption_files(text_dir: str, images: ImageSet, captions: dict[str, dict[str, str]],
                        key_prefix: str) -> list[str]:
    """Writes the caption-only files; ``captions[modality][key]`` must cover every image."""
    prefix = normalise_key_prefix(key_prefix)
    rgb, ir = images.entries["RGB"], images.entries["IR"]
    _require(captions["RGB"], rgb, "RGB captions")
    _require(captions["IR"], ir, "IR captions")
    out: dict[str, object] = {
        file_name(ID_CAPTION_MAP, "RGB"): _id_caption_map(rgb, captions["RGB"]),
        file_name(CAPTION_DICT, "IR"): _caption_dict(ir, captions["IR"], prefix),
    }
    if images.layout == "sysu":
        out[file_name(ID_CAPTION_MAP, "IR")] = _id_caption_map(ir, captions["IR"])
        for modality in ("RGB", "IR"):
            train = images.train_entries(modality)
            labels = [f"{e.pid:04d}" if modality == "RGB" else str(e.pid) for e in train]
            out[file_name(TRAIN_TEXT, modality)] = fmt.string_array(captions[modality][e.key] for e in train)
            out[file_name(TRAIN_LABELS, modality)] = fmt.string_array(labels)
    else:
        out[file_name(CAPTION_DICT, "RGB")] = _caption_dict(rgb, captions["RGB"], prefix)
    return fmt.write_files(text_dir, out)


def write_rephrase_files(text_dir: str, images: ImageSet, rephrases: dict[str, dict[str, dict]],
                         key_prefix: str) -> list[str]:
    """Writes the RGB rephrase file and the raw IR rephrases.

    ``rephrases[modality][key]`` is ``{"description", "aug_description"}`` for every training image.
    """
    prefix = normalise_key_prefix(key_prefix)
    rgb, ir = images.train_entries("RGB"), images.train_entries("IR")
    _require(rephrases["RGB"], rgb, "RGB rephrases")
    _require(rephrases["IR"], ir, "IR rephrases")
    out: dict[str, object] = {raw_rephrase_file(images.layout): _llm_dict(ir, rephrases["IR"], prefix)}
    if images.layout == "sysu":
        out[file_name(TRAIN_LLM_TEXT, "RGB")] = fmt.string_array(rephrases["RGB"][e.key]["aug_description"] for e in rgb)
    else:
        out[file_name(LLM_DICT, "RGB")] = _llm_dict(rgb, rephrases["RGB"], prefix)
    return fmt.write_files(text_dir, out)


def write_filtered_files(text_dir: str, images: ImageSet, ir_rephrases: dict[str, dict],
                         key_prefix: str) -> list[str]:
    """Removes colours from the raw IR rephrases and writes the files training reads."""
    prefix = normalise_key_prefix(key_prefix)
    ir = images.train_entries("IR")
    _require(ir_rephrases, ir, "IR rephrases")
    filtered = {e.key: {"description": ir_rephrases[e.key]["description"],
                        "aug_description": remove_colours(ir_rephrases[e.key]["aug_description"])}
                for e in ir}
    out: dict[str, object] = {filtered_rephrase_file(images.layout): _llm_dict(ir, filtered, prefix)}
    if images.layout == "sysu":
        out[file_name(TRAIN_LLM_TEXT, "IR")] = fmt.string_array(filtered[e.key]["aug_description"] for e in ir)
    else:
        out[file_name(LLM_DICT, "IR")] = _llm_dict(ir, filtered, prefix)
    return fmt.write_files(text_dir, out)


def _llm_dict(entries, rephrases: dict[str, dict], prefix: str) -> dict:
    return fmt.llm_dict(((e.key, rephrases[e.key]["description"], rephrases[e.key]["aug_description"])
                         for e in entries), prefix)
