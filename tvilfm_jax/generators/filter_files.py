"""The colour filter applied to a JSON file of texts (e.g. a released raw rephrase dict)."""

from __future__ import annotations

import json

from tvilfm_jax.data.text.atomic_files import write_json
from tvilfm_jax.data.text.colour_filter import remove_colours


def filter_json_file(src: str, dst: str) -> int:
    """Removes colours from a JSON file of texts; returns how many texts changed.

    Accepts ``{key: str}``, ``{key: [str, ...]}`` (id maps) and ``{key: {"aug_description": str,
    ...}}`` (caption_llm dicts, where only the rephrase is filtered), e.g. a released
    ``origin_llm_color_dict`` file.
    """
    try:
        with open(src, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{src}: input file not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{src}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(  # noqa: TRY004 (bad file content, not a bad argument)
            f"{src}: expected a JSON object keyed by path or pid, got {type(data).__name__}")
    changed = 0

    def clean(text, key):
        nonlocal changed
        if not isinstance(text, str):
            raise ValueError(  # noqa: TRY004 (bad file content, not a bad argument)
                f"{src}: entry {key!r}: expected a string, got {type(text).__name__}")
        out = remove_colours(text)
        changed += out != text
        return out

    result = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if "aug_description" not in value:
                raise ValueError(f"{src}: entry {key!r}: expected an 'aug_description' field, got {sorted(value)}")
            result[key] = {**value, "aug_description": clean(value["aug_description"], key)}
        elif isinstance(value, list):
            result[key] = [clean(v, key) for v in value]
        else:
            result[key] = clean(value, key)
    write_json(dst, result)
    return changed
