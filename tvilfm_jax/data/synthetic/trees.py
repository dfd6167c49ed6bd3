"""Writing a synthetic dataset in the real on-disk layout of SYSU-MM01, RegDB or LLCM.

`plan_tree` decides everything (identities, splits, cameras, file names, views, captions)
without touching the disk; `write_tree` renders the planned shots and writes images, split
files and Text/ files exactly as docs/original.md §5.1-5.3 and §9 describe them. Each shot draws from its
own random stream (`seeds.rng(seed, layout, ...)`), so a file's bytes depend only on the seed
and the file's identity.

Size knobs (keyword arguments of `plan_tree`/`write_tree`; defaults make a small demo):

  all layouts   num_train_ids   training identities (C); SYSU writes them to train+val files
                num_test_ids    test identities
                image_size      (H, W) of the written images
                key_prefix      prefix of Text/ JSON keys ("" or ending in "/"); the runtime
                                data root the original code would be run with
  sysu          num_val_ids     how many of the training ids go to exp/val_id.txt
                images_per_cam  images in each (camera, id) folder that exists
  regdb         images_per_id   images per id and modality (the real set has 10)
                num_trials      idx/ split files for trials 1..num_trials
  llcm          images_per_cam  images per (camera, id) and modality
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterable

import numpy as np
from PIL import Image

from tvilfm_jax.data.datasets import LLCM_NIR_CAMS, LLCM_VIS_CAMS, SYSU_INDOOR_CAMS, SYSU_IR_CAMS, SYSU_RGB_CAMS, check_layout
from tvilfm_jax.data.text import files as fmt
from tvilfm_jax.data.text.files import CAPTION_DICT, ID_CAPTION_MAP, LLM_DICT, TRAIN_LABELS, TRAIN_LLM_TEXT, TRAIN_TEXT, default_key_prefix, text_path

from . import seeds
from .cameras import Scene, View, sample_scene, sample_view
from .captions import describe
from .people import Person, sample_people
from .render import render

REGDB_FACINGS = ("front", "back")  # RegDB file names only know these two

DEFAULTS: dict[str, dict[str, object]] = {
    "sysu": {"num_train_ids": 120, "num_val_ids": None, "num_test_ids": 24, "images_per_cam": 2,
             "image_size": (288, 144), "key_prefix": default_key_prefix("sysu")},
    "regdb": {"num_train_ids": 24, "num_test_ids": 24, "images_per_id": 10, "num_trials": 10,
              "image_size": (128, 64), "key_prefix": default_key_prefix("regdb")},
    "llcm": {"num_train_ids": 40, "num_test_ids": 16, "images_per_cam": 3,
             "image_size": (288, 144), "key_prefix": default_key_prefix("llcm")},
}


@dataclasses.dataclass(frozen=True)
class Shot:
    """One image file. `twins` are further paths holding the same bytes (LLCM test images)."""

    relpath: str
    pid: int
    cam: int
    modality: str
    scene: Scene
    view: View
    description: str
    aug_description: str
    twins: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything `write_tree` writes, decided up front.

    shots: every image file, in writing order. lists: other text files, relpath -> content.
    text: Text/ files, relpath -> JSON-able object or np.ndarray (`data.text.files.write_files`).
    """

    layout: str
    options: dict
    people: dict[int, Person]
    shots: tuple[Shot, ...]
    lists: dict[str, str]
    text: dict[str, object]
    summary: dict


def _options(layout: str, sizes: dict) -> dict:
    check_layout(layout)
    unknown = set(sizes) - set(DEFAULTS[layout])
    if unknown:
        raise TypeError(f"unknown size knob(s) {sorted(unknown)} for layout {layout!r}; "
                        f"expected some of {sorted(DEFAULTS[layout])}")
    opts = {**DEFAULTS[layout], **sizes}
    for key, value in opts.items():
        if key in ("image_size", "key_prefix", "num_val_ids"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{layout}: {key} must be an int >= 1, got {value!r}")
    h_w = opts["image_size"]
    if (not isinstance(h_w, (tuple, list)) or len(h_w) != 2
            or not all(isinstance(v, (int, np.integer)) for v in h_w) or h_w[0] < 32 or h_w[1] < 16):
        raise ValueError(f"{layout}: image_size must be (H, W) ints with H >= 32 and W >= 16, got {h_w!r}")
    opts["image_size"] = (int(h_w[0]), int(h_w[1]))
    prefix = opts["key_prefix"]
    if not isinstance(prefix, str) or (prefix and not prefix.endswith("/")):
        # The original concatenates root + relative path, so the root needs its slash.
        raise ValueError(f"{layout}: key_prefix must be '' or end with '/', got {prefix!r}")
    if layout == "sysu":
        if opts["num_train_ids"] < 2:
            raise ValueError("sysu: num_train_ids must be >= 2 (train and val files both need ids)")
        if opts["num_val_ids"] is None:
            opts["num_val_ids"] = max(1, opts["num_train_ids"] // 4)
        val = opts["num_val_ids"]
        if (isinstance(val, bool) or not isinstance(val, (int, np.integer))
                or not 1 <= val < opts["num_train_ids"]):
            raise ValueError(f"sysu: num_val_ids must be an int in [1, num_train_ids), got {val!r}")
    return opts


def _shot(seed: int, layout: str, person: Person, scene: Scene, cam: int, modality: str,
          index: int, relpath: str, view: View | None = None,
          twins: tuple[str, ...] = ()) -> Shot:
    keys = (layout, person.pid, cam, modality, index)
    if view is None:
        view = sample_view(seeds.rng(seed, "view", *keys), scene)
    description, aug = describe(person, view.facing, modality, seeds.rng(seed, "caption", *keys))
    return Shot(relpath, person.pid, cam, modality, scene, view, description, aug, twins)


def _split(ids: Iterable[int], rng: np.random.Generator, first: int) -> tuple[list[int], list[int]]:
    ids = list(ids)
    order = rng.permutation(len(ids))
    return sorted(ids[i] for i in order[:first]), sorted(ids[i] for i in order[first:])


def _present(rng: np.random.Generator, cams: tuple[int, ...], keep: float,
             must_hit: tuple[int, ...], at_least: int = 1) -> list[int]:
    """Cameras an identity walked past: each kept with probability `keep`, then topped up so
    that at least `at_least` of them are in `must_hit`."""
    chosen = {c for c in cams if rng.random() < keep}
    missing = [c for c in must_hit if c not in chosen]
    while len(chosen & set(must_hit)) < at_least:
        c = missing.pop(int(rng.integers(len(missing))))
        chosen.add(c)
    return sorted(chosen)


def _id_caption_map(shots: Iterable[Shot]) -> dict[str, list[str]]:
    """str(pid) -> unique descriptions of that id's `shots`, in the order given."""
    return fmt.id_caption_map((s.pid, s.description) for s in shots)


def _id_line(pids: Iterable[int]) -> str:
    return ",".join(str(p) for p in pids) + "\n"


def _plan_sysu(seed: int, o: dict) -> Plan:
    n_train, n_test = o["num_train_ids"], o["num_test_ids"]
    pids = list(range(1, n_train + n_test + 1))
    people = sample_people(pids, seeds.rng(seed, "sysu", "people"))
    test, train_all = _split(pids, seeds.rng(seed, "sysu", "split"), n_test)
    val, train = _split(train_all, seeds.rng(seed, "sysu", "val"), o["num_val_ids"])
    scenes = {c: sample_scene(seeds.rng(seed, "sysu", "scene", c), indoor=c in SYSU_INDOOR_CAMS)
              for c in SYSU_RGB_CAMS + SYSU_IR_CAMS}
    shots: list[Shot] = []
    for pid in pids:
        rng = seeds.rng(seed, "sysu", "cams", pid)
        # Real SYSU ids miss some cameras; every id keeps an RGB camera other than cam2 so
        # that cam3 queries (whose cam2 gallery is removed) still have a match.
        cams = (_present(rng, SYSU_RGB_CAMS, 0.75, (1, 4, 5))
                + _present(rng, SYSU_IR_CAMS, 0.8, SYSU_IR_CAMS))
        for cam in cams:
            modality = "ir" if cam in SYSU_IR_CAMS else "rgb"
            for i in range(1, o["images_per_cam"] + 1):
                shots.append(_shot(seed, "sysu", people[pid], scenes[cam], cam, modality, i,
                                   f"cam{cam}/{pid:04d}/{i:04d}.jpg"))
    folders: dict[tuple[int, int], list[Shot]] = {}
    for s in shots:
        folders.setdefault((s.pid, s.cam), []).append(s)

    def ordered(cams: tuple[int, ...], ids: list[int]) -> list[Shot]:
        # docs/original.md §5.2: ids sorted as zero-padded strings, then cameras in the given order, then
        # sorted file names.
        out = []
        for pid in sorted(ids, key=lambda p: f"{p:04d}"):
            for cam in cams:
                out += sorted(folders.get((pid, cam), []), key=lambda s: s.relpath)
        return out

    train_rgb, train_ir = ordered(SYSU_RGB_CAMS, train_all), ordered(SYSU_IR_CAMS, train_all)
    test_rgb, test_ir = ordered(SYSU_RGB_CAMS, test), ordered(SYSU_IR_CAMS, test)
    prefix = o["key_prefix"]
    text = {
        text_path(TRAIN_TEXT, "RGB"): fmt.string_array(s.description for s in train_rgb),
        text_path(TRAIN_LLM_TEXT, "RGB"): fmt.string_array(s.aug_description for s in train_rgb),
        text_path(TRAIN_LABELS, "RGB"): fmt.string_array(f"{s.pid:04d}" for s in train_rgb),
        text_path(TRAIN_TEXT, "IR"): fmt.string_array(s.description for s in train_ir),
        text_path(TRAIN_LLM_TEXT, "IR"): fmt.string_array(s.aug_description for s in train_ir),
        text_path(TRAIN_LABELS, "IR"): fmt.string_array(str(s.pid) for s in train_ir),
        text_path(ID_CAPTION_MAP, "RGB"): _id_caption_map(ordered(SYSU_RGB_CAMS, pids)),
        text_path(ID_CAPTION_MAP, "IR"): _id_caption_map(ordered(SYSU_IR_CAMS, pids)),
        text_path(CAPTION_DICT, "IR"): fmt.caption_dict(((s.relpath, s.description) for s in test_ir), prefix),
    }
    lists = {"exp/train_id.txt": _id_line(train), "exp/val_id.txt": _id_line(val),
             "exp/test_id.txt": _id_line(test)}
    summary = {
        "num_ids": len(pids), "num_classes": len(train_all), "train_pids": train,
        "val_pids": val, "test_pids": test,
        "counts": {"train_rgb": len(train_rgb), "train_ir": len(train_ir),
                   "test_rgb": len(test_rgb), "test_ir": len(test_ir)},
    }
    return Plan("sysu", o, people, tuple(shots), lists, text, summary)


def _json_text(shots: list[Shot], prefix: str, rgb_dir: str, ir_dir: str, rgb_map_order: list[Shot]) -> dict:
    """The Text/ files of the JSON-captioned layouts (RegDB, LLCM): per modality the caption and
    rephrase dicts keyed by prefix + each path under its folder (`rgb_dir`, `ir_dir`: twins
    elsewhere are left out), and the RGB id caption map of `rgb_map_order`."""
    dicts = {}
    for modality, tag, folder in (("rgb", "RGB", rgb_dir), ("ir", "IR", ir_dir)):
        items = [(path, s.description, s.aug_description) for s in shots if s.modality == modality
                 for path in (s.relpath, *s.twins) if path.startswith(folder)]
        dicts[tag] = fmt.caption_dict(((p, d) for p, d, _ in items), prefix), fmt.llm_dict(items, prefix)
    return {
        text_path(CAPTION_DICT, "RGB"): dicts["RGB"][0],
        text_path(LLM_DICT, "RGB"): dicts["RGB"][1],
        text_path(ID_CAPTION_MAP, "RGB"): _id_caption_map(rgb_map_order),
        text_path(CAPTION_DICT, "IR"): dicts["IR"][0],
        text_path(LLM_DICT, "IR"): dicts["IR"][1],
    }


def _plan_regdb(seed: int, o: dict) -> Plan:
    n = o["num_train_ids"] + o["num_test_ids"]
    pids = list(range(1, n + 1))
    people = sample_people(pids, seeds.rng(seed, "regdb", "people"))
    # The visible and thermal cameras are co-located and shoot at the same moment: one scene,
    # and image k of both modalities shares its view (pose and framing), not its noise.
    scene = sample_scene(seeds.rng(seed, "regdb", "scene"), indoor=False)
    k = o["images_per_id"]
    shots: list[Shot] = []
    for pid in pids:
        person = people[pid]
        gender = "male" if person.shape.gender == "man" else "female"
        for i in range(k):
            view = sample_view(seeds.rng(seed, "view", "regdb", pid, i), scene, REGDB_FACINGS)
            number = (pid - 1) * k + i + 1
            for cam, modality, folder, tag in ((1, "rgb", "Visible", "v"), (2, "ir", "Thermal", "t")):
                shot_view = dataclasses.replace(
                    view, noise_seed=int(seeds.rng(seed, "noise", "regdb", pid, i, cam).integers(2**31 - 1)))
                name = f"{gender}_{view.facing}_{tag}_{number:05d}_{pid}.bmp"
                shots.append(_shot(seed, "regdb", person, scene, cam, modality, i,
                                   f"{folder}/{pid}/{name}", view=shot_view))
    lists = {}
    trials = {}
    for t in range(1, o["num_trials"] + 1):
        train, test = _split(pids, seeds.rng(seed, "regdb", "trial", t), o["num_train_ids"])
        trials[t] = {"train_pids": train, "test_pids": test}
        for split, ids in (("train", train), ("test", test)):
            # Train labels must be 0..C-1; the test column is written the same way but the
            # folder id in the path is what identifies a test image (docs/original.md §5.1).
            label = {pid: j for j, pid in enumerate(ids)}
            for modality, name in (("rgb", "visible"), ("ir", "thermal")):
                rows = sorted((s.pid, s.relpath) for s in shots if s.modality == modality and s.pid in label)
                lists[f"idx/{split}_{name}_{t}.txt"] = "".join(f"{p} {label[pid]}\n" for pid, p in rows)
    rgb, ir = [s for s in shots if s.modality == "rgb"], [s for s in shots if s.modality == "ir"]
    text = _json_text(shots, o["key_prefix"], "Visible/", "Thermal/", rgb)
    summary = {"num_ids": n, "num_classes": o["num_train_ids"], "trials": trials,
               "counts": {"visible": len(rgb), "thermal": len(ir)}}
    return Plan("regdb", o, people, tuple(shots), lists, text, summary)


def _plan_llcm(seed: int, o: dict) -> Plan:
    n_train, n_test = o["num_train_ids"], o["num_test_ids"]
    pids = list(range(1, n_train + n_test + 1))
    people = sample_people(pids, seeds.rng(seed, "llcm", "people"))
    test, train = _split(pids, seeds.rng(seed, "llcm", "split"), n_test)
    test_set = set(test)
    scene_rng = seeds.rng(seed, "llcm", "indoor")
    indoor = {c: bool(scene_rng.random() < 0.5) for c in LLCM_VIS_CAMS}
    # A camera films both by day (visible) and by night (near-infrared): one scene each.
    scenes = {c: sample_scene(seeds.rng(seed, "llcm", "scene", c), indoor[c]) for c in LLCM_VIS_CAMS}
    shots: list[Shot] = []
    for pid in pids:
        rng = seeds.rng(seed, "llcm", "cams", pid)
        # Two visible cameras at least, so that removing the query's own camera (eval_llcm)
        # always leaves a visible match.
        vis = _present(rng, LLCM_VIS_CAMS, 0.35, LLCM_VIS_CAMS, at_least=2)
        nir = _present(rng, LLCM_NIR_CAMS, 0.3, LLCM_NIR_CAMS, at_least=1)
        for modality, cams, tag, folder in (("rgb", vis, "vis", "vis"), ("ir", nir, "nir", "nir")):
            for cam in cams:
                for i in range(1, o["images_per_cam"] + 1):
                    name = f"{pid:04d}_c{cam:02d}_s{i:03d}_{tag}.jpg"
                    flat = f"{folder}/{pid:04d}/{name}"
                    if pid in test_set:
                        # Test images also live in the flat folder (docs/original.md §5.1 "twins").
                        path, twins = f"test_{folder}/cam{cam}/{pid:04d}/{name}", (flat,)
                    else:
                        path, twins = flat, ()
                    shots.append(_shot(seed, "llcm", people[pid], scenes[cam], cam, modality, i,
                                       path, twins=twins))
    label = {pid: j for j, pid in enumerate(train)}
    lists = {"idx/test_id.txt": _id_line(test)}
    for modality, name in (("rgb", "vis"), ("ir", "nir")):
        rows = sorted((s.pid, s.relpath) for s in shots if s.modality == modality and s.pid in label)
        lists[f"idx/train_{name}.txt"] = "".join(f"{p} {label[pid]}\n" for pid, p in rows)
    rgb = sorted((s for s in shots if s.modality == "rgb"), key=lambda s: s.relpath)
    text = _json_text(shots, o["key_prefix"], "vis/", "nir/", rgb)

    def count(modality: str, ids: set[int]) -> int:
        return sum(s.modality == modality and s.pid in ids for s in shots)

    summary = {
        "num_ids": len(pids), "num_classes": len(train), "train_pids": train, "test_pids": test,
        "counts": {"train_vis": count("rgb", set(train)), "train_nir": count("ir", set(train)),
                   "test_vis": count("rgb", test_set), "test_nir": count("ir", test_set)},
    }
    return Plan("llcm", o, people, tuple(shots), lists, text, summary)


_PLANNERS = {"sysu": _plan_sysu, "regdb": _plan_regdb, "llcm": _plan_llcm}


def plan_tree(layout: str, seed: int = 0, **sizes) -> Plan:
    """Decides the whole dataset for `layout` without writing anything (see module docstring)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    options = _options(layout, sizes)
    return _PLANNERS[layout](int(seed), options)


def _encode(image: np.ndarray, relpath: str) -> bytes:
    buf = io.BytesIO()
    if relpath.endswith(".jpg"):
        Image.fromarray(image).save(buf, format="JPEG", quality=95)
    else:
        Image.fromarray(image).save(buf, format="BMP")
    return buf.getvalue()


def _write_bytes(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_tree(root: str | os.PathLike, layout: str, seed: int = 0, **sizes) -> dict:
    """Writes a synthetic `layout` dataset under `root` and returns a summary dict.

    `root` must not exist or be empty. The summary holds `layout`, `root`, `seed`, `options`
    (the resolved size knobs), `num_ids`, `num_classes`, the id splits (`train_pids`,
    `val_pids`, `test_pids` or, for RegDB, `trials[t]`), `counts` of images per split and
    modality, and `num_files` (image files written, LLCM twins included).
    """
    plan = plan_tree(layout, seed, **sizes)
    root = os.fspath(root)
    if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
        raise FileExistsError(f"write_tree needs an empty or missing directory, {root!r} is not")
    size = plan.options["image_size"]
    num_files = 0
    for shot in plan.shots:
        data = _encode(render(plan.people[shot.pid], shot.scene, shot.view, shot.modality, size),
                       shot.relpath)
        for path in (shot.relpath, *shot.twins):
            _write_bytes(os.path.join(root, path), data)
            num_files += 1
    for relpath, content in plan.lists.items():
        _write_bytes(os.path.join(root, relpath), content.encode("utf-8"))
    fmt.write_files(root, plan.text, indent=2)
    return {"layout": layout, "root": root, "seed": int(seed), "options": dict(plan.options),
            "num_files": num_files, **plan.summary}
