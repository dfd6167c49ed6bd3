"""Test protocols (docs/original.md §6.4-6.6): query lists and trial galleries equal the original's loops."""

import os
import random

import numpy as np
import pytest

from tvilfm_jax.data import datasets, protocols
from tvilfm_jax.data.protocols import ImageRef

TEST_IDS = [12, 3, 7, 25, 40]  # written unsorted; the protocol sorts
FILES_PER_FOLDER = 5


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _folder_files(rng):
    # Random names, created out of order, so that directory order is not sorted order.
    return [f"{n:04d}.jpg" for n in rng.choice(60, size=FILES_PER_FOLDER, replace=False)]


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    """Test ids 3, 7, 12, 25, 40 with uneven camera coverage, plus a training id."""
    root = tmp_path_factory.mktemp("sysu")
    (root / "exp").mkdir()
    (root / "exp" / "test_id.txt").write_text(",".join(map(str, TEST_IDS)) + "\n999\n")
    rng = np.random.default_rng(0)
    missing = {(7, 2), (25, 5), (40, 6), (12, 1)}  # (id, cam) folders that do not exist
    for pid in TEST_IDS + [1]:  # id 1 is a training id: never in query or gallery
        for cam in range(1, 7):
            if (pid, cam) in missing:
                continue
            for name in _folder_files(rng):
                _touch(root / f"cam{cam}" / f"{pid:04d}" / name)
    return root


@pytest.fixture(scope="module")
def llcm_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("llcm")
    (root / "idx").mkdir()
    (root / "idx" / "test_id.txt").write_text("5,2,11")
    rng = np.random.default_rng(1)
    for pid in (2, 5, 11, 4):  # 4 is not a test id
        for cam in range(1, 10):
            if (pid + cam) % 4 == 0:
                continue
            for modality in ("test_vis", "test_nir"):
                if modality == "test_nir" and cam == 3:
                    continue
                for n in rng.choice(40, size=4, replace=False):
                    _touch(root / modality / f"cam{cam}" / f"{pid:04d}" / f"{pid:04d}_c{cam:02d}_s{n:03d}_{modality[5:]}.jpg")
    return root


# --- straightforward re-implementations of the original loops (global `random.seed`) ----------


def reference_sysu(root, trial, mode):
    random.seed(trial)
    cams = ["cam1", "cam2", "cam4", "cam5"] if mode == "all" else ["cam1", "cam2"]
    with open(os.path.join(root, "exp/test_id.txt")) as f:
        ids = ["%04d" % int(y) for y in f.read().splitlines()[0].split(",")]
    gallery, query = [], []
    for pid in sorted(ids):
        for cam in cams:
            img_dir = os.path.join(root, cam, pid)
            if os.path.isdir(img_dir):
                files = sorted(img_dir + "/" + i for i in os.listdir(img_dir))
                gallery.append(random.choice(files))
        for cam in ["cam3", "cam6"]:
            img_dir = os.path.join(root, cam, pid)
            if os.path.isdir(img_dir):
                query.extend(sorted(img_dir + "/" + i for i in os.listdir(img_dir)))
    # The original's positional parsing of the full path.
    parse = lambda p: (p[len(str(root)) + 1 :], int(p[-13:-9]), int(p[-15]))  # noqa: E731
    return [parse(p) for p in query], [parse(p) for p in gallery]


def reference_llcm(root, trial):
    random.seed(trial)
    vis = [f"test_vis/cam{c}" for c in range(1, 10)]
    nir = [f"test_nir/cam{c}" for c in (1, 2, 4, 5, 6, 7, 8, 9)]
    with open(os.path.join(root, "idx/test_id.txt")) as f:
        ids = ["%04d" % int(y) for y in f.read().splitlines()[0].split(",")]
    gallery, query = [], []
    for pid in sorted(ids):
        for cam in vis:
            img_dir = os.path.join(root, cam, pid)
            if os.path.isdir(img_dir):
                gallery.append(random.choice(sorted(img_dir + "/" + i for i in os.listdir(img_dir))))
    for pid in sorted(ids):
        for cam in nir:
            img_dir = os.path.join(root, cam, pid)
            if os.path.isdir(img_dir):
                query.extend(sorted(img_dir + "/" + i for i in os.listdir(img_dir)))

    def parse(p):
        after = p.split("cam")[1]  # the original's rule; the tmp root holds no "cam"
        return p[len(str(root)) + 1 :], int(after[2:6]), int(after[0])

    return [parse(p) for p in query], [parse(p) for p in gallery]


# --- SYSU -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["all", "indoor"])
def test_sysu_equals_original_loop(sysu_root, mode):
    saved = random.getstate()
    for trial in range(10):
        want_query, want_gallery = reference_sysu(sysu_root, trial, mode)
        assert protocols.sysu_gallery(sysu_root, trial, mode) == want_gallery
        assert protocols.sysu_query(sysu_root) == want_query
    random.setstate(saved)


def test_sysu_gallery_sizes_one_per_id_and_camera(sysu_root):
    for mode, cams in datasets.SYSU_GALLERY_CAMS.items():
        folders = {(pid, c) for pid in TEST_IDS for c in cams if (sysu_root / f"cam{c}" / f"{pid:04d}").is_dir()}
        gallery = protocols.sysu_gallery(sysu_root, 0, mode)
        assert len(gallery) == len(folders) == len({(g.pid, g.cam) for g in gallery})
        assert {(g.pid, g.cam) for g in gallery} == folders
    # 5 ids x 4 cameras minus the 3 missing RGB folders; indoor: 5 x 2 minus 2.
    assert len(protocols.sysu_gallery(sysu_root, 0, "all")) == 17
    assert len(protocols.sysu_gallery(sysu_root, 0, "indoor")) == 8


def test_sysu_query_order_and_cameras(sysu_root):
    query = protocols.sysu_query(sysu_root)
    assert {q.cam for q in query} == {3, 6}
    assert {q.pid for q in query} == set(TEST_IDS)
    # sorted ids -> cameras 3 then 6 -> sorted files; no training id, no hidden file.
    assert [q.path for q in query] == sorted((q.path for q in query), key=lambda p: (p.split("/")[1], p))
    assert len(query) == (2 * len(TEST_IDS) - 1) * FILES_PER_FOLDER
    # The cam3 -> cam2 removal rule of eval_sysu needs both present.
    assert 2 in {g.cam for g in protocols.sysu_gallery(sysu_root, 0)}


def test_gallery_deterministic_and_trial_dependent(sysu_root, llcm_root):
    for sample in (lambda t: protocols.sysu_gallery(sysu_root, t), lambda t: protocols.llcm_gallery(llcm_root, t)):
        assert sample(3) == sample(3)
        draws = {tuple(sample(t)) for t in range(10)}
        assert len(draws) == 10  # 5 files per folder over >= 17 folders: collisions ~ 5^-17


def test_global_random_state_untouched(sysu_root, llcm_root):
    random.seed(1234)
    before = random.getstate()
    protocols.sysu_gallery(sysu_root, 5)
    protocols.llcm_gallery(llcm_root, 5)
    protocols.gallery_set(sysu_root, "sysu", "indoor")
    assert random.getstate() == before
    # and the sampling ignores the global state
    random.seed(99)
    assert protocols.sysu_gallery(sysu_root, 5) == reference_sysu(sysu_root, 5, "all")[1]


def test_hidden_files_and_subfolders_are_never_listed(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "test_id.txt").write_text("1")
    for name in (".DS_Store", "0001.jpg", "0002.jpg"):
        _touch(tmp_path / "cam3" / "0001" / name)
        _touch(tmp_path / "cam1" / "0001" / name)
    (tmp_path / "cam1" / "0001" / "sub").mkdir()
    assert [q.path for q in protocols.sysu_query(tmp_path)] == ["cam3/0001/0001.jpg", "cam3/0001/0002.jpg"]
    drawn = {protocols.sysu_gallery(tmp_path, t)[0].path for t in range(20)}
    assert drawn == {"cam1/0001/0001.jpg", "cam1/0001/0002.jpg"}


def test_invalid_mode_and_empty_folder(tmp_path, sysu_root):
    with pytest.raises(ValueError, match="indoor"):
        protocols.sysu_gallery(sysu_root, 0, mode="outdoor")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "test_id.txt").write_text("1")
    (tmp_path / "cam1" / "0001").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"cam1/0001 exists but holds no images"):
        protocols.sysu_gallery(tmp_path, 0)


# --- LLCM -----------------------------------------------------------------------------------


def test_llcm_equals_original_loop(llcm_root):
    saved = random.getstate()
    for trial in range(10):
        want_query, want_gallery = reference_llcm(llcm_root, trial)
        assert protocols.llcm_gallery(llcm_root, trial) == want_gallery
        assert protocols.llcm_query(llcm_root) == want_query
    random.setstate(saved)


def test_llcm_cameras(llcm_root):
    query = protocols.llcm_query(llcm_root)
    gallery = protocols.llcm_gallery(llcm_root, 0)
    assert {q.cam for q in query} <= set(datasets.LLCM_QUERY_CAMS) and 3 not in {q.cam for q in query}
    assert all(q.path.startswith("test_nir/") for q in query)
    assert all(g.path.startswith("test_vis/") for g in gallery)
    assert {g.pid for g in gallery} == {q.pid for q in query} == {2, 5, 11}
    folders = {(p, c) for p in (2, 5, 11) for c in range(1, 10) if (p + c) % 4}
    assert {(g.pid, g.cam) for g in gallery} == folders and len(gallery) == len(folders)


# --- RegDB ----------------------------------------------------------------------------------


def test_regdb_split_pids_from_folder_and_fixed_cams(tmp_path):
    (tmp_path / "idx").mkdir()
    thermal = ["Thermal/301/male_front_t_00010_301.bmp 0", "Thermal/12/female_back_t_00003_12.bmp 7"]
    visible = ["Visible/12/female_back_v_00001_12.bmp 4", "Visible/301/male_front_v_00002_301.bmp 0"]
    (tmp_path / "idx" / "test_thermal_3.txt").write_text("\n".join(thermal) + "\n")
    (tmp_path / "idx" / "test_visible_3.txt").write_text("\r\n".join(visible))
    split = protocols.regdb_split(tmp_path, 3)
    assert split.query == [
        ImageRef("Thermal/301/male_front_t_00010_301.bmp", 301, 1),
        ImageRef("Thermal/12/female_back_t_00003_12.bmp", 12, 1),
    ]
    assert split.gallery == [
        ImageRef("Visible/12/female_back_v_00001_12.bmp", 12, 2),
        ImageRef("Visible/301/male_front_v_00002_301.bmp", 301, 2),
    ]
    with pytest.raises(FileNotFoundError, match="test_thermal_4.txt"):
        protocols.regdb_split(tmp_path, 4)
    (tmp_path / "idx" / "test_thermal_5.txt").write_text("Thermal/1/a.bmp\n")
    (tmp_path / "idx" / "test_visible_5.txt").write_text("")
    with pytest.raises(ValueError, match=r"test_thermal_5.txt, line 1"):
        protocols.regdb_split(tmp_path, 5)


# --- gallery union and id files ---------------------------------------------------------------


def test_union_of_trial_galleries(sysu_root):
    gallery_set = protocols.gallery_set(sysu_root, "sysu")
    paths = [r.path for r in gallery_set.records]
    assert paths == sorted(set(paths))
    assert gallery_set.trials == tuple(range(10))
    for trial, indices in zip(gallery_set.trials, gallery_set.indices):
        assert indices.dtype == np.int32
        assert gallery_set.gallery(trial) == protocols.sysu_gallery(sysu_root, trial)
    used = np.unique(np.concatenate(gallery_set.indices))
    assert used.tolist() == list(range(len(gallery_set.records)))  # nothing stored that no trial uses
    with pytest.raises(KeyError, match="trial 10"):
        gallery_set.gallery(10)
    with pytest.raises(ValueError, match="appears as both"):
        protocols.union_galleries([[ImageRef("a.jpg", 1, 1)], [ImageRef("a.jpg", 2, 1)]])
    with pytest.raises(ValueError, match="regdb_split"):
        protocols.gallery_set(sysu_root, "regdb")


def test_id_file_parsing(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("3,1, 2,\n4,5\n")
    assert protocols.read_id_file(path) == [3, 1, 2]  # first line only, trailing comma tolerated
    path.write_text("3,x1\n")
    with pytest.raises(ValueError, match=r"ids.txt: 'x1' is not an integer"):
        protocols.read_id_file(path)
    path.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        protocols.read_id_file(path)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        protocols.read_id_file(tmp_path / "nope.txt")
