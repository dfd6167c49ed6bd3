"""TFDS builders (tfds_builders/): Python builds without TensorFlow, read back with data_source.

Every build is checked record by record against what the source tree says, read here straight
from its files (split files, folder walks, Text/ JSON and .npy), not through the layout reader
the builders use: order, pids, labels, cams, captions, rephrases, token ids and pixels.
"""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders import reid_builder, schema
from tfds_builders.llcm import llcm_dataset_builder
from tfds_builders.regdb import regdb_dataset_builder
from tfds_builders.synthetic import synthetic_dataset_builder
from tfds_builders.sysu_mm01 import sysu_mm01_dataset_builder
from tvilfm_jax.data import protocols
from tvilfm_jax.data.datasets import LAYOUTS
from tvilfm_jax.data.images import load_image
from tvilfm_jax.data.layouts import DatasetError, SkippedImagesWarning
from tvilfm_jax.data.synthetic import write_tree
from tvilfm_jax.data.tokenizer import tokenize

PREFIX = {"sysu": "datasets/sysu/", "regdb": "datasets/regdb/", "llcm": "datasets/llcm/"}
MANUAL = {
    "sysu": (sysu_mm01_dataset_builder.Builder, None),
    "regdb": (regdb_dataset_builder.Builder, "trial1"),
    "llcm": (llcm_dataset_builder.Builder, None),
}
TINY = {
    "sysu": {"num_train_ids": 4, "num_val_ids": 1, "num_test_ids": 3, "images_per_cam": 1, "image_size": (96, 48)},
    "regdb": {"num_train_ids": 3, "num_test_ids": 3, "images_per_id": 2, "num_trials": 1, "image_size": (96, 48)},
    "llcm": {"num_train_ids": 3, "num_test_ids": 3, "images_per_cam": 1, "image_size": (96, 48)},
}


# --- expected records, read straight from the source tree -------------------------------------


def _json(root, relative):
    return json.loads((root / relative).read_text(encoding="utf-8"))


def _files(folder):
    return sorted(f.name for f in folder.iterdir() if f.is_file()) if folder.is_dir() else []


def _ids(path):
    return [int(v) for v in path.read_text().strip().split(",")]


def _split_file(path):
    return [(line.split()[0], int(line.split()[1])) for line in path.read_text().splitlines() if line.strip()]


def _rec(path, pid, label, cam, caption, rephrase=""):
    return {"path": path, "pid": pid, "label": label, "cam": cam, "caption": caption, "rephrase": rephrase}


def expected_sysu(root):
    """docs/original.md §5.2 order; captions from the aligned .npy arrays; test captions keyed by prefix + path."""
    train_ids = sorted(_ids(root / "exp/train_id.txt") + _ids(root / "exp/val_id.txt"))
    test_ids = sorted(_ids(root / "exp/test_id.txt"))

    def walk(ids, cams):
        return [(f"cam{c}/{pid:04d}/{f}", pid, c) for pid in ids for c in cams for f in _files(root / f"cam{c}" / f"{pid:04d}")]

    rgb, ir = walk(train_ids, (1, 2, 4, 5)), walk(train_ids, (3, 6))
    label = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in ir}))}
    out = {}
    for split, entries, modality in (("train_rgb", rgb, "RGB"), ("train_ir", ir, "IR")):
        caps = np.load(root / f"Text/Blip_{modality}/train_text_Blip_{modality}.npy").tolist()
        reph = np.load(root / f"Text/Blip_{modality}/train_llm_text_Blip_{modality}.npy").tolist()
        assert len(caps) == len(entries) == len(reph)
        out[split] = [_rec(p, pid, label[pid], c, caps[i], reph[i]) for i, (p, pid, c) in enumerate(entries)]
    ir_text = _json(root, "Text/Blip_IR/caption_dict_Blip_IR.json")
    out["query"] = [_rec(p, pid, -1, c, ir_text[PREFIX["sysu"] + p]["description"]) for p, pid, c in walk(test_ids, (3, 6))]
    union = {g.path: g for mode in ("all", "indoor") for t in range(10) for g in protocols.sysu_gallery(root, t, mode)}
    out["gallery"] = [_rec(p, union[p].pid, -1, union[p].cam, "") for p in sorted(union)]
    galleries = {
        mode: {str(t): [g.path for g in protocols.sysu_gallery(root, t, mode)] for t in range(10)} for mode in ("all", "indoor")
    }
    return out, galleries


def expected_regdb(root, trial=1):
    """idx/ file order, train labels from the column, test pids from the folder, cams 2 (V) / 1 (T)."""
    rgb_text = _json(root, "Text/Blip_RGB/caption_llm_dict_Blip_RGB.json")
    ir_text = _json(root, "Text/Blip_IR/caption_llm_dict_Blip_IR.json")
    ir_filter = _json(root, "Text/Blip_IR/caption_dict_Blip_IR.json")

    def pid(path):
        return int(path.split("/")[1])

    def key(path):
        return PREFIX["regdb"] + path

    out = {}
    for split, name, text, cam in (("train_rgb", "visible", rgb_text, 2), ("train_ir", "thermal", ir_text, 1)):
        out[split] = [
            _rec(p, pid(p), lab, cam, text[key(p)]["description"], text[key(p)]["aug_description"])
            for p, lab in _split_file(root / f"idx/train_{name}_{trial}.txt")
        ]
    out["query"] = [_rec(p, pid(p), -1, 1, ir_filter[key(p)]["description"]) for p, _ in _split_file(root / f"idx/test_thermal_{trial}.txt")]
    gallery = [p for p, _ in _split_file(root / f"idx/test_visible_{trial}.txt")]
    out["gallery"] = [_rec(p, pid(p), -1, 2, rgb_text[key(p)]["description"]) for p in sorted(gallery)]
    return out, {"all": {str(trial): gallery}}


def expected_llcm(root):
    """idx/ order for training (camera from "_c<NN>_"); test_nir walk; captions at the flat twins."""
    rgb_text = _json(root, "Text/Blip_RGB/caption_llm_dict_Blip_RGB.json")
    ir_text = _json(root, "Text/Blip_IR/caption_llm_dict_Blip_IR.json")
    ir_filter = _json(root, "Text/Blip_IR/caption_dict_Blip_IR.json")

    def key(path):
        return PREFIX["llcm"] + path

    def twin(flat, path):  # test_<flat>/cam<c>/<pid>/<file> is keyed at <flat>/<pid>/<file>
        return PREFIX["llcm"] + "/".join([flat, *path.split("/")[2:]])

    def cam(path):  # "0001_c02_s200726_f5220_vis.jpg" -> 2
        return int(path.rsplit("/", 1)[1].split("_c")[1][:2])

    out = {}
    for split, name, text in (("train_rgb", "vis", rgb_text), ("train_ir", "nir", ir_text)):
        out[split] = [
            _rec(p, int(p.split("/")[1]), lab, cam(p), text[key(p)]["description"], text[key(p)]["aug_description"])
            for p, lab in _split_file(root / f"idx/train_{name}.txt")
        ]
    test_ids = sorted(_ids(root / "idx/test_id.txt"))
    query = [
        (f"test_nir/cam{c}/{pid:04d}/{f}", pid, c)
        for pid in test_ids for c in (1, 2, 4, 5, 6, 7, 8, 9) for f in _files(root / f"test_nir/cam{c}/{pid:04d}")
    ]
    out["query"] = [_rec(p, pid, -1, c, ir_filter[twin("nir", p)]["description"]) for p, pid, c in query]
    union = {g.path: g for t in range(10) for g in protocols.llcm_gallery(root, t)}
    out["gallery"] = [_rec(p, union[p].pid, -1, union[p].cam, rgb_text[twin("vis", p)]["description"]) for p in sorted(union)]
    return out, {"all": {str(t): [g.path for g in protocols.llcm_gallery(root, t)] for t in range(10)}}


EXPECTED = {"sysu": expected_sysu, "regdb": expected_regdb, "llcm": expected_llcm}


def check_build(data_dir, name, root, layout):
    """Compares every record of a prepared dataset with the source tree at `root`."""
    expected, galleries = EXPECTED[layout](root)
    sources = tfds.data_source(name, data_dir=data_dir)
    assert set(sources) == set(schema.SPLITS)
    for split in schema.SPLITS:
        records = [sources[split][i] for i in range(len(sources[split]))]
        want = expected[split]
        assert [r["path"].decode() for r in records] == [w["path"] for w in want], split
        assert len(want) > 0, split
        for r, w in zip(records, want):
            got = {k: r[k].decode() if isinstance(r[k], bytes) else r[k] for k in w}
            assert got == w, (split, w["path"])
            assert r["caption_ids"].dtype == np.int32 and r["rephrase_ids"].dtype == np.int32
            np.testing.assert_array_equal(r["caption_ids"], tokenize(w["caption"])[0])
            np.testing.assert_array_equal(r["rephrase_ids"], tokenize(w["rephrase"])[0])
            assert r["image"].dtype == np.uint8 and r["image"].shape == (288, 144, 3)
            np.testing.assert_array_equal(r["image"], load_image(root / w["path"]), err_msg=w["path"])
        if split.startswith("train"):
            assert all(w["caption"] and w["rephrase"] for w in want)
    meta = tfds.builder(name, data_dir=data_dir).info.metadata
    labels = {w["label"] for w in expected["train_rgb"]} | {w["label"] for w in expected["train_ir"]}
    assert meta["num_classes"] == len(labels) == max(labels) + 1
    id_map = _json(root, "Text/Blip_RGB/id_caption_map_Blip_RGB.json")
    assert meta["id_caption_map"] == {str(int(k)): v for k, v in id_map.items()}
    gallery_paths = [w["path"] for w in expected["gallery"]]
    assert {m: {t: [gallery_paths[i] for i in idx] for t, idx in trials.items()} for m, trials in meta["galleries"].items()} == galleries
    assert meta["counts"]["train_rgb"] == len(expected["train_rgb"]) and meta["num_skipped"] == 0
    with_caption = sum(bool(w["caption"]) for w in expected["gallery"])
    assert meta["with_text"] is True
    assert meta["text"] == {
        "train": True,
        "query": True,
        "id_caption_map": True,
        "gallery": with_caption == len(expected["gallery"]),
        "gallery_records_with_caption": with_caption,
        "gallery_caption_files": meta["text"]["gallery_caption_files"],
    }
    # RegDB/LLCM: every gallery image has its own caption (here from the llm dict); SYSU: none.
    if layout == "sysu":
        assert with_caption == 0 and meta["text"]["gallery_caption_files"] == []
    else:
        assert with_caption == len(expected["gallery"])
        assert meta["text"]["gallery_caption_files"] == ["Text/Blip_RGB/caption_llm_dict_Blip_RGB.json"]
    return meta


def record_files(data_dir):
    """Files a (failed) build must not leave: records, dataset info, incomplete folders."""
    return [
        p for p in Path(data_dir).rglob("*")
        if "array_record" in p.name or p.name in ("dataset_info.json", "features.json") or "incomplete" in p.name
    ]


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """write_tree fixtures, one per layout, at the synthetic builder's tiny sizes."""
    base = tmp_path_factory.mktemp("trees")
    return {layout: Path(write_tree(base / layout, layout, seed=3, **TINY[layout])["root"]) for layout in LAYOUTS}


def build_manual(layout, manual_dir, data_dir, **kwargs):
    cls, config = MANUAL[layout]
    builder = cls(config=config, data_dir=str(data_dir), **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", reid_builder.layouts.DatasetCountWarning)
        builder.download_and_prepare(
            file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        )
    return builder


def copy_tree(trees, layout, tmp_path):
    return Path(shutil.copytree(trees[layout], tmp_path / f"{layout}_copy"))


# --- builds -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synthetic_builder(layout, tmp_path):
    builder = synthetic_dataset_builder.Builder(config=f"{layout}_tiny", data_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", reid_builder.layouts.DatasetCountWarning)  # synthetic: no count warning
        builder.download_and_prepare()  # ArrayRecord by default: TFRecord would need TensorFlow
    assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    assert len(list((tmp_path / "synthetic" / f"{layout}_tiny" / "1.1.0").glob("*.array_record-*"))) == 4
    root = tmp_path / "downloads" / "synthetic" / f"{layout}_tiny"
    meta = check_build(str(tmp_path), f"synthetic/{layout}_tiny", root, layout)
    assert meta["synthetic"] is True and meta["expected_counts"] == {} and meta["layout"] == layout
    assert meta["source"]["options"]["num_train_ids"] == TINY[layout]["num_train_ids"]
    assert meta["num_classes"] == TINY[layout]["num_train_ids"]
    assert builder.info.splits["train_rgb"].num_examples == meta["counts"]["train_rgb"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_manual_builder(layout, trees, tmp_path):
    cls, config = MANUAL[layout]
    builder = cls(config=config, data_dir=str(tmp_path))
    with pytest.warns(reid_builder.layouts.DatasetCountWarning, match="differs from the standard release"):
        builder.download_and_prepare(
            file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=str(trees[layout]))
        )
    name = f"{builder.name}/{config}" if config else builder.name
    meta = check_build(str(tmp_path), name, trees[layout], layout)
    # Real-data builders report how far the counts are from the standard release.
    assert meta["synthetic"] is False and meta["expected_counts"]
    assert meta["count_deviations"]["train_ids"] == {"actual": meta["num_classes"], "expected": meta["expected_counts"]["train_ids"]}
    assert meta["trial"] == (1 if layout == "regdb" else None)


def test_sysu_gallery_gets_captions_from_an_added_rgb_file(trees, tmp_path):
    root = copy_tree(trees, "sysu", tmp_path)
    expected, _ = expected_sysu(root)
    gallery = [w["path"] for w in expected["gallery"]]
    captions = {p: f"a person at {p}" for p in gallery[1:]}  # one gallery image stays without
    (root / "Text/Blip_RGB/caption_dict_Blip_RGB.json").write_text(
        json.dumps({PREFIX["sysu"] + p: {"description": c} for p, c in captions.items()})
    )
    build_manual("sysu", root, tmp_path / "data")
    source = tfds.data_source("sysu_mm01", data_dir=str(tmp_path / "data"))["gallery"]
    records = [source[i] for i in range(len(source))]
    assert [r["path"].decode() for r in records] == gallery
    for r in records:
        caption = captions.get(r["path"].decode(), "")
        assert r["caption"].decode() == caption
        np.testing.assert_array_equal(r["caption_ids"], tokenize(caption)[0])
    meta = tfds.builder("sysu_mm01", data_dir=str(tmp_path / "data")).info.metadata
    assert meta["text"]["gallery"] is False and meta["text"]["gallery_records_with_caption"] == len(gallery) - 1
    assert meta["text"]["gallery_caption_files"] == ["Text/Blip_RGB/caption_dict_Blip_RGB.json"]


# --- text-free builds ---------------------------------------------------------------------------


def check_text_free_build(data_dir, name, root, text_root, layout):
    """Records as a text build of `text_root` (the same tree with Text/) would hold, minus the text."""
    expected, galleries = EXPECTED[layout](text_root)
    sources = tfds.data_source(name, data_dir=str(data_dir))
    zeros = np.zeros(77, np.int32)
    for split in schema.SPLITS:
        records = [sources[split][i] for i in range(len(sources[split]))]
        assert [r["path"].decode() for r in records] == [w["path"] for w in expected[split]], split
        for r, w in zip(records, expected[split]):
            assert (r["pid"], r["label"], r["cam"]) == (w["pid"], w["label"], w["cam"])
            assert r["caption"] == r["rephrase"] == b""
            np.testing.assert_array_equal(r["caption_ids"], zeros)
            np.testing.assert_array_equal(r["rephrase_ids"], zeros)
        np.testing.assert_array_equal(records[0]["image"], load_image(root / records[0]["path"].decode()))
    meta = tfds.builder(name, data_dir=str(data_dir)).info.metadata
    assert meta["with_text"] is False and meta["captioner"] is None and meta["id_caption_map"] == {}
    assert meta["text"] == {
        "train": False, "query": False, "id_caption_map": False, "gallery": False,
        "gallery_records_with_caption": 0, "gallery_caption_files": [],
    }
    labels = {w["label"] for w in expected["train_rgb"]}
    assert meta["num_classes"] == len(labels)
    gallery_paths = [w["path"] for w in expected["gallery"]]
    assert {m: {t: [gallery_paths[i] for i in idx] for t, idx in trials.items()} for m, trials in meta["galleries"].items()} == galleries


@pytest.mark.parametrize("layout", LAYOUTS)
def test_text_free_build_without_text_folder(layout, trees, tmp_path, monkeypatch):
    root = copy_tree(trees, layout, tmp_path)
    shutil.rmtree(root / "Text")
    monkeypatch.delenv(reid_builder.TEXT_ENV, raising=False)
    builder = build_manual(layout, root, tmp_path / "data", with_text=False)
    name = f"{builder.name}/{MANUAL[layout][1]}" if MANUAL[layout][1] else builder.name
    check_text_free_build(tmp_path / "data", name, root, trees[layout], layout)


def test_text_free_build_from_the_environment(trees, tmp_path, monkeypatch):
    """What `TVILFM_TFDS_TEXT=0 tfds build ...` does; a text build of the same data_dir is refused."""
    root = copy_tree(trees, "sysu", tmp_path)
    shutil.rmtree(root / "Text")
    data_dir = tmp_path / "data"
    monkeypatch.delenv(reid_builder.TEXT_ENV, raising=False)
    with pytest.raises(DatasetError, match="missing text files"):
        build_manual("sysu", root, data_dir)  # text is the default and this tree has none
    assert record_files(data_dir) == []
    monkeypatch.setenv(reid_builder.TEXT_ENV, "0")
    build_manual("sysu", root, data_dir)
    check_text_free_build(data_dir, "sysu_mm01", root, trees["sysu"], "sysu")
    build_manual("sysu", root, data_dir)  # the same kind again: reused
    monkeypatch.setenv(reid_builder.TEXT_ENV, "1")
    with pytest.raises(ValueError, match=r"built with with_text=False, but with_text=True was asked for"):
        build_manual("sysu", trees["sysu"], data_dir)
    # Reading needs neither the variable nor a sensible value of it.
    monkeypatch.setenv(reid_builder.TEXT_ENV, "not a yes/no")
    check_text_free_build(data_dir, "sysu_mm01", root, trees["sysu"], "sysu")
    # What the refusal suggests (`tfds build --overwrite` sets this mode) replaces the build.
    builder = sysu_mm01_dataset_builder.Builder(data_dir=str(data_dir), with_text=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", reid_builder.layouts.DatasetCountWarning)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(trees["sysu"]), download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS,
        ))
    check_build(str(data_dir), "sysu_mm01", trees["sysu"], "sysu")


def test_text_free_examples_refuse_text():
    with pytest.raises(ValueError, match="text-free build got text"):
        schema.token_ids(["", "a person"], with_text=False)
    assert schema.token_ids(["", ""], with_text=False).shape == (2, 77)


def test_regdb_has_ten_trial_configs():
    names = [c.name for c in regdb_dataset_builder.Builder.BUILDER_CONFIGS]
    assert names == [f"trial{t}" for t in range(1, 11)]
    assert [c.trial for c in regdb_dataset_builder.Builder.BUILDER_CONFIGS] == list(range(1, 11))


def test_feature_spec_is_the_contract():
    spec = schema.features()
    assert set(spec.keys()) == {"image", "pid", "label", "cam", "path", "caption", "rephrase", "caption_ids", "rephrase_ids"}
    assert spec["image"].shape == (288, 144, 3) and spec["image"].np_dtype == np.uint8
    assert spec["caption_ids"].shape == (77,) and spec["caption_ids"].np_dtype == np.int32
    assert spec["pid"].np_dtype == spec["label"].np_dtype == spec["cam"].np_dtype == np.int32


# --- validation surfaces before anything is written ---------------------------------------------


def _delete_train_image(root):
    path = _split_file(root / "idx/train_visible_1.txt")[1][0]
    (root / path).unlink()
    return ["names images that do not exist", path]


def _corrupt_image(root):
    path = _split_file(root / "idx/train_thermal_1.txt")[0][0]
    data = (root / path).read_bytes()
    (root / path).write_bytes(data[: len(data) // 3])  # truncated: header fine, pixels missing
    return ["unreadable or corrupt images", path]


def _drop_caption(root):
    text = root / "Text/Blip_RGB/caption_llm_dict_Blip_RGB.json"
    captions = json.loads(text.read_text())
    path = _split_file(root / "idx/train_visible_1.txt")[0][0]
    del captions[PREFIX["regdb"] + path]
    text.write_text(json.dumps(captions))
    return ["training images without a caption", path]


def _wrong_key_prefix(root):
    # Keys whose folder name is not "Thermal" cannot be matched to any image.
    text = root / "Text/Blip_IR/caption_llm_dict_Blip_IR.json"
    captions = json.loads(text.read_text())
    text.write_text(json.dumps({k.replace("/Thermal/", "/thermal_imgs/"): v for k, v in captions.items()}))
    return ["caption_llm_dict_Blip_IR.json: no key matches the layout"]


@pytest.mark.parametrize("damage", [_delete_train_image, _corrupt_image, _drop_caption, _wrong_key_prefix])
def test_validation_error_leaves_nothing_written(damage, trees, tmp_path):
    root = copy_tree(trees, "regdb", tmp_path)
    needles = damage(root)
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError) as err:
        build_manual("regdb", root, data_dir)
    for needle in needles:
        assert needle in str(err.value)
    assert str(root) in str(err.value)
    assert record_files(data_dir) == []
    assert not (data_dir / "regdb" / "trial1" / "1.0.0").exists()


def test_failure_while_writing_leaves_nothing_written(trees, tmp_path, monkeypatch):
    """A file that breaks after validation (here: the 5th image read) aborts the whole build."""
    calls = []

    def flaky_load_image(path):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(f"disk error reading {path}")
        return load_image(path)

    monkeypatch.setattr(schema, "load_image", flaky_load_image)
    with pytest.raises(OSError, match="disk error reading"):
        build_manual("regdb", trees["regdb"], tmp_path / "data")
    assert len(calls) == 5
    assert record_files(tmp_path / "data") == []


def test_sysu_corrupt_image_is_reported(trees, tmp_path):
    root = copy_tree(trees, "sysu", tmp_path)
    bad = min((root / "cam3").rglob("*.jpg"))
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match="unreadable or corrupt images") as err:
        build_manual("sysu", root, tmp_path / "data")
    assert bad.relative_to(root).as_posix() in str(err.value)
    assert record_files(tmp_path / "data") == []


@pytest.mark.parametrize("how", ["kwarg", "env"])
def test_non_strict_skips_corrupt_images(how, trees, tmp_path, monkeypatch):
    root = copy_tree(trees, "regdb", tmp_path)
    _, bad = _corrupt_image(root)
    if how == "env":
        monkeypatch.setenv(reid_builder.STRICT_ENV, "0")
        kwargs = {}
    else:
        monkeypatch.delenv(reid_builder.STRICT_ENV, raising=False)
        kwargs = {"strict": False}
    data_dir = tmp_path / "data"
    with pytest.warns(SkippedImagesWarning, match="skipped 1 unreadable image"):
        build_manual("regdb", root, data_dir, **kwargs)
    # The variable matters only when building: readers construct the builder too.
    monkeypatch.setenv(reid_builder.STRICT_ENV, "not a yes/no")
    source = tfds.data_source("regdb/trial1", data_dir=str(data_dir))["train_ir"]
    paths = [source[i]["path"].decode() for i in range(len(source))]
    listed = [p for p, _ in _split_file(root / "idx/train_thermal_1.txt")]
    assert paths == [p for p in listed if p != bad]
    meta = tfds.builder("regdb/trial1", data_dir=str(data_dir)).info.metadata
    assert meta["strict"] is False and meta["num_skipped"] == 1 and meta["skipped"] == [bad]


@pytest.mark.parametrize("name, read", [("TVILFM_TFDS_STRICT", "strict_from_env"), ("TVILFM_TFDS_TEXT", "with_text_from_env")])
def test_env_flag_values(name, read, monkeypatch):
    read = getattr(reid_builder, read)
    monkeypatch.delenv(name, raising=False)
    assert read() is True
    for value, flag in (("0", False), ("false", False), ("No", False), ("1", True), ("yes", True)):
        monkeypatch.setenv(name, value)
        assert read() is flag
    monkeypatch.setenv(name, "maybe")
    with pytest.raises(ValueError, match=f"{name}='maybe'"):
        read()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_missing_manual_dir_says_what_is_expected(layout, tmp_path):
    with pytest.raises(AssertionError) as err:
        build_manual(layout, tmp_path / "nowhere", tmp_path / "data")
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "does not exist or is empty" in message
    assert "Text/Blip_IR/caption_dict_Blip_IR.json" in message
    assert {"sysu": "exp/test_id.txt", "regdb": "idx/test_thermal_<t>.txt", "llcm": "test_nir/"}[layout] in message
    assert record_files(tmp_path / "data") == []


def test_manual_dir_that_is_not_a_dataset_root(tmp_path):
    """A manual_dir holding something else fails validation, naming what is missing."""
    (tmp_path / "manual" / "RegDB").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"missing folders \[3\]: idx/; Visible/; Thermal/"):
        build_manual("regdb", tmp_path / "manual", tmp_path / "data")
