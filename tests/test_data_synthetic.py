"""The synthetic tri-modal dataset: real on-disk layouts (docs/original.md §5.1-5.3, §9), captions that agree
with the drawn people, infrared that hides colour, determinism per seed."""

from __future__ import annotations

import dataclasses
import filecmp
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from tvilfm_jax.data.synthetic import (
    cameras,
    people,
    plan_tree,
    render,
    seeds,
    write_tree,
)

TINY = {
    "sysu": {"num_train_ids": 4, "num_test_ids": 3, "images_per_cam": 2},
    "regdb": {"num_train_ids": 3, "num_test_ids": 3, "images_per_id": 3},
    "llcm": {"num_train_ids": 4, "num_test_ids": 3, "images_per_cam": 2},
}
# Kept independent of the package's own list so that a word missing there is still caught.
COLOUR_WORDS = ("black", "white", "grey", "gray", "red", "blue", "green", "yellow", "pink",
                "purple", "orange", "brown", "blonde", "dark", "light", "navy", "beige", "khaki",
                "golden", "silver", "colored", "coloured")
COLOUR_RE = re.compile(r"\b(" + "|".join(COLOUR_WORDS) + r")\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    out = {}
    for layout, sizes in TINY.items():
        root = tmp_path_factory.mktemp(layout)
        out[layout] = (root, write_tree(root, layout, seed=0, **sizes))
    return out


def files_under(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                  for d, _, fs in os.walk(root) for f in fs)


def load_json(root, rel):
    with open(os.path.join(root, rel), encoding="utf-8") as f:
        return json.load(f)


def read_lines(path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def read_ids(path) -> list[int]:
    lines = read_lines(path)
    assert len(lines) == 1, f"{path}: expected one line, got {lines}"
    return [int(x) for x in lines[0].split(",")]


def read_idx(path) -> list[tuple[str, int]]:
    rows = [line.split(" ") for line in read_lines(path)]
    assert all(len(r) == 2 for r in rows), path
    return [(p, int(label)) for p, label in rows]


def check_image(path, size):
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == (size[1], size[0]), (path, im.mode, im.size)


# ------------------------------------------------------------------------------------ SYSU


def test_sysu_layout_and_splits(trees):
    root, summary = trees["sysu"]
    files = files_under(root)
    images = [f for f in files if f.startswith("cam")]
    assert all(re.fullmatch(r"cam[1-6]/\d{4}/\d{4}\.jpg", f) for f in images)
    assert len(images) == summary["num_files"] == sum(summary["counts"].values())
    train, val, test = (read_ids(root / "exp" / f"{s}_id.txt") for s in ("train", "val", "test"))
    assert (train, val, test) == (summary["train_pids"], summary["val_pids"], summary["test_pids"])
    assert len(train) + len(val) == 4 and len(test) == 3
    assert not (set(train) & set(val)) and not (set(train + val) & set(test))
    pids = {int(f.split("/")[1]) for f in images}
    assert pids == set(train + val + test)
    for pid in pids:  # every id has both modalities and a non-cam2 RGB camera
        cams = {int(f[3]) for f in images if int(f.split("/")[1]) == pid}
        assert cams & {1, 4, 5} and cams & {3, 6}, (pid, cams)
    assert sum(f[3] in "1245" and int(f[5:9]) in test for f in images) == summary["counts"]["test_rgb"]
    check_image(root / images[0], (288, 144))
    # docs/original.md §5.1: cam at -15, pid at -13..-9 of a runtime path.
    path = "datasets/sysu/" + images[0]
    assert path[-15] == images[0][3] and int(path[-13:-9]) == int(images[0][5:9])


def sysu_train_order(root, ids, cams):
    """docs/original.md §5.2, rebuilt from the listing: ids sorted as padded strings, cams in order,
    files sorted."""
    out = []
    for pid in sorted(f"{p:04d}" for p in ids):
        for cam in cams:
            folder = root / f"cam{cam}" / pid
            if folder.is_dir():
                out += [(f"cam{cam}/{pid}/{f}", int(pid)) for f in sorted(os.listdir(folder))]
    return out


def test_sysu_text_arrays_follow_preprocessing_order(trees):
    root, summary = trees["sysu"]
    plan = {s.relpath: s for s in plan_tree("sysu", 0, **TINY["sysu"]).shots}
    ids = summary["train_pids"] + summary["val_pids"]
    text = root / "Text"
    for modality, cams, pad in (("RGB", (1, 2, 4, 5), 4), ("IR", (3, 6), 0)):
        order = sysu_train_order(root, ids, cams)
        arrays = {kind: np.load(text / f"Blip_{modality}" / f"train_{kind}_Blip_{modality}.npy",
                                allow_pickle=False)
                  for kind in ("text", "llm_text", "text_label")}
        for kind, arr in arrays.items():
            assert arr.shape == (len(order),) and arr.dtype.kind == "U", (modality, kind, arr.dtype)
        labels = [f"{pid:0{pad}d}" if pad else str(pid) for _, pid in order]
        assert arrays["text_label"].tolist() == labels
        assert arrays["text"].tolist() == [plan[p].description for p, _ in order]
        assert arrays["llm_text"].tolist() == [plan[p].aug_description for p, _ in order]
    assert np.load(text / "Blip_RGB/train_text_label_Blip_RGB.npy").dtype == np.dtype("<U4")


def test_sysu_caption_maps(trees):
    root, summary = trees["sysu"]
    plan = {s.relpath: s for s in plan_tree("sysu", 0, **TINY["sysu"]).shots}
    id_map = load_json(root, "Text/Blip_RGB/id_caption_map_Blip_RGB.json")
    all_ids = summary["train_pids"] + summary["val_pids"] + summary["test_pids"]
    assert set(id_map) == {str(p) for p in all_ids}  # test pids included
    for pid in all_ids:
        rgb = [p for p in plan if plan[p].pid == pid and plan[p].modality == "rgb"]
        assert sorted(id_map[str(pid)]) == sorted({plan[p].description for p in rgb})
        assert len(set(id_map[str(pid)])) == len(id_map[str(pid)])
    ir_dict = load_json(root, "Text/Blip_IR/caption_dict_Blip_IR.json")
    test_ir = [f for f in files_under(root) if f[:4] in ("cam3", "cam6")
               and int(f.split("/")[1]) in summary["test_pids"]]
    assert sorted(ir_dict) == sorted("datasets/sysu/" + f for f in test_ir)
    for key, value in ir_dict.items():
        assert value == {"description": plan[key[len("datasets/sysu/"):]].description}


# ----------------------------------------------------------------------------------- RegDB


def test_regdb_layout_and_idx_files(trees):
    root, summary = trees["regdb"]
    files = set(files_under(root))
    for folder, tag in (("Visible", "v"), ("Thermal", "t")):
        images = sorted(f for f in files if f.startswith(folder + "/"))
        assert len(images) == 6 * 3
        for f in images:
            pid = f.split("/")[1]
            assert re.fullmatch(rf"{folder}/{pid}/(male|female)_(front|back)_{tag}_\d{{5}}_{pid}\.bmp", f), f
        assert {int(f.split("/")[1]) for f in images} == set(range(1, 7))
        check_image(root / images[0], (128, 64))
    for t in range(1, 11):
        trial = summary["trials"][t]
        seen = {}
        for split in ("train", "test"):
            for name in ("visible", "thermal"):
                rows = read_idx(root / "idx" / f"{split}_{name}_{t}.txt")
                assert len(rows) == 3 * 3 and all(p in files for p, _ in rows)
                folder_ids = sorted({int(p.split("/")[1]) for p, _ in rows})
                assert folder_ids == trial[f"{split}_pids"]
                if split == "train":
                    assert sorted({label for _, label in rows}) == [0, 1, 2]
                    for p, label in rows:
                        assert seen.setdefault(int(p.split("/")[1]), label) == label
        assert not set(trial["train_pids"]) & set(trial["test_pids"])
    assert not (root / "idx" / "train_visible_11.txt").exists()


def check_caption_dicts(root, prefix, rgb_dir, ir_dir, id_of):
    """The RegDB-style Text/ set: keys prefix + every image path, formats as docs/original.md §9.1."""
    files = files_under(root)
    for mod, folder in (("RGB", rgb_dir), ("IR", ir_dir)):
        plain = load_json(root, f"Text/Blip_{mod}/caption_dict_Blip_{mod}.json")
        llm = load_json(root, f"Text/Blip_{mod}/caption_llm_dict_Blip_{mod}.json")
        expected = sorted(prefix + f for f in files if f.startswith(folder))
        assert sorted(plain) == sorted(llm) == expected
        for key in plain:
            assert set(plain[key]) == {"description"}
            assert set(llm[key]) == {"description", "aug_description"}
            assert llm[key]["description"] == plain[key]["description"]
            assert all(isinstance(v, str) and v for v in llm[key].values())
    rgb = load_json(root, "Text/Blip_RGB/caption_dict_Blip_RGB.json")
    id_map = load_json(root, "Text/Blip_RGB/id_caption_map_Blip_RGB.json")
    by_id = {}
    for key, value in rgb.items():
        by_id.setdefault(str(id_of(key)), set()).add(value["description"])
    assert set(id_map) == set(by_id)
    for pid, caps in id_map.items():
        assert len(caps) == len(set(caps)) and set(caps) == by_id[pid]


def test_regdb_text_files(trees):
    root, _ = trees["regdb"]
    check_caption_dicts(root, "datasets/regdb/", "Visible/", "Thermal/",
                        lambda key: int(key.split("/")[-2]))


def test_regdb_key_prefix_and_bad_prefix(tmp_path):
    prefix = "/data0/hzy_data/RegDB/"
    sizes = {"num_train_ids": 2, "num_test_ids": 1, "images_per_id": 1, "num_trials": 1,
             "key_prefix": prefix}
    summary = write_tree(tmp_path / "r", "regdb", **sizes)
    assert summary["counts"] == {"visible": 3, "thermal": 3}
    check_caption_dicts(tmp_path / "r", prefix, "Visible/", "Thermal/",
                        lambda key: int(key.split("/")[-2]))
    with pytest.raises(ValueError, match="key_prefix"):
        write_tree(tmp_path / "bad", "regdb", **{**sizes, "key_prefix": "datasets/regdb"})


# ------------------------------------------------------------------------------------ LLCM


def test_llcm_layout_twins_and_idx(trees):
    root, summary = trees["llcm"]
    files = files_under(root)
    test_ids = read_ids(root / "idx" / "test_id.txt")
    assert test_ids == summary["test_pids"] and len(test_ids) == 3
    for modality, cams in (("vis", range(1, 10)), ("nir", (1, 2, 4, 5, 6, 7, 8, 9))):
        test_files = [f for f in files if f.startswith(f"test_{modality}/")]
        assert test_files
        for f in test_files:
            m = re.fullmatch(rf"test_{modality}/cam(\d)/(\d{{4}})/(.+\.jpg)", f)
            assert m and int(m[1]) in cams and int(m[2]) in test_ids, f
            # docs/original.md §5.1 camera/pid parsing: split on "cam".
            after = ("datasets/llcm/" + f).split("cam")[1]
            assert int(after[0]) == int(m[1]) and int(after[2:6]) == int(m[2])
            twin = root / modality / m[2] / m[3]
            assert filecmp.cmp(root / f, twin, shallow=False), f
        counts = summary["counts"]
        assert len(test_files) == counts[f"test_{modality}"]
        rows = read_idx(root / "idx" / f"train_{modality}.txt")
        assert len(rows) == counts[f"train_{modality}"]
        assert all(p in files and p.startswith(f"{modality}/") for p, _ in rows)
        train_ids = sorted({int(p.split("/")[1]) for p, _ in rows})
        assert train_ids == summary["train_pids"] and not set(train_ids) & set(test_ids)
        assert {int(p.split("/")[1]): label for p, label in rows} == {
            pid: i for i, pid in enumerate(train_ids)}
        flat = [f for f in files if f.startswith(f"{modality}/")]
        assert len(flat) == len(rows) + len(test_files)
    for pid in test_ids:  # a visible match survives same-camera removal for every query
        vis_cams = {f.split("/")[1] for f in files if f.startswith("test_vis/") and f"/{pid:04d}/" in f}
        assert len(vis_cams) >= 2
    check_image(root / files[-1], (288, 144))


def test_llcm_text_files(trees):
    root, summary = trees["llcm"]
    check_caption_dicts(root, "datasets/llcm/", "vis/", "nir/",
                        lambda key: int(key.split("/")[-2]))
    ir = load_json(root, "Text/Blip_IR/caption_dict_Blip_IR.json")
    # The test code looks a query up by root + 'nir/<pid>/<file>'.
    for f in files_under(root):
        if f.startswith("test_nir/"):
            _, _, pid, name = f.split("/")
            assert f"datasets/llcm/nir/{pid}/{name}" in ir
    id_map = load_json(root, "Text/Blip_RGB/id_caption_map_Blip_RGB.json")
    assert set(map(str, summary["test_pids"])) <= set(id_map)


# ------------------------------------------------------------------------- captions, images


def all_texts(root, layout):
    """{modality: [(description, aug_description)]} read back from the written Text/ files."""
    if layout == "sysu":
        out = {}
        for mod in ("RGB", "IR"):
            d = np.load(root / f"Text/Blip_{mod}/train_text_Blip_{mod}.npy").tolist()
            a = np.load(root / f"Text/Blip_{mod}/train_llm_text_Blip_{mod}.npy").tolist()
            out[mod] = list(zip(d, a, strict=True))
        return out
    return {mod: [(v["description"], v["aug_description"]) for v in
                  load_json(root, f"Text/Blip_{mod}/caption_llm_dict_Blip_{mod}.json").values()]
            for mod in ("RGB", "IR")}


@pytest.mark.parametrize("layout", ["sysu", "regdb", "llcm"])
def test_colour_words_in_rgb_text_only(trees, layout):
    root, _ = trees[layout]
    texts = all_texts(root, layout)
    assert texts["RGB"] and texts["IR"]
    for description, _ in texts["RGB"]:
        assert COLOUR_RE.search(description), description
    for description, aug in texts["IR"]:
        assert not COLOUR_RE.search(description), description
        assert not COLOUR_RE.search(aug), aug
        assert re.search(r"\b(man|woman|lady|gentleman)\b", description + " " + aug)


def test_captions_agree_with_people_and_views():
    plan = plan_tree("sysu", 3, num_train_ids=12, num_test_ids=6, images_per_cam=3)
    rephrases = set()
    for shot in plan.shots:
        person = plan.people[shot.pid]
        text = shot.description
        assert text.startswith("a " + person.shape.gender + " ")
        if "backpack" in text:  # only its straps are drawn from the front
            assert person.shape.bag == "backpack" and shot.view.facing != "front"
        if "handbag" in text:
            assert person.shape.bag == "handbag"
        if person.shape.bag == "none":
            assert "bag" not in text
        if shot.modality == "rgb":
            named = {m.lower() for m in COLOUR_RE.findall(text)}
            assert named <= set(filter(None, person.colours())), (text, person)
            assert person.top_colour in named
        rephrases.add(shot.aug_description)
    assert len(rephrases) > 0.8 * len(plan.shots)  # paraphrases vary


def test_ir_hides_colour_differences_that_rgb_shows():
    """Two ids that differ only in colours: near-identical in IR, clearly apart in RGB."""
    group = people.sample_people(list(range(1, 31)), seeds.rng(7, "people"))
    by_shape = {}
    for p in group.values():
        by_shape.setdefault(p.shape, []).append(p)
    pairs = [(ps[0], ps[1]) for ps in by_shape.values() if len(ps) >= 2]
    assert len(pairs) >= 8  # identities do share shapes
    ratios = []
    for i, (a, b) in enumerate(pairs):
        assert a.colours() != b.colours()
        scene = cameras.sample_scene(seeds.rng(7, "scene", i), indoor=bool(i % 2))
        view = cameras.sample_view(seeds.rng(7, "view", i), scene)
        diff = {}
        for modality in ("rgb", "ir"):
            x, y = (render.render(p, scene, view, modality, (288, 144)).astype(np.float32)
                    for p in (a, b))
            diff[modality] = np.abs(x - y).mean()
        assert diff["ir"] < 0.5 * diff["rgb"], (a, b, diff)
        ratios.append(diff["ir"] / diff["rgb"])
    assert np.mean(ratios) < 0.2


def test_rendered_parts_have_the_person_colours():
    person = people.sample_people([1], seeds.rng(0, "people"))[1]
    scene = cameras.sample_scene(seeds.rng(0, "scene"), indoor=True)
    view = dataclasses.replace(cameras.sample_view(seeds.rng(0, "view"), scene, ("front",)),
                               light=1.0, tint=(1.0, 1.0, 1.0), noise=0.0)
    labels = render.draw_labels(person, view, (288, 144))
    rgb = render.render(person, scene, view, "rgb", (288, 144)).astype(np.float32)
    ir = render.render(person, scene, view, "ir", (288, 144))
    for label, name in ((render.TOP, person.top_colour), (render.BOTTOM, person.bottom_colour)):
        mask = labels == label
        assert mask.sum() > 200
        got = np.median(rgb[mask], axis=0)
        want = np.array(people.COLOURS[name], np.float32)
        # Shading darkens by up to 22 %; the hue must be the attribute's colour.
        cos = got @ want / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-6)
        assert cos > 0.98 and 0.7 * want.sum() <= got.sum() <= 1.05 * want.sum() + 3, (name, got)
    assert (ir[..., 0] == ir[..., 1]).all() and (ir[..., 1] == ir[..., 2]).all()
    assert np.median(ir[labels == render.SKIN][:, 0]) > np.median(ir[labels == render.TOP][:, 0])


# ------------------------------------------------------------------ determinism, bad input


def test_same_seed_same_bytes_other_seed_other_data(trees, tmp_path):
    root, summary = trees["sysu"]
    again = write_tree(tmp_path / "same", "sysu", seed=0, **TINY["sysu"])
    assert again["counts"] == summary["counts"]
    names = files_under(root)
    assert names == files_under(tmp_path / "same")
    for f in names:
        assert filecmp.cmp(root / f, tmp_path / "same" / f, shallow=False), f
    write_tree(tmp_path / "other", "sysu", seed=1, **TINY["sysu"])
    other = tmp_path / "other"
    a = np.load(root / "Text/Blip_RGB/train_text_Blip_RGB.npy")
    b = np.load(other / "Text/Blip_RGB/train_text_Blip_RGB.npy")
    assert a.tolist() != b.tolist()
    common = set(names) & set(files_under(other))
    jpgs = [f for f in common if f.endswith(".jpg")]
    assert jpgs and not any(filecmp.cmp(root / f, other / f, shallow=False) for f in jpgs)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        write_tree(tmp_path / "a", "market1501")
    with pytest.raises(TypeError, match="images_per_id"):
        write_tree(tmp_path / "b", "sysu", images_per_id=3)
    with pytest.raises(ValueError, match="images_per_cam"):
        write_tree(tmp_path / "c", "llcm", images_per_cam=0)
    with pytest.raises(ValueError, match="num_val_ids"):
        write_tree(tmp_path / "d", "sysu", num_train_ids=3, num_val_ids=3)
    with pytest.raises(ValueError, match="image_size"):
        write_tree(tmp_path / "e", "sysu", image_size=(10, 5))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="full"):
        write_tree(tmp_path / "full", "regdb", num_train_ids=1, num_test_ids=1, images_per_id=1)
