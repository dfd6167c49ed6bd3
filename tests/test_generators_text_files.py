"""The Text/ file set each layout gets (docs/original.md §5.3, §9), checked file by file, and read back by
the project's layout readers. Texts here are made up; the models are tested elsewhere."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_generators_trees import synthetic_tree

from tvilfm_jax.data.layouts import read_layout
from tvilfm_jax.generators import text_files
from tvilfm_jax.data.text.colour_filter import remove_colours
from tvilfm_jax.generators.image_sets import list_images


def _texts(images):
    captions = {m: {e.key: f"a person {m} {i}" for i, e in enumerate(images.entries[m])} for m in ("RGB", "IR")}
    # Two images of one identity share a caption: id maps must keep it once.
    first, second = [e for e in images.entries["RGB"] if e.pid == images.entries["RGB"][0].pid][:2]
    captions["RGB"][second.key] = captions["RGB"][first.key]
    rephrases = {m: {e.key: {"description": captions[m][e.key], "aug_description": f"someone in a navy blue coat {i}."}
                     for i, e in enumerate(images.train_entries(m))} for m in ("RGB", "IR")}
    return captions, rephrases


def _write_everything(root, layout, prefix):
    images = list_images(root, layout)
    captions, rephrases = _texts(images)
    text_dir = os.path.join(root, "Text")
    written = text_files.write_caption_files(text_dir, images, captions, prefix)
    written += text_files.write_rephrase_files(text_dir, images, rephrases, prefix)
    written += text_files.write_filtered_files(text_dir, images, rephrases["IR"], prefix)
    return images, captions, rephrases, text_dir, written


def _load(text_dir, rel):
    with open(os.path.join(text_dir, rel), encoding="utf-8") as f:
        return json.load(f)


def _files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


@pytest.mark.parametrize("layout", ["regdb", "llcm"])
def test_json_layouts(tmp_path, layout):
    root = synthetic_tree(str(tmp_path), layout)
    prefix = f"datasets/{layout}/"
    images, captions, rephrases, text_dir, written = _write_everything(root, layout, prefix)
    assert _files_under(text_dir) == sorted(text_files.all_file_names(layout)) == sorted(
        os.path.relpath(p, text_dir) for p in written)
    folder = "llm_color_filterd_output" if layout == "regdb" else "llm_color_filtered_output"
    assert f"Blip_IR/{folder}/{layout}_ir_blip_caption_LLM_filtered_dict.json" in text_files.all_file_names(layout)

    for m in ("RGB", "IR"):
        every = {prefix + e.key: {"description": captions[m][e.key]} for e in images.entries[m]}
        if m == "RGB":
            assert _load(text_dir, "Blip_RGB/caption_dict_Blip_RGB.json") == every
        else:
            assert _load(text_dir, "Blip_IR/caption_dict_Blip_IR.json") == every
    rgb_llm = _load(text_dir, "Blip_RGB/caption_llm_dict_Blip_RGB.json")
    assert rgb_llm == {prefix + e.key: rephrases["RGB"][e.key] for e in images.train_entries("RGB")}
    ir_llm = _load(text_dir, "Blip_IR/caption_llm_dict_Blip_IR.json")
    raw = _load(text_dir, f"Blip_IR/origin_llm_color_dict/{layout}_ir_blip_caption_LLM_dict.json")
    filtered = _load(text_dir, f"Blip_IR/{folder}/{layout}_ir_blip_caption_LLM_filtered_dict.json")
    assert filtered == ir_llm and raw.keys() == ir_llm.keys() == {prefix + e.key for e in images.train_entries("IR")}
    for key, value in ir_llm.items():
        assert value["description"] == raw[key]["description"]
        assert raw[key]["aug_description"].startswith("someone in a navy blue coat")
        assert value["aug_description"] == remove_colours(raw[key]["aug_description"])
        assert "blue" not in value["aug_description"] and "coat" in value["aug_description"]

    id_map = _load(text_dir, "Blip_RGB/id_caption_map_Blip_RGB.json")
    pids = sorted({e.pid for e in images.entries["RGB"]})
    assert list(id_map) == [str(p) for p in pids]
    for pid in pids:
        unique = list(dict.fromkeys(captions["RGB"][e.key] for e in images.entries["RGB"] if e.pid == pid))
        assert id_map[str(pid)] == unique
    assert len(id_map[str(images.entries["RGB"][0].pid)]) == 1  # the shared caption kept once

    if layout == "llcm":  # test images keyed at their originals
        for m, folder in (("RGB", "vis"), ("IR", "nir")):
            keys = _load(text_dir, f"Blip_{m}/caption_dict_Blip_{m}.json")
            assert all(k.startswith(f"{prefix}{folder}/") for k in keys)
            assert any(e.path.startswith(f"test_{folder}/") and prefix + e.key in keys for e in images.entries[m])


def test_sysu_arrays(tmp_path):
    root = synthetic_tree(str(tmp_path), "sysu")
    images, captions, rephrases, text_dir, _ = _write_everything(root, "sysu", "datasets/sysu/")
    assert _files_under(text_dir) == sorted(text_files.all_file_names("sysu"))
    for m in ("RGB", "IR"):
        train = images.train_entries(m)
        arrays = {stem: np.load(os.path.join(text_dir, f"Blip_{m}/{stem}_Blip_{m}.npy"), allow_pickle=False)
                  for stem in ("train_text", "train_llm_text", "train_text_label")}
        for array in arrays.values():
            assert array.dtype.kind == "U" and array.shape == (len(train),)
        assert arrays["train_text"].tolist() == [captions[m][e.key] for e in train]
        llm = [rephrases[m][e.key]["aug_description"] for e in train]
        assert arrays["train_llm_text"].tolist() == (llm if m == "RGB" else [remove_colours(t) for t in llm])
        # As released: RGB labels zero-padded ('0001'), IR labels not ('1').
        expected = [f"{e.pid:04d}" if m == "RGB" else str(e.pid) for e in train]
        assert arrays["train_text_label"].tolist() == expected
    query = next(e for e in images.entries["IR"] if not e.train)
    assert _load(text_dir, "Blip_IR/caption_dict_Blip_IR.json")["datasets/sysu/" + query.key] == {
        "description": captions["IR"][query.key]}
    pids = {str(e.pid) for m in ("RGB", "IR") for e in images.entries[m]}
    assert set(_load(text_dir, "Blip_IR/id_caption_map_Blip_IR.json")) == pids
    assert set(_load(text_dir, "Blip_RGB/id_caption_map_Blip_RGB.json")) == pids


@pytest.mark.parametrize("layout", ["sysu", "regdb", "llcm"])
def test_layout_readers_read_the_written_files(tmp_path, layout):
    root = synthetic_tree(str(tmp_path), layout)
    images, captions, rephrases, _, _ = _write_everything(root, layout, f"/some/absolute/{layout}/")
    index = read_layout(root, layout, trial=1 if layout == "regdb" else None, images="exists", synthetic=True)
    for modality, records in (("RGB", index.train_rgb), ("IR", index.train_ir)):
        assert records
        for r in records:
            aug = rephrases[modality][r.path]["aug_description"]
            assert r.caption == captions[modality][r.path]
            assert r.llm_caption == (aug if modality == "RGB" else remove_colours(aug))
    assert index.query
    for q in index.query:
        key = "/".join(["nir", *q.path.split("/")[2:]]) if layout == "llcm" else q.path
        assert q.ir_caption == captions["IR"][key]
        assert set(index.id_caption_map[str(q.pid)]) == {
            captions["RGB"][e.key] for e in images.entries["RGB"] if e.pid == q.pid}


def test_incomplete_inputs_are_refused(tmp_path):
    root = synthetic_tree(str(tmp_path), "regdb")
    images = list_images(root, "regdb")
    captions, _ = _texts(images)
    dropped = images.entries["IR"][3].key
    del captions["IR"][dropped]
    with pytest.raises(ValueError, match=f"1 of 8 IR captions are missing, e.g. '{dropped}'"):
        text_files.write_caption_files(str(tmp_path / "Text"), images, captions, "datasets/regdb/")
    assert not (tmp_path / "Text").exists()
    assert text_files.normalise_key_prefix("datasets/regdb") == "datasets/regdb/"
    assert text_files.normalise_key_prefix("") == ""
