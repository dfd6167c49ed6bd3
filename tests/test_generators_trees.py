"""Which images of a tree need text: on hand-made trees with known answers, and in agreement
with the project's synthetic dataset writer.

`synthetic_tree` (a tiny `tvilfm_jax.data.synthetic.write_tree` tree with its Text/ removed,
for the generators to write) is shared by the other generator tests, imported from here.
`write_tiny_tree` makes the hand-made trees whose orders the tests below spell out.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tvilfm_jax.data.synthetic import write_tree
from tvilfm_jax.generators.image_sets import list_images

# A few identities and images per layout; 32x16 images.
TINY = {
    "sysu": {"num_train_ids": 2, "num_val_ids": 1, "num_test_ids": 2, "images_per_cam": 1, "image_size": (32, 16)},
    "regdb": {"num_train_ids": 2, "num_test_ids": 2, "images_per_id": 2, "num_trials": 2, "image_size": (32, 16)},
    "llcm": {"num_train_ids": 2, "num_test_ids": 2, "images_per_cam": 1, "image_size": (32, 16)},
}


def synthetic_tree(root: str, layout: str, seed: int = 0) -> str:
    """A tiny synthetic `layout` tree without Text/ (the generators under test write it)."""
    write_tree(root, layout, seed=seed, **TINY[layout])
    shutil.rmtree(os.path.join(root, "Text"))
    return root


def _image(path: str, rng: np.random.Generator) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Different sizes per file: the captioner's processor must resize them to one shape.
    h, w = int(rng.integers(12, 20)), int(rng.integers(6, 10))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


# SYSU: pid -> {camera: number of images}
SYSU_TRAIN = {1: {1: 2, 4: 1, 3: 2}, 2: {2: 1, 5: 1, 6: 1}, 3: {1: 1, 3: 1, 6: 1}}
SYSU_TEST = {4: {1: 1, 2: 1, 3: 2}, 5: {4: 1, 6: 1}}


def write_tiny_tree(root: str, layout: str, seed: int = 0) -> str:
    """Writes a tiny `layout` tree under `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    if layout == "sysu":
        _write(f"{root}/exp/train_id.txt", "1,2\n")
        _write(f"{root}/exp/val_id.txt", "3\n")
        _write(f"{root}/exp/test_id.txt", "4,5\n")
        for pid, cams in {**SYSU_TRAIN, **SYSU_TEST}.items():
            for cam, count in cams.items():
                for i in range(count):
                    _image(f"{root}/cam{cam}/{pid:04d}/{i + 1:04d}.jpg", rng)
    elif layout == "regdb":
        # 4 identities, 2 images per modality; trial 1 trains on 1-2, trial 2 on 3-4.
        for pid in range(1, 5):
            for i in range(2):
                _image(f"{root}/Visible/{pid}/male_front_v_{pid * 10 + i:05d}_{pid}.bmp", rng)
                _image(f"{root}/Thermal/{pid}/male_front_t_{pid * 10 + i:05d}_{pid}.bmp", rng)
        for trial, (train, test) in {1: ((1, 2), (3, 4)), 2: ((3, 4), (1, 2))}.items():
            for split, pids in (("train", train), ("test", test)):
                for kind, folder, tag in (("visible", "Visible", "v"), ("thermal", "Thermal", "t")):
                    lines = [f"{folder}/{pid}/male_front_{tag}_{pid * 10 + i:05d}_{pid}.bmp {label}"
                             for label, pid in enumerate(pids) for i in range(2)]
                    _write(f"{root}/idx/{split}_{kind}_{trial}.txt", "\n".join(lines) + "\n")
    elif layout == "llcm":
        vis, nir = [], []
        for label, pid in enumerate((1, 2)):
            for i in range(2):
                name = f"{pid:04d}_c{i + 1:02d}_s1_f{i}"
                _image(f"{root}/vis/{pid:04d}/{name}_vis.jpg", rng)
                _image(f"{root}/nir/{pid:04d}/{name}_nir.jpg", rng)
                vis.append(f"vis/{pid:04d}/{name}_vis.jpg {label}")
                nir.append(f"nir/{pid:04d}/{name}_nir.jpg {label}")
        _write(f"{root}/idx/train_vis.txt", "\n".join(vis) + "\n")
        _write(f"{root}/idx/train_nir.txt", "\n".join(nir) + "\n")
        _write(f"{root}/idx/test_id.txt", "3,4\n")
        for pid, vis_cams, nir_cams in ((3, (1, 3), (2,)), (4, (2,), (4, 5))):
            for cam in vis_cams:
                name = f"{pid:04d}_c{cam:02d}_s2_f0_vis.jpg"
                _image(f"{root}/test_vis/cam{cam}/{pid:04d}/{name}", rng)
                _image(f"{root}/vis/{pid:04d}/{name}", rng)
            for cam in nir_cams:
                name = f"{pid:04d}_c{cam:02d}_s2_f0_nir.jpg"
                _image(f"{root}/test_nir/cam{cam}/{pid:04d}/{name}", rng)
                # The original keys a query's caption at this twin (docs/original.md §5.1).
                _image(f"{root}/nir/{pid:04d}/{name}", rng)
    else:
        raise ValueError(layout)
    return root


def test_sysu_images_follow_the_preprocessing_order(tmp_path):
    images = list_images(write_tiny_tree(str(tmp_path), "sysu"), "sysu")
    rgb_train = [e.path for e in images.train_entries("RGB")]
    # ids sorted, then cameras 1, 2, 4, 5, then sorted files (docs/original.md §5.2).
    assert rgb_train == ["cam1/0001/0001.jpg", "cam1/0001/0002.jpg", "cam4/0001/0001.jpg",
                         "cam2/0002/0001.jpg", "cam5/0002/0001.jpg", "cam1/0003/0001.jpg"]
    assert [e.path for e in images.train_entries("IR")] == [
        "cam3/0001/0001.jpg", "cam3/0001/0002.jpg", "cam6/0002/0001.jpg", "cam3/0003/0001.jpg",
        "cam6/0003/0001.jpg"]
    test_ir = [(e.path, e.pid) for e in images.entries["IR"] if not e.train]
    assert test_ir == [("cam3/0004/0001.jpg", 4), ("cam3/0004/0002.jpg", 4), ("cam6/0005/0001.jpg", 5)]
    assert all(e.key == e.path for m in ("RGB", "IR") for e in images.entries[m])


def test_regdb_lists_every_image_of_every_trial_as_training(tmp_path):
    images = list_images(write_tiny_tree(str(tmp_path), "regdb"), "regdb")
    for modality, folder in (("RGB", "Visible"), ("IR", "Thermal")):
        entries = images.entries[modality]
        assert len(entries) == 8 and all(e.train for e in entries)
        assert {e.pid for e in entries} == {1, 2, 3, 4}
        assert all(e.path.startswith(folder + "/") and e.key == e.path for e in entries)


def test_llcm_keys_test_images_at_their_originals(tmp_path):
    images = list_images(write_tiny_tree(str(tmp_path), "llcm"), "llcm")
    test_ir = [(e.path, e.key, e.pid) for e in images.entries["IR"] if not e.train]
    assert test_ir == [
        ("test_nir/cam2/0003/0003_c02_s2_f0_nir.jpg", "nir/0003/0003_c02_s2_f0_nir.jpg", 3),
        ("test_nir/cam4/0004/0004_c04_s2_f0_nir.jpg", "nir/0004/0004_c04_s2_f0_nir.jpg", 4),
        ("test_nir/cam5/0004/0004_c05_s2_f0_nir.jpg", "nir/0004/0004_c05_s2_f0_nir.jpg", 4)]
    assert [(e.path, e.key) for e in images.entries["RGB"] if not e.train] == [
        ("test_vis/cam1/0003/0003_c01_s2_f0_vis.jpg", "vis/0003/0003_c01_s2_f0_vis.jpg"),
        ("test_vis/cam3/0003/0003_c03_s2_f0_vis.jpg", "vis/0003/0003_c03_s2_f0_vis.jpg"),
        ("test_vis/cam2/0004/0004_c02_s2_f0_vis.jpg", "vis/0004/0004_c02_s2_f0_vis.jpg")]
    assert len(images.train_entries("RGB")) == len(images.train_entries("IR")) == 4


def test_bad_trees_fail_naming_the_file(tmp_path):
    root = write_tiny_tree(str(tmp_path / "regdb"), "regdb")
    os.remove(f"{root}/Visible/1/male_front_v_00010_1.bmp")
    with pytest.raises(FileNotFoundError, match=r"train_visible_1\.txt names 1 image\(s\) missing.*Visible/1/male_front_v_00010_1"):
        list_images(root, "regdb")
    root = write_tiny_tree(str(tmp_path / "sysu"), "sysu")
    os.remove(f"{root}/exp/val_id.txt")
    with pytest.raises(FileNotFoundError, match="val_id.txt"):
        list_images(root, "sysu")
    with pytest.raises(ValueError, match="unknown layout 'market'"):
        list_images(root, "market")
    root = write_tiny_tree(str(tmp_path / "llcm"), "llcm")
    _write(f"{root}/idx/train_vis.txt", "vis/0001/x.jpg zero\n")
    with pytest.raises(ValueError, match=r"train_vis\.txt, line 1"):
        list_images(root, "llcm")


@pytest.mark.parametrize("layout", ["sysu", "regdb", "llcm"])
def test_image_sets_agree_with_the_synthetic_writer(tmp_path, layout):
    # Two independent readings of docs/original.md §5/§9: the synthetic writer's Text/ files and ours.
    root = str(tmp_path)
    write_tree(root, layout, **TINY[layout])
    images = list_images(root, layout)
    prefix = f"datasets/{layout}/"

    def keys(rel):
        with open(os.path.join(root, "Text", rel)) as f:
            return set(json.load(f))

    def labels(modality):
        return np.load(os.path.join(root, f"Text/Blip_{modality}/train_text_label_Blip_{modality}.npy")).tolist()

    if layout == "sysu":
        assert labels("RGB") == [f"{e.pid:04d}" for e in images.train_entries("RGB")]
        assert labels("IR") == [str(e.pid) for e in images.train_entries("IR")]
        test_ir = {prefix + e.key for e in images.entries["IR"] if not e.train}
        assert keys("Blip_IR/caption_dict_Blip_IR.json") == test_ir
    else:
        for m in ("RGB", "IR"):
            assert keys(f"Blip_{m}/caption_dict_Blip_{m}.json") == {prefix + e.key for e in images.entries[m]}
            train = keys(f"Blip_{m}/caption_llm_dict_Blip_{m}.json")
            assert {prefix + e.key for e in images.train_entries(m)} <= train
    pids = {str(e.pid) for e in images.entries["RGB"]}
    assert keys("Blip_RGB/id_caption_map_Blip_RGB.json") == pids
