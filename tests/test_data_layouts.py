"""Layout readers and validation on tiny fixture trees of the three datasets (docs/original.md §5, §9).

The trees are built here, file by file, from the formats docs/original.md §5.1-5.3 and §9 describe; each
caption names its image so that alignment can be checked.
"""

import json
import random
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from tvilfm_jax.data import images as image_io
from tvilfm_jax.data import protocols
from tvilfm_jax.data.synthetic.trees import plan_tree, write_tree
from tvilfm_jax.data.layouts import (
    DatasetCountWarning,
    DatasetError,
    SkippedImagesWarning,
    read_layout,
    read_llcm,
    read_regdb,
    read_sysu,
    relative_key,
)

REAL_PREFIXES = {
    "sysu": ["datasets/sysu/", "/data0/hzy_data/cam_archive/SYSU-MM01/"],
    "regdb": ["datasets/regdb/", "/data0/hzy_data/RegDB/"],
    "llcm": ["datasets/llcm/", "/data0/hzy_data/LLCM/"],
}


def _image(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(12, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _rgb_caption(path):
    return f"a person in a red coat at {path}"


def _ir_caption(path):
    return f"a person walking at {path}"


def _rephrase(caption):
    return f"rephrased: {caption}"


# --- fixture trees --------------------------------------------------------------------------


def make_sysu(root, prefix="datasets/sysu/"):
    """Train ids 1, 2 (train_id) + 3 (val_id), test ids 4, 5; 2-3 images per folder."""
    (root / "exp").mkdir(parents=True)
    (root / "exp" / "train_id.txt").write_text("2,1\n")
    (root / "exp" / "val_id.txt").write_text("3\n")
    (root / "exp" / "test_id.txt").write_text("5,4\n")
    absent = {(2, 4), (3, 6), (5, 5), (5, 6)}
    for pid in (1, 2, 3, 4, 5):
        for cam in range(1, 7):
            if (pid, cam) in absent:
                continue
            for n in (7, 2, 11)[: 2 + (pid + cam) % 2]:
                _image(root / f"cam{cam}" / f"{pid:04d}" / f"{n:04d}.jpg", seed=pid * 100 + cam * 10 + n)
    # The caption arrays follow the pre-processing order, spelled out here independently:
    # ids sorted, cameras in order, files sorted.
    order = {"RGB": [], "IR": []}
    for pid in (1, 2, 3):
        for modality, cams in (("RGB", (1, 2, 4, 5)), ("IR", (3, 6))):
            for cam in cams:
                folder = root / f"cam{cam}" / f"{pid:04d}"
                if folder.is_dir():
                    order[modality] += [(pid, f"cam{cam}/{pid:04d}/{f.name}") for f in sorted(folder.iterdir())]
    for modality, entries in order.items():
        text = root / "Text" / f"Blip_{modality}"
        text.mkdir(parents=True)
        caption = _rgb_caption if modality == "RGB" else _ir_caption
        np.save(text / f"train_text_Blip_{modality}.npy", np.array([caption(p) for _, p in entries]))
        np.save(text / f"train_llm_text_Blip_{modality}.npy", np.array([_rephrase(caption(p)) for _, p in entries]))
        width = 4 if modality == "RGB" else 1  # released RGB labels are zero-padded, IR ones not
        np.save(text / f"train_text_label_Blip_{modality}.npy", np.array([f"{pid:0{width}d}" for pid, _ in entries]))
    test_ir = sorted(p.relative_to(root).as_posix() for cam in (3, 6) for pid in (4, 5) for p in (root / f"cam{cam}" / f"{pid:04d}").glob("*.jpg"))
    _json(root / "Text/Blip_IR/caption_dict_Blip_IR.json", {prefix + p: {"description": _ir_caption(p)} for p in test_ir})
    _json(root / "Text/Blip_RGB/id_caption_map_Blip_RGB.json", {str(pid): [f"id {pid} caption {k}" for k in range(3)] for pid in range(1, 6)})
    return root


def make_regdb(root, prefix="datasets/regdb/"):
    """Folder ids 1..6 with 3 images per modality; trial 1 trains on 5, 2, 3 and tests on 1, 4, 6."""
    images = {}
    for pid in range(1, 7):
        for modality, letter in (("Visible", "v"), ("Thermal", "t")):
            names = [f"{modality}/{pid}/female_back_{letter}_{pid * 10 + n:05d}_{pid}.bmp" for n in range(3)]
            for i, name in enumerate(names):
                _image(root / name, seed=pid * 7 + i)
            images[modality, pid] = names
    (root / "idx").mkdir()
    train = [5, 2, 3]  # labels 0, 1, 2 in this order
    test = [4, 1, 6]
    for modality, short in (("Visible", "visible"), ("Thermal", "thermal")):
        lines = [f"{p} {label}" for label, pid in enumerate(train) for p in images[modality, pid]]
        (root / "idx" / f"train_{short}_1.txt").write_text("\n".join(lines) + "\n")
        # The label column of the test files is not the folder id; the reader must not use it.
        lines = [f"{p} {label}" for label, pid in enumerate(test) for p in images[modality, pid]]
        (root / "idx" / f"test_{short}_1.txt").write_text("\n".join(lines) + "\n")
    rgb = {prefix + p: {"description": _rgb_caption(p), "aug_description": _rephrase(_rgb_caption(p))} for pid in range(1, 7) for p in images["Visible", pid]}
    ir = {prefix + p: {"description": _ir_caption(p), "aug_description": _rephrase(_ir_caption(p))} for pid in range(1, 7) for p in images["Thermal", pid]}
    _json(root / "Text/Blip_RGB/caption_llm_dict_Blip_RGB.json", rgb)
    _json(root / "Text/Blip_IR/caption_llm_dict_Blip_IR.json", ir)
    _json(root / "Text/Blip_IR/caption_dict_Blip_IR.json", {k: {"description": v["description"]} for k, v in ir.items()})
    _json(root / "Text/Blip_RGB/id_caption_map_Blip_RGB.json", {str(pid): sorted({rgb[prefix + p]["description"] for p in images["Visible", pid]}) for pid in range(1, 7)})
    return root


def make_llcm(root, prefix="datasets/llcm/"):
    """Train ids 1-3 (labels 0-2), test ids 4-5; test_nir files have nir/<pid>/ twins."""
    train_lines = {"vis": [], "nir": []}
    for pid in (1, 2, 3):
        for modality, kind in (("vis", "vis"), ("nir", "nir")):
            for cam in (1, 2) if modality == "vis" else (4,):
                name = f"{modality}/{pid:04d}/{pid:04d}_c{cam:02d}_s1234{pid}_f{cam}00_{kind}.jpg"
                _image(root / name, seed=pid + cam)
                train_lines[modality].append(f"{name} {pid - 1}")
    (root / "idx").mkdir()
    for modality, lines in train_lines.items():
        (root / "idx" / f"train_{modality}.txt").write_text("\n".join(lines) + "\n")
    (root / "idx" / "test_id.txt").write_text("5,4")
    test_nir = []
    for pid in (4, 5):
        for cam in (1, 2, 3):
            for n in (1, 2):
                _image(root / f"test_vis/cam{cam}/{pid:04d}/{pid:04d}_c{cam:02d}_s9{n}_f1_vis.jpg", seed=pid * cam + n)
        for cam in (1, 4):
            name = f"{pid:04d}_c{cam:02d}_s8{cam}_f2_nir.jpg"
            _image(root / f"test_nir/cam{cam}/{pid:04d}/{name}", seed=pid * 3 + cam)
            shutil.copy(root / f"test_nir/cam{cam}/{pid:04d}/{name}", _mkparent(root / f"nir/{pid:04d}/{name}"))
            test_nir.append(f"nir/{pid:04d}/{name}")
    train_vis = [line.split()[0] for line in train_lines["vis"]]
    train_nir = [line.split()[0] for line in train_lines["nir"]]
    pair = lambda c: {"description": c, "aug_description": _rephrase(c)}  # noqa: E731
    _json(root / "Text/Blip_RGB/caption_llm_dict_Blip_RGB.json", {prefix + p: pair(_rgb_caption(p)) for p in train_vis})
    _json(root / "Text/Blip_IR/caption_llm_dict_Blip_IR.json", {prefix + p: pair(_ir_caption(p)) for p in train_nir})
    _json(root / "Text/Blip_IR/caption_dict_Blip_IR.json", {prefix + p: {"description": _ir_caption(p)} for p in train_nir + test_nir})
    _json(root / "Text/Blip_RGB/id_caption_map_Blip_RGB.json", {str(pid): [f"id {pid} caption"] for pid in range(1, 6)})
    return root


def _mkparent(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


MAKERS = {"sysu": make_sysu, "regdb": make_regdb, "llcm": make_llcm}


def read(root, layout, **kwargs):
    kwargs.setdefault("synthetic", True)
    if layout == "regdb":
        kwargs.setdefault("trial", 1)
    return read_layout(root, layout, **kwargs)


def expect_error(root, layout, *fragments, **kwargs):
    """Reads, expects one DatasetError, and checks every fragment appears in its message."""
    with pytest.raises(DatasetError) as info:
        read(root, layout, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    return info.value


# --- readers on valid trees -----------------------------------------------------------------


@pytest.mark.parametrize("prefix", REAL_PREFIXES["sysu"])
def test_sysu_records(tmp_path, prefix):
    root = make_sysu(tmp_path / "sysu", prefix)
    index = read_sysu(root, synthetic=True)
    assert index.num_classes == 3 and index.trial is None and index.captioner == "Blip"
    # pre-processing order: ids sorted, cameras in order, files sorted
    want_rgb = [
        f"cam{c}/{pid:04d}/{f.name}"
        for pid in (1, 2, 3)
        for c in (1, 2, 4, 5)
        if (root / f"cam{c}" / f"{pid:04d}").is_dir()
        for f in sorted((root / f"cam{c}" / f"{pid:04d}").iterdir())
    ]
    assert [r.path for r in index.train_rgb] == want_rgb
    assert len(index.train_rgb) == 28 and len(index.train_ir) == 12
    for records, cams in ((index.train_rgb, {1, 2, 4, 5}), (index.train_ir, {3, 6})):
        assert {r.cam for r in records} == cams
        assert all(r.label == r.pid - 1 and int(r.path.split("/")[1]) == r.pid for r in records)
    assert all(r.caption == _rgb_caption(r.path) and r.llm_caption == _rephrase(r.caption) for r in index.train_rgb)
    assert all(r.caption == _ir_caption(r.path) and r.llm_caption == _rephrase(r.caption) for r in index.train_ir)
    assert [(q.path, q.pid, q.cam) for q in index.query] == protocols.sysu_query(root)
    assert {q.cam for q in index.query} == {3, 6} and {q.pid for q in index.query} == {4, 5}
    assert all(q.ir_caption == _ir_caption(q.path) for q in index.query)
    assert index.id_caption_map["4"] == ("id 4 caption 0", "id 4 caption 1", "id 4 caption 2")
    for mode in ("all", "indoor"):
        assert index.galleries[mode].trials == tuple(range(10))
        for t in range(10):
            assert index.galleries[mode].gallery(t) == protocols.sysu_gallery(root, t, mode)
    assert 2 in {g.cam for g in index.galleries["all"].records}


@pytest.mark.parametrize("prefix", REAL_PREFIXES["regdb"])
def test_regdb_records(tmp_path, prefix):
    root = make_regdb(tmp_path / "regdb", prefix)
    index = read_regdb(root, 1, synthetic=True)
    assert index.num_classes == 3 and index.trial == 1
    assert [r.pid for r in index.train_rgb] == [5] * 3 + [2] * 3 + [3] * 3  # split-file order
    assert [r.label for r in index.train_ir] == [0] * 3 + [1] * 3 + [2] * 3
    assert {r.cam for r in index.train_rgb} == {2} and {r.cam for r in index.train_ir} == {1}
    assert all(r.path.startswith(f"Visible/{r.pid}/") and r.caption == _rgb_caption(r.path) for r in index.train_rgb)
    assert all(r.llm_caption == _rephrase(_ir_caption(r.path)) for r in index.train_ir)
    split = protocols.regdb_split(root, 1)
    assert [(q.path, q.pid, q.cam) for q in index.query] == split.query
    assert [q.pid for q in index.query] == [4] * 3 + [1] * 3 + [6] * 3  # folder ids, not the label column
    assert all(q.cam == 1 and q.ir_caption == _ir_caption(q.path) for q in index.query)
    assert index.galleries["all"].gallery(1) == split.gallery and {g.cam for g in split.gallery} == {2}
    assert set(index.id_caption_map) == {str(p) for p in range(1, 7)}


@pytest.mark.parametrize("prefix", REAL_PREFIXES["llcm"])
def test_llcm_records(tmp_path, prefix):
    root = make_llcm(tmp_path / "llcm", prefix)
    index = read_llcm(root, synthetic=True)
    assert index.num_classes == 3
    assert [(r.pid, r.label, r.cam) for r in index.train_rgb] == [(1, 0, 1), (1, 0, 2), (2, 1, 1), (2, 1, 2), (3, 2, 1), (3, 2, 2)]
    assert [(r.pid, r.cam) for r in index.train_ir] == [(1, 4), (2, 4), (3, 4)]
    assert all(r.caption == _rgb_caption(r.path) for r in index.train_rgb)
    assert all(r.llm_caption == _rephrase(_ir_caption(r.path)) for r in index.train_ir)
    assert [(q.path, q.pid, q.cam) for q in index.query] == protocols.llcm_query(root)
    # the filter text of a test_nir query is its nir/ twin's caption
    for q in index.query:
        twin = "nir/" + "/".join(q.path.split("/")[2:])
        assert q.ir_caption == _ir_caption(twin)
    assert len(index.query) == 4 and {q.cam for q in index.query} == {1, 4}
    assert all(index.galleries["all"].gallery(t) == protocols.llcm_gallery(root, t) for t in range(10))
    assert len(index.galleries["all"].gallery(0)) == 6  # 2 ids x 3 cameras


SYNTHETIC_SIZES = {
    "sysu": dict(num_train_ids=4, num_test_ids=3, images_per_cam=2, image_size=(64, 32)),
    "regdb": dict(num_train_ids=3, num_test_ids=3, images_per_id=2, num_trials=2, image_size=(64, 32)),
    "llcm": dict(num_train_ids=4, num_test_ids=3, images_per_cam=2, image_size=(64, 32)),
}


@pytest.mark.parametrize(
    "layout, prefix",
    [("sysu", "/data0/hzy_data/cam_archive/SYSU-MM01/"), ("regdb", "datasets/regdb/"), ("llcm", "/data0/hzy_data/LLCM/")],
)
def test_synthetic_write_tree_reads_back(tmp_path, layout, prefix):
    """The contract with the synthetic writer: its trees validate and read back aligned."""
    sizes = dict(SYNTHETIC_SIZES[layout], key_prefix=prefix)
    summary = write_tree(tmp_path / layout, layout, seed=3, **sizes)
    plan = plan_tree(layout, seed=3, **sizes)
    shots = {path: shot for shot in plan.shots for path in (shot.relpath, *shot.twins)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # synthetic=True: no count warning, nothing skipped
        indexes = [read(tmp_path / layout, layout, trial=t, images="decode") for t in ((1, 2) if layout == "regdb" else (None,))]
    for index in indexes:
        assert index.num_classes == summary["num_classes"]
        for record in index.train_rgb + index.train_ir:
            assert (record.caption, record.llm_caption) == (shots[record.path].description, shots[record.path].aug_description)
        assert all(q.ir_caption == shots[q.path].description for q in index.query)
        assert index.id_caption_map == {k: tuple(v) for k, v in plan.text["Text/Blip_RGB/id_caption_map_Blip_RGB.json"].items()}
    counts = indexes[0].counts()
    if layout == "sysu":
        want = summary["counts"]
        assert (counts["train_rgb"], counts["train_ir"], counts["query"]) == (want["train_rgb"], want["train_ir"], want["test_ir"])
    elif layout == "llcm":
        want = summary["counts"]
        assert (counts["train_rgb"], counts["train_ir"], counts["query"]) == (want["train_vis"], want["train_nir"], want["test_nir"])
    else:
        for t, index in zip((1, 2), indexes):
            assert sorted({r.pid for r in index.train_rgb}) == summary["trials"][t]["train_pids"]
            assert sorted({q.pid for q in index.query}) == summary["trials"][t]["test_pids"]
        assert counts["train_rgb"] == counts["query"] == 3 * 2


@pytest.mark.parametrize("layout", ["sysu", "regdb", "llcm"])
def test_without_text_needs_no_text_folder(tmp_path, layout):
    root = MAKERS[layout](tmp_path / layout)
    shutil.rmtree(root / "Text")
    index = read(root, layout, with_text=False)
    assert index.captioner is None and index.id_caption_map is None
    assert all(r.caption is None and r.llm_caption is None for r in index.train_rgb + index.train_ir)
    assert all(q.ir_caption is None for q in index.query)
    assert index.gallery_captions == {} and index.gallery_caption_files == ()
    expect_error(root, layout, "missing text files", "Text/Blip_RGB/")


# --- gallery images' own RGB captions ---------------------------------------------------------


def _gallery_paths(index):
    return sorted({g.path for gs in index.galleries.values() for g in gs.records})


def test_regdb_gallery_captions_from_both_rgb_files(tmp_path):
    root = make_regdb(tmp_path / "regdb")
    llm_name = "Text/Blip_RGB/caption_llm_dict_Blip_RGB.json"
    index = read(root, "regdb")
    gallery = _gallery_paths(index)
    assert len(gallery) == 9 and all(p.startswith(("Visible/4/", "Visible/1/", "Visible/6/")) for p in gallery)
    assert index.gallery_captions == {p: _rgb_caption(p) for p in gallery}
    assert index.gallery_caption_files == (llm_name,)
    # The plain caption_dict (shipped with the release) fills images the llm dict lacks.
    llm = json.loads((root / llm_name).read_text())
    gone = gallery[0]
    del llm["datasets/regdb/" + gone]
    (root / llm_name).write_text(json.dumps(llm))
    plain = {"/data0/RegDB/" + p: {"description": _rgb_caption(p)} for p in gallery}
    _json(root / "Text/Blip_RGB/caption_dict_Blip_RGB.json", plain)
    index = read(root, "regdb")
    assert index.gallery_captions == {p: _rgb_caption(p) for p in gallery}
    assert index.gallery_caption_files == (llm_name, "Text/Blip_RGB/caption_dict_Blip_RGB.json")
    # ... but may not contradict it, and is checked like every Text/ file.
    plain["/data0/RegDB/" + gallery[1]] = {"description": "someone else"}
    plain["/data0/RegDB/Visible/4/ghost.bmp"] = {"description": "nobody"}
    _json(root / "Text/Blip_RGB/caption_dict_Blip_RGB.json", plain)
    expect_error(
        root, "regdb",
        f"Text/Blip_RGB/caption_dict_Blip_RGB.json: descriptions that differ from {llm_name} [1]: '{gallery[1]}'",
        "Text/Blip_RGB/caption_dict_Blip_RGB.json: captions without an image [1]: '/data0/RegDB/Visible/4/ghost.bmp'",
    )


def test_llcm_gallery_captions_at_vis_twins(tmp_path):
    root = make_llcm(tmp_path / "llcm")
    assert read(root, "llcm").gallery_captions == {}  # this tree's RGB file describes training images only
    llm_name = "Text/Blip_RGB/caption_llm_dict_Blip_RGB.json"
    llm = json.loads((root / llm_name).read_text())
    described = sorted(p.relative_to(root).as_posix() for p in (root / "test_vis").glob("cam*/0004/*.jpg"))
    for path in described:
        twin = "vis/" + "/".join(path.split("/")[2:])
        shutil.copy(root / path, _mkparent(root / twin))
        llm["datasets/llcm/" + twin] = {"description": f"own caption of {twin}", "aug_description": "x"}
    (root / llm_name).write_text(json.dumps(llm))
    index = read(root, "llcm")
    assert len(described) == 6 and set(described) < set(_gallery_paths(index))
    assert index.gallery_captions == {p: "own caption of vis/" + "/".join(p.split("/")[2:]) for p in described}
    assert index.gallery_caption_files == (llm_name,)


def test_sysu_gallery_captions_only_from_an_added_rgb_file(tmp_path):
    root = make_sysu(tmp_path / "sysu")
    index = read(root, "sysu")
    assert index.gallery_captions == {} and index.gallery_caption_files == ()  # the release has none
    gallery = _gallery_paths(index)
    some = gallery[::2]
    _json(root / "Text/Blip_RGB/caption_dict_Blip_RGB.json", {"datasets/sysu/" + p: {"description": f"own {p}"} for p in some})
    index = read(root, "sysu")
    assert index.gallery_captions == {p: f"own {p}" for p in some}
    assert index.gallery_caption_files == ("Text/Blip_RGB/caption_dict_Blip_RGB.json",)
    _json(root / "Text/Blip_RGB/caption_dict_Blip_RGB.json", {"datasets/sysu/cam1/0004/9999.jpg": {"description": "x"}})
    expect_error(root, "sysu", "caption_dict_Blip_RGB.json: captions without an image [1]: 'datasets/sysu/cam1/0004/9999.jpg'")


def test_skipped_gallery_image_loses_its_caption(tmp_path):
    root = make_regdb(tmp_path / "regdb")
    bad = "Visible/4/female_back_v_00041_4.bmp"
    (root / bad).write_bytes(b"this is not a bitmap")
    with pytest.warns(SkippedImagesWarning):
        index = read(root, "regdb", strict=False)
    assert bad not in index.gallery_captions and len(index.gallery_captions) == 8


def test_relative_key_strips_any_prefix():
    import re

    cam = re.compile(r"cam\d+")
    assert relative_key("/data0/cam2_backup/SYSU/cam3/0006/0001.jpg", cam) == "cam3/0006/0001.jpg"
    assert relative_key("datasets/sysu//cam3/0006/0001.jpg", cam) == "cam3/0006/0001.jpg"
    assert relative_key("C:\\data\\RegDB\\Visible\\1\\a.bmp", re.compile("Visible")) == "Visible/1/a.bmp"
    assert relative_key("datasets/llcm/test_nir/cam1/0001/a.jpg", re.compile("nir")) is None
    assert relative_key("datasets/regdb/visible/1/a.bmp", re.compile("Visible")) is None


# --- validation -----------------------------------------------------------------------------


def test_missing_image_named_in_split_file(tmp_path):
    root = make_regdb(tmp_path / "regdb")
    (root / "Visible/2/female_back_v_00021_2.bmp").unlink()
    err = expect_error(root, "regdb", "idx/train_visible_1.txt: names images that do not exist [1]", "line 5: Visible/2/female_back_v_00021_2.bmp")
    # its caption now has no image either: reported in the same error
    assert "caption_llm_dict_Blip_RGB.json: captions without an image [1]" in str(err)


@pytest.mark.parametrize("strict", [True, False])
def test_corrupt_image(tmp_path, strict):
    root = make_regdb(tmp_path / "regdb")
    bad = "Thermal/3/female_back_t_00030_3.bmp"
    (root / bad).write_bytes(b"this is not a bitmap")
    if strict:
        expect_error(root, "regdb", "unreadable or corrupt images (strict=False skips them) [1]", bad)
        return
    with pytest.warns(SkippedImagesWarning, match="skipped 1 unreadable"):
        index = read(root, "regdb", strict=False)
    assert index.skipped == (bad,)
    assert bad not in {r.path for r in index.train_ir} and len(index.train_ir) == 8


def test_truncated_image_needs_the_decode_pass(tmp_path):
    root = make_llcm(tmp_path / "llcm")
    path = root / "vis/0002/0002_c01_s12342_f100_vis.jpg"
    big = np.random.default_rng(0).integers(0, 256, size=(200, 100, 3), dtype=np.uint8)
    Image.fromarray(big).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    read(root, "llcm", images="header")  # the header check cannot see it
    expect_error(root, "llcm", "unreadable or corrupt images", "vis/0002/0002_c01_s12342_f100_vis.jpg", images="decode")


def test_image_without_caption_and_caption_without_image(tmp_path):
    root = make_regdb(tmp_path / "regdb")
    path = root / "Text/Blip_RGB/caption_llm_dict_Blip_RGB.json"
    captions = json.loads(path.read_text())
    del captions["datasets/regdb/Visible/3/female_back_v_00031_3.bmp"]
    captions["datasets/regdb/Visible/3/ghost.bmp"] = {"description": "x", "aug_description": "y"}
    path.write_text(json.dumps(captions))
    expect_error(
        root,
        "regdb",
        "Text/Blip_RGB/caption_llm_dict_Blip_RGB.json: training images without a caption [1]: Visible/3/female_back_v_00031_3.bmp",
        "Text/Blip_RGB/caption_llm_dict_Blip_RGB.json: captions without an image [1]: 'datasets/regdb/Visible/3/ghost.bmp'",
    )


def test_query_without_filter_caption_and_id_caption(tmp_path):
    root = make_llcm(tmp_path / "llcm")
    path = root / "Text/Blip_IR/caption_dict_Blip_IR.json"
    captions = json.loads(path.read_text())
    del captions["datasets/llcm/nir/0005/0005_c04_s84_f2_nir.jpg"]
    path.write_text(json.dumps(captions))
    _json(root / "Text/Blip_RGB/id_caption_map_Blip_RGB.json", {"4": ["only four"], "x": ["bad key"]})
    expect_error(
        root,
        "llcm",
        "query images (at their nir/ twin) without a caption [1]: nir/0005/0005_c04_s84_f2_nir.jpg",
        "test ids without identity captions [1]: 5",
        "keys that are not identity ids [1]: 'x'",
    )


@pytest.mark.parametrize("layout", ["sysu", "regdb", "llcm"])
def test_wrong_key_prefix_matches_nothing(tmp_path, layout):
    root = MAKERS[layout](tmp_path / layout, prefix="datasets/x/")
    name = {"sysu": "Text/Blip_IR/caption_dict_Blip_IR.json"}.get(layout, "Text/Blip_IR/caption_llm_dict_Blip_IR.json")
    path = root / name
    captions = json.loads(path.read_text())
    # keys without their modality folder: "datasets/x/0001/..." instead of "datasets/x/nir/0001/..."
    broken = {k.replace("cam3/", "").replace("cam6/", "").replace("Thermal/", "").replace("nir/", ""): v for k, v in captions.items()}
    path.write_text(json.dumps(broken))
    err = expect_error(root, layout, f"{name}: no key matches the layout (keys must end in", f"{len(broken)} keys, first 'datasets/x/")
    assert "without a caption" in str(err)


def test_truncated_sysu_caption_array_and_label_order(tmp_path):
    root = make_sysu(tmp_path / "sysu")
    text = root / "Text/Blip_RGB"
    np.save(text / "train_llm_text_Blip_RGB.npy", np.load(text / "train_llm_text_Blip_RGB.npy")[:-2])
    labels = np.load(text / "train_text_label_Blip_RGB.npy")
    np.save(text / "train_text_label_Blip_RGB.npy", labels[::-1])
    expect_error(
        root,
        "sysu",
        "caption arrays whose length differs from the image count [1]: Text/Blip_RGB/train_llm_text_Blip_RGB.npy has 26 entries but there are 28 RGB training images",
        "caption label arrays out of step with the image order [1]: Text/Blip_RGB/train_text_label_Blip_RGB.npy",
    )


def test_duplicates_and_split_overlap(tmp_path):
    root = make_sysu(tmp_path / "sysu")
    (root / "exp" / "val_id.txt").write_text("3,1,4")
    expect_error(root, "sysu", "exp/train_id.txt + exp/val_id.txt: repeated ids [1]: 1 x2", "ids in both the training and the test split [1]: 4")
    root = make_regdb(tmp_path / "regdb")
    split = root / "idx" / "train_thermal_1.txt"
    split.write_text(split.read_text() + split.read_text().splitlines()[0] + "\n")
    expect_error(root, "regdb", "idx/train_thermal_1.txt: images listed more than once [1]: 'Thermal/5/")


def _shift_labels(split, by):
    lines = [f"{p} {int(label) + by}" for p, label in (line.split() for line in split.read_text().splitlines())]
    split.write_text("\n".join(lines))


def test_labels_must_be_dense_and_shared(tmp_path):
    root = make_regdb(tmp_path / "regdb")
    for modality in ("visible", "thermal"):  # 1-based labels in both files
        _shift_labels(root / "idx" / f"train_{modality}_1.txt", 1)
    expect_error(root, "regdb", "training labels are not exactly 0..C-1 [1]: 3 distinct labels", "min 1, max 3; missing or out of range: [0]")
    _shift_labels(root / "idx" / "train_thermal_1.txt", -1)  # now the modalities disagree
    expect_error(
        root,
        "regdb",
        "labels shared by several identities [2]: label 1: ids [2, 5]",
        "identities with several labels",
        "labels in idx/train_visible_1.txt but not in idx/train_thermal_1.txt [1]: 3",
        "labels in idx/train_thermal_1.txt but not in idx/train_visible_1.txt [1]: 0",
    )


def test_missing_folders_and_split_files_all_in_one_error(tmp_path):
    root = make_llcm(tmp_path / "llcm")
    (root / "idx" / "train_nir.txt").unlink()
    shutil.rmtree(root / "test_vis")
    (root / "Text/Blip_RGB/id_caption_map_Blip_RGB.json").unlink()
    err = expect_error(root, "llcm", "missing folders [1]: test_vis/", "missing split files [1]: idx/train_nir.txt", "missing text files [1]: Text/Blip_RGB/id_caption_map_Blip_RGB.json")
    assert err.dataset == "LLCM" and err.problems["missing folders"][0] == 1
    with pytest.raises(DatasetError, match="is not a directory"):
        read_sysu(tmp_path / "nowhere")


def test_count_warning_for_real_data_only(tmp_path):
    root = make_sysu(tmp_path / "sysu")
    with pytest.warns(DatasetCountWarning, match=r"train_ids: 3 \(standard 395\).*query_ids: 2 \(standard 96\)"):
        read_sysu(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_sysu(root, synthetic=True)


def test_reader_leaves_global_random_alone(tmp_path):
    root = make_sysu(tmp_path / "sysu")
    random.seed(7)
    state = random.getstate()
    read_sysu(root, synthetic=True, images="exists")
    assert random.getstate() == state


def test_read_layout_arguments(tmp_path):
    with pytest.raises(ValueError, match="trial=1..10"):
        read_layout(tmp_path, "regdb")
    with pytest.raises(ValueError, match="RegDB splits only"):
        read_layout(tmp_path, "sysu", trial=1)
    with pytest.raises(ValueError, match="layout must be one of"):
        read_layout(tmp_path, "market")
    root = make_regdb(tmp_path / "regdb")
    with pytest.raises(ValueError, match="images must be one of"):
        read(root, "regdb", images="full")


# --- images ---------------------------------------------------------------------------------


def test_load_image_matches_pil_lanczos(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, size=(128, 64), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(tmp_path / "gray.bmp")  # a 1-channel thermal frame
    out = image_io.load_image(tmp_path / "gray.bmp")
    assert out.dtype == np.uint8 and out.shape == (288, 144, 3)
    want = np.asarray(Image.fromarray(pixels).convert("RGB").resize((144, 288), Image.LANCZOS))
    np.testing.assert_array_equal(out, want)
    assert image_io.probe_image(tmp_path / "gray.bmp") == (64, 128)


def test_load_image_errors_name_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(image_io.ImageReadError, match="broken.jpg"):
        image_io.load_image(tmp_path / "broken.jpg")
    with pytest.raises(image_io.ImageReadError, match="broken.jpg"):
        image_io.probe_image(tmp_path / "broken.jpg")
    with pytest.raises(image_io.ImageReadError, match="missing.png does not exist"):
        image_io.load_image(tmp_path / "missing.png")
