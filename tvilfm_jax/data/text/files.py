"""The Text/ file set of a dataset (docs/original.md §5.3, §9): file names, contents and writing.

Files live in ``<root>/Text/<c>_<M>/`` for captioner ``<c>`` (the release: "Blip") and
modality ``<M>`` ("RGB" or "IR"); ``file_name(kind, M, c)`` names one relative to Text/,
``text_path`` the same relative to the dataset root. Kinds, and the layouts that have them:

  caption_dict      {key: {"description"}}                      RGB: regdb, llcm; IR: all
  caption_llm_dict  {key: {"description", "aug_description"}}   regdb, llcm
  id_caption_map    {str(pid): [unique descriptions]}           RGB: all; IR: sysu
  train_text        [N_train] str, the training order           sysu
  train_llm_text    [N_train] str (IR: colour-filtered)         sysu
  train_text_label  [N_train] pid str (RGB zero-padded, IR not) sysu

Keys are ``key_prefix + <path relative to the dataset root>``; the original concatenates its
data root and the path, so a non-empty prefix ends with '/'. The captioning stages also keep the
raw and colour-filtered IR rephrases (``raw_rephrase_file``, ``filtered_rephrase_file``). Readers:
`tvilfm_jax.data.text.reading`; writers: the captioning stages (real data) and the synthetic trees.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from tvilfm_jax.data.text.atomic_files import write_json, write_npy

TEXT_DIR = "Text"
CAPTIONER = "Blip"
MODALITIES = ("RGB", "IR")
CAPTION_DICT = "caption_dict"
LLM_DICT = "caption_llm_dict"
ID_CAPTION_MAP = "id_caption_map"
TRAIN_TEXT = "train_text"
TRAIN_LLM_TEXT = "train_llm_text"
TRAIN_LABELS = "train_text_label"
_ARRAYS = (TRAIN_TEXT, TRAIN_LLM_TEXT, TRAIN_LABELS)


def file_name(kind: str, modality: str, captioner: str = CAPTIONER) -> str:
    """``<c>_<M>/<kind>_<c>_<M>.{json,npy}``, relative to Text/."""
    extension = "npy" if kind in _ARRAYS else "json"
    return f"{captioner}_{modality}/{kind}_{captioner}_{modality}.{extension}"


def text_path(kind: str, modality: str, captioner: str = CAPTIONER) -> str:
    """``Text/<c>_<M>/<kind>_<c>_<M>.{json,npy}``, relative to the dataset root."""
    return f"{TEXT_DIR}/{file_name(kind, modality, captioner)}"


def raw_rephrase_file(layout: str) -> str:
    """The LLM rephrases of the IR captions before the colour filter (relative to Text/)."""
    return f"{CAPTIONER}_IR/origin_llm_color_dict/{layout}_ir_blip_caption_LLM_dict.json"


def filtered_rephrase_file(layout: str) -> str:
    """The same after the colour filter; the RegDB folder keeps the release's "filterd" typo."""
    folder = "llm_color_filterd_output" if layout == "regdb" else "llm_color_filtered_output"
    return f"{CAPTIONER}_IR/{folder}/{layout}_ir_blip_caption_LLM_filtered_dict.json"


def default_key_prefix(layout: str) -> str:
    """The key prefix of the released files: "datasets/<layout>/"."""
    return f"datasets/{layout}/"


def normalise_key_prefix(prefix: str) -> str:
    """The original concatenates root + path, so a non-empty prefix must end with '/'."""
    return prefix if prefix == "" or prefix.endswith("/") else prefix + "/"


def caption_dict(items: Iterable[tuple[str, str]], prefix: str) -> dict[str, dict[str, str]]:
    """``caption_dict`` content from (relative path, description) pairs, in their order."""
    return {prefix + key: {"description": description} for key, description in items}


def llm_dict(items: Iterable[tuple[str, str, str]], prefix: str) -> dict[str, dict[str, str]]:
    """``caption_llm_dict`` content from (relative path, description, aug_description) triples."""
    return {prefix + key: {"description": description, "aug_description": aug} for key, description, aug in items}


def id_caption_map(items: Iterable[tuple[int, str]]) -> dict[str, list[str]]:
    """``id_caption_map`` content from (pid, description) pairs: pids ascending, each pid's
    unique descriptions in first-seen order (the original used set order; nothing reads it)."""
    by_pid: dict[int, dict[str, None]] = {}
    for pid, description in items:
        by_pid.setdefault(pid, {})[description] = None
    return {str(pid): list(texts) for pid, texts in sorted(by_pid.items())}


def string_array(values: Iterable[str]) -> np.ndarray:
    """A ``train_*`` array: [N] fixed-width unicode (np.save without pickles)."""
    return np.array(list(values), dtype=str)


def write_files(folder: str | os.PathLike, files: dict[str, object], indent: int = 1) -> list[str]:
    """Writes `files` (path relative to `folder` -> np.ndarray or JSON-able object) atomically,
    JSON as UTF-8 with `indent`; returns the paths written, in order."""
    written = []
    for rel, content in files.items():
        path = os.path.join(os.fspath(folder), rel)
        if isinstance(content, np.ndarray):
            write_npy(path, content)
        else:
            write_json(path, content, indent=indent)
        written.append(path)
    return written
