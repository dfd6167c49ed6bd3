"""What `extract` embeds: image paths under a root, their identity / camera, their captions.

    entries = list_entries("/data/SYSU-MM01", file_list=None, pattern=path_pattern("sysu", None),
                           captions_file="ir_captions.json")

Paths are relative to the root, '/'-separated: the lines of a file list in its order, else the
images a captions file names, else every file under the root that PIL can open, sorted. pid / cam come from a regular expression
with the named groups `pid` and optionally `cam`, searched in the relative path: one of
`LAYOUT_PATTERNS` (the on-disk layouts of `tvilfm_jax.data.layouts`) or the user's own; a path
it does not match has pid / cam None. Captions come from a JSON object {path: caption} or
{path: {"description": caption}} (the `Text/caption_dict_*.json` form) keyed by the image
paths (each may carry a prefix, such as the released files' "datasets/sysu/"); every image
needs one, keys of other images are ignored.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from tvilfm_jax.data.datasets import LAYOUTS, REGDB_GALLERY_CAM, REGDB_QUERY_CAM

#: Where each layout keeps the identity and camera of a test image in its relative path:
#: SYSU-MM01 cam<c>/<pid>/<file>; LLCM test_{vis,nir}/cam<c>/<pid>/<file> (or vis|nir/<pid>/ with
#: "_c<NN>_" in the file name); RegDB Visible|Thermal/<pid>/<file> (no camera ids: the constants
#: the original's metric gets, `REGDB_*_CAM`, by modality folder).
LAYOUT_PATTERNS = {
    "sysu": r"(?:^|/)cam(?P<cam>\d+)/(?P<pid>\d+)/[^/]+$",
    "llcm": r"(?:^|/)(?:test_(?:vis|nir)/cam(?P<cam>\d+)/(?P<pid>\d+)/[^/]+"
            r"|(?:vis|nir)/(?P<pid2>\d+)/[^/]*_c(?P<cam2>\d+)_[^/]*)$",
    "regdb": r"(?:^|/)(?:(?P<visible>Visible)|Thermal)/(?P<pid>\d+)/[^/]+$",
}
assert set(LAYOUT_PATTERNS) == set(LAYOUTS)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One image: `path` relative to the root; pid / cam None where the pattern did not match
    (or has no `cam` group); caption None without a captions file."""

    path: str
    pid: int | None = None
    cam: int | None = None
    caption: str | None = None


def path_pattern(layout: str | None, regex: str | None) -> re.Pattern | None:
    """The compiled pid / cam pattern of `--layout` or `--pid_regex` (at most one; None: neither).
    A regex without a named group `pid` is a ValueError naming the groups it has."""
    if layout is not None and regex is not None:
        raise ValueError("pass at most one of --layout and --pid_regex")
    if layout is not None:
        if layout not in LAYOUT_PATTERNS:
            raise ValueError(f"--layout must be one of {sorted(LAYOUT_PATTERNS)}, got {layout!r}")
        return re.compile(LAYOUT_PATTERNS[layout])
    if regex is None:
        return None
    try:
        pattern = re.compile(regex)
    except re.error as err:
        raise ValueError(f"--pid_regex {regex!r} is not a regular expression: {err}") from None
    if "pid" not in pattern.groupindex:
        raise ValueError(f"--pid_regex {regex!r} needs a named group (?P<pid>...) (and optionally (?P<cam>...)); "
                         f"it has {sorted(pattern.groupindex) or 'none'}")
    return pattern


def parse_ids(path: str, pattern: re.Pattern | None) -> tuple[int | None, int | None]:
    """(pid, cam) of a relative path; (None, None) where `pattern` does not match it."""
    match = pattern.search(path) if pattern is not None else None
    if match is None:
        return None, None
    groups = {k: v for k, v in match.groupdict().items() if v is not None}
    pid = groups.get("pid", groups.get("pid2"))
    cam = groups.get("cam", groups.get("cam2"))
    if "visible" in pattern.groupindex:  # RegDB: the camera is the modality folder
        cam = REGDB_GALLERY_CAM if "visible" in groups else REGDB_QUERY_CAM
    try:
        return int(pid), None if cam is None else int(cam)
    except ValueError:
        raise ValueError(f"{path}: the pid/cam groups of {pattern.pattern!r} matched {pid!r}/{cam!r}, "
                         "expected integers") from None


def _clean(path: str) -> str:
    path = path.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def _require_folder(root: Path) -> None:
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist (expected a directory of images)")


def list_paths(root: str | os.PathLike, file_list: str | os.PathLike | None = None) -> list[str]:
    """Relative paths of the images to embed: the lines of `file_list` (relative to `root`, in
    order), else every file under `root` that PIL can open, sorted. Missing inputs and an empty
    set are ValueErrors naming the file."""
    root = Path(root)
    _require_folder(root)
    if file_list is not None:
        try:
            lines = Path(file_list).read_text().splitlines()
        except OSError as err:
            raise ValueError(f"cannot read file list {file_list}: {err.strerror or err}") from None
        paths = [_clean(line) for line in lines if line.strip()]
        duplicates = sorted(p for p, n in collections.Counter(paths).items() if n > 1)
        if duplicates:
            raise ValueError(f"file list {file_list}: repeated paths, e.g. {duplicates[:3]}")
        missing = [p for p in paths if not (root / p).is_file()]
        if missing:
            raise ValueError(f"file list {file_list}: {len(missing)} path(s) are not files under {root}, "
                             f"e.g. {missing[:3]}")
    else:
        extensions = set(Image.registered_extensions())
        paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.suffix.lower() in extensions and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not paths:
        raise ValueError(f"no images to embed in {file_list or root} (expected image files PIL can open)")
    return paths


def _match_key(key: str, is_path) -> str | None:
    """The image path `key` names: itself, or its longest suffix of whole components for which
    `is_path` holds ("datasets/sysu/cam3/0002/0001.jpg" -> "cam3/0002/0001.jpg", as the released
    Text/ keys)."""
    parts = key.split("/")
    for i in range(len(parts)):
        if is_path("/".join(parts[i:])):
            return "/".join(parts[i:])
    return None


def read_captions(captions_file: str | os.PathLike) -> dict[str, str]:
    """{key: caption} of a JSON object {key: caption} or {key: {"description": caption}}."""
    try:
        with open(captions_file) as f:
            data = json.load(f)
    except OSError as err:
        raise ValueError(f"cannot read captions file {captions_file}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"captions file {captions_file} is not valid JSON ({err})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"captions file {captions_file}: expected a non-empty JSON object {{image path: caption}}")
    captions = {}
    for key, value in data.items():
        text = value.get("description") if isinstance(value, dict) else value
        if not isinstance(text, str):
            raise ValueError(f"captions file {captions_file}: key {key!r} must map to a caption string or "
                             f'{{"description": caption}}, got {value!r}')
        captions[_clean(key)] = text
    return captions


def captioned_paths(root: Path, captions_file: str | os.PathLike, captions: dict[str, str]) -> list[str]:
    """The image files under `root` that the caption keys name, sorted; a key naming none is a
    ValueError naming it."""
    paths = [_match_key(key, lambda p: (root / p).is_file()) for key in captions]
    missing = [key for key, path in zip(captions, paths) if path is None]
    if missing:
        raise ValueError(f"captions file {captions_file}: {len(missing)} key(s) name no image file under {root}, "
                         f"e.g. {missing[:3]}; expected paths relative to the image folder (after any prefix)")
    return sorted(set(paths))


def align_captions(captions_file: str | os.PathLike, captions: dict[str, str], paths: Sequence[str]) -> list[str]:
    """The caption of each path (a key may carry a prefix before the path, as the released Text/
    files do; keys of other images are ignored); a ValueError naming the file and the first
    images without one."""
    wanted = set(paths)
    by_path = {}
    for key, text in captions.items():
        path = _match_key(key, wanted.__contains__)
        if path is not None:
            by_path[path] = text
    missing = [p for p in paths if p not in by_path]
    if missing:
        raise ValueError(f"captions file {captions_file}: no caption for {len(missing)} of the {len(paths)} images, "
                         f"e.g. {missing[:3]}; expected keys that are the image paths relative to the image folder")
    return [by_path[p] for p in paths]


def list_entries(root: str | os.PathLike, *, file_list: str | os.PathLike | None = None,
                 pattern: re.Pattern | None = None, captions_file: str | os.PathLike | None = None) -> list[Entry]:
    """Every image to embed, with pid / cam (from `pattern`) and caption (from `captions_file`).
    With captions but no file list, the images are the ones the caption keys name."""
    captions = None if captions_file is None else read_captions(captions_file)
    if captions is not None and file_list is None:
        _require_folder(Path(root))
        paths = captioned_paths(Path(root), captions_file, captions)
    else:
        paths = list_paths(root, file_list)
    texts = [None] * len(paths) if captions is None else align_captions(captions_file, captions, paths)
    return [Entry(p, *parse_ids(p, pattern), c) for p, c in zip(paths, texts)]
