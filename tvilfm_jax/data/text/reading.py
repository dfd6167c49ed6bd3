"""Reading the Text/ files of a dataset (docs/original.md §5.3, §9; names in `files`) and matching them to images.

Problems are reported into the layout reader's `Problems` (add/extend), never raised.

The original looks captions up by `data_root + relative_path`, so its JSON keys carry whatever
root the authors used ("datasets/regdb/...", "/data0/.../RegDB/..."). Here every key is reduced
to its path relative to the dataset root by keeping the tail that starts at the LAST path
component naming a modality folder ("Visible", "Thermal", "vis", "nir", "cam<N>"), so any
prefix works, including one that itself contains such a name ("/data/cam_runs/SYSU/cam3/...").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tvilfm_jax.data.text.files import CAPTION_DICT, LLM_DICT, text_path

if TYPE_CHECKING:  # the report the layout readers collect; only its add/extend are called here
    from tvilfm_jax.data.layouts.problems import Problems

__all__ = [
    "check_pid_array",
    "llm_dict_name",
    "load_caption_array",
    "load_caption_dict",
    "load_id_caption_map",
    "load_own_rgb_captions",
    "load_train_captions",
    "lookup",
    "relative_key",
]


def relative_key(key: str, anchor: re.Pattern[str]) -> str | None:
    """`key` relative to the dataset root, or None if no component before the file fullmatches `anchor`.

    >>> relative_key("/data0/x/RegDB/Visible/193/a.bmp", re.compile("Visible"))
    'Visible/193/a.bmp'
    """
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    for i in range(len(parts) - 2, -1, -1):
        if anchor.fullmatch(parts[i]):
            return "/".join(parts[i:])
    return None


def _load_json(path: Path, shown: str, problems: Problems) -> object | None:
    if not path.is_file():
        problems.add("missing text files", shown)
        return None
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.add("unreadable text files", f"{shown}: {err}")
        return None


def load_caption_dict(
    path: Path,
    shown: str,
    anchor: re.Pattern[str],
    expected: str,
    fields: Sequence[str],
    image_exists: Callable[[str], bool],
    problems: Problems,
) -> dict[str, tuple[str, ...]]:
    """Reads a JSON `{image key: {field: text}}` and returns `{relative path: (texts of fields)}`.

    `shown` names the file in messages (relative to the root); `expected` describes a key's
    relative form for them, e.g. "Visible/<pid>/<file>". Reports keys that name no
    modality folder, keys that collide once made relative, values missing a field, and keys
    whose image does not exist (`image_exists(relative path)`).
    """
    data = _load_json(path, shown, problems)
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.add("malformed text files", f"{shown}: expected a JSON object keyed by image path, got {type(data).__name__}")
        return {}
    captions: dict[str, tuple[str, ...]] = {}
    original_key: dict[str, str] = {}
    unrecognised = []
    for key, value in data.items():
        relative = relative_key(key, anchor)
        if relative is None:
            unrecognised.append(key)
            continue
        if not isinstance(value, dict) or not all(isinstance(value.get(f), str) for f in fields):
            problems.add(f"{shown}: entries without string field(s) {', '.join(fields)}", f"{key!r}: {str(value)[:80]}")
            continue
        if relative in captions:
            problems.add(f"{shown}: keys naming the same image", f"{original_key[relative]!r} and {key!r}")
            continue
        captions[relative] = tuple(value[f] for f in fields)
        original_key[relative] = key
    if unrecognised and not captions:
        problems.add(
            f"{shown}: no key matches the layout (keys must end in '{expected}' after any prefix)",
            f"{len(unrecognised)} keys, first {unrecognised[0]!r}",
        )
    elif unrecognised:
        problems.extend(f"{shown}: keys not ending in '{expected}'", map(repr, unrecognised))
    missing = [original_key[r] for r in captions if not image_exists(r)]
    problems.extend(f"{shown}: captions without an image", map(repr, missing))
    return captions


def load_caption_array(path: Path, shown: str, expected: int, what: str, problems: Problems) -> list[str] | None:
    """Reads a SYSU caption .npy ([N] strings aligned with the image order) and checks N."""
    if not path.is_file():
        problems.add("missing text files", shown)
        return None
    try:
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError:
            # Object arrays of Python str need pickle; these are the dataset's own files.
            array = np.load(path, allow_pickle=True)
    except (OSError, ValueError, EOFError) as err:
        problems.add("unreadable text files", f"{shown}: {err}")
        return None
    if array.ndim != 1:
        problems.add("malformed text files", f"{shown}: expected a 1-D array of strings, got shape {array.shape}")
        return None
    values = array.tolist()
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        problems.add("malformed text files", f"{shown}: entry {bad[0]} is {type(values[bad[0]]).__name__}, not str ({len(bad)} such)")
        return None
    if len(values) != expected:
        problems.add(
            "caption arrays whose length differs from the image count",
            f"{shown} has {len(values)} entries but there are {expected} {what}",
        )
        return None
    return values


def check_pid_array(path: Path, shown: str, pids: Sequence[int], problems: Problems) -> None:
    """Checks an optional SYSU `train_text_label_*.npy` (pid strings) against the image order.

    The original never reads the values, but they record the order the captions were written
    in, so agreement proves the caption arrays line up with our image order.
    """
    if not path.is_file():
        return
    try:
        values = np.load(path, allow_pickle=False).tolist()
        file_pids = [int(v) for v in values]
    except (OSError, ValueError, TypeError, EOFError) as err:
        problems.add("unreadable text files", f"{shown}: {err}")
        return
    if len(file_pids) != len(pids):
        problems.add(
            "caption arrays whose length differs from the image count",
            f"{shown} has {len(file_pids)} entries but there are {len(pids)} images",
        )
        return
    wrong = [i for i, (a, b) in enumerate(zip(file_pids, pids)) if a != b]
    if wrong:
        i = wrong[0]
        problems.add(
            "caption label arrays out of step with the image order",
            f"{shown}: {len(wrong)} entries differ, first at index {i} (file says id {file_pids[i]}, image order has {pids[i]})",
        )


def load_id_caption_map(path: Path, shown: str, problems: Problems) -> dict[str, tuple[str, ...]] | None:
    """Reads `id_caption_map_*.json`: str(pid) -> non-empty list of captions; keys made canonical str(int)."""
    data = _load_json(path, shown, problems)
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.add("malformed text files", f"{shown}: expected a JSON object str(pid) -> [captions], got {type(data).__name__}")
        return None
    result: dict[str, tuple[str, ...]] = {}
    for key, value in data.items():
        try:
            pid = str(int(key))
        except ValueError:
            problems.add(f"{shown}: keys that are not identity ids", repr(key))
            continue
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            problems.add(f"{shown}: values that are not a non-empty list of captions", f"{key!r}: {str(value)[:80]}")
            continue
        if pid in result:
            problems.add(f"{shown}: keys naming the same identity", repr(key))
            continue
        result[pid] = tuple(value)
    return result


def lookup(captions: Mapping[str, tuple[str, ...]], keys: Sequence[str], shown: str, what: str, problems: Problems) -> list[tuple[str, ...] | None]:
    """Captions for each relative key; reports the keys that have none."""
    found = [captions.get(k) for k in keys]
    problems.extend(f"{shown}: {what} without a caption", [k for k, c in zip(keys, found) if c is None])
    return found


def load_train_captions(
    root: Path,
    captioner: str,
    modality: str,
    anchor: re.Pattern[str],
    expected: str,
    paths: Sequence[str],
    image_exists: Callable[[str], bool],
    problems: Problems,
) -> tuple[list[tuple[str | None, str | None]], dict[str, tuple[str, ...]]]:
    """(caption, rephrase) per training image from `Text/<c>_<modality>/caption_llm_dict_<c>_<modality>.json`.

    Used by the JSON-captioned layouts (RegDB, LLCM); `paths` are relative image paths.
    Also returns the whole file (relative key -> (description, aug_description)): it describes
    more images than the training ones (RegDB, LLCM: the test visible images too).
    """
    shown = llm_dict_name(captioner, modality)
    captions = load_caption_dict(root / shown, shown, anchor, expected, ("description", "aug_description"), image_exists, problems)
    found = lookup(captions, paths, shown, "training images", problems)
    return [f or (None, None) for f in found], captions


def llm_dict_name(captioner: str, modality: str) -> str:
    """`Text/<c>_<modality>/caption_llm_dict_<c>_<modality>.json`, relative to the root."""
    return text_path(LLM_DICT, modality, captioner)


def load_own_rgb_captions(
    root: Path,
    captioner: str,
    anchor: re.Pattern[str],
    expected: str,
    keys: Mapping[str, str],
    image_exists: Callable[[str], bool],
    problems: Problems,
    *,
    already_read: Mapping[str, Mapping[str, tuple[str, ...]]] | None = None,
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Each test RGB image's own BLIP caption, where a per-image RGB file of Text/ has one.

    Args:
      keys: image path (e.g. a gallery candidate) -> the relative key its caption is filed
        under (the path itself; for LLCM the `vis/` twin of a `test_vis/` image).
      already_read: Text/ file (relative name) -> its parsed captions (first field the
        `description`), for files the reader loaded anyway, so they are not read twice.

    Sources, first match wins: `caption_llm_dict_<c>_RGB.json`, then `caption_dict_<c>_RGB.json`
    (plain BLIP captions; RegDB's release ships it, equal to the other's descriptions). A file
    not in `already_read` is optional here: SYSU-MM01's release has neither. An image without
    a caption is not a problem (no original code path reads these; they let an evaluator
    build caption pools from the gallery it uses), but a caption the two files disagree on is.

    Returns:
      (path -> description for the paths that have one, the Text/ files that supplied any).
    """
    already_read = already_read or {}
    sources = []
    for shown in (llm_dict_name(captioner, "RGB"), text_path(CAPTION_DICT, "RGB", captioner)):
        if shown in already_read:
            sources.append((shown, already_read[shown]))
        elif (root / shown).is_file():
            sources.append((shown, load_caption_dict(root / shown, shown, anchor, expected, ("description",), image_exists, problems)))
    found: dict[str, str] = {}
    used = []
    for shown, captions in sources:
        hits = {path: captions[key][0] for path, key in keys.items() if key in captions}
        # Only the second file can disagree, and only with the first.
        disagree = [repr(keys[p]) for p, c in hits.items() if p in found and found[p] != c]
        problems.extend(f"{shown}: descriptions that differ from {sources[0][0]}", disagree)
        new = {p: c for p, c in hits.items() if p not in found}
        if new:
            used.append(shown)
            found.update(new)
    return found, tuple(used)
