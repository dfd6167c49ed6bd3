"""Resumable progress files and atomic writes: what survives a killed run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tvilfm_jax.data.text import atomic_files
from tvilfm_jax.generators.progress import ProgressStore, pending_chunks


def test_periodic_flush_survives_a_kill(tmp_path):
    path = str(tmp_path / "state" / "captions.json")
    store = ProgressStore(path, {"stage": "caption"}, flush_every=2, flush_seconds=1e9)
    for i in range(5):
        store.add(f"k{i}", f"text {i}")
    # No close: as if the process were killed now. Items 0-3 were flushed, item 4 is lost.
    reopened = ProgressStore(path, {"stage": "caption"})
    assert reopened.items() == {f"k{i}": f"text {i}" for i in range(4)}
    with reopened:
        reopened.add("k4", {"description": "x", "aug_description": "y"})
    assert ProgressStore(path, {"stage": "caption"})["k4"] == {"description": "x", "aug_description": "y"}
    assert os.listdir(tmp_path / "state") == ["captions.json"]  # no temporary files left


def test_exceptions_flush_what_was_finished(tmp_path):
    path = str(tmp_path / "s.json")
    with pytest.raises(RuntimeError), ProgressStore(path, {}, flush_every=100) as store:
        store.add("a", "1")
        raise RuntimeError("model crashed")
    assert ProgressStore(path, {}).items() == {"a": "1"}


def test_reopening_with_other_settings_or_a_broken_file_is_refused(tmp_path):
    path = str(tmp_path / "s.json")
    with ProgressStore(path, {"seed": 0, "temperature": 0.7}) as store:
        store.add("a", "1")
    with pytest.raises(ValueError, match=r"s\.json: was produced with different settings \(seed: 0 -> 1\)"):
        ProgressStore(path, {"seed": 1, "temperature": 0.7})
    with open(path, "w") as f:
        f.write('{"meta": {}, "items": {"a": ')  # what a non-atomic writer could leave behind
    with pytest.raises(ValueError, match=r"s\.json: not a valid progress file .*delete it to start over"):
        ProgressStore(path, {})
    with open(path, "w") as f:
        json.dump(["a"], f)
    with pytest.raises(ValueError, match=r"expected \{'meta'"):
        ProgressStore(path, {})


def test_pending_chunks_are_cut_from_the_full_list():
    keys = [f"k{i}" for i in range(7)]
    done = {"k0", "k1", "k2", "k4"}
    assert list(pending_chunks(keys, done.__contains__, 3)) == [["k3", "k5"], ["k6"]]
    assert list(pending_chunks(keys, lambda k: False, 3)) == [["k0", "k1", "k2"], ["k3", "k4", "k5"], ["k6"]]
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        list(pending_chunks(keys, done.__contains__, 0))


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = str(tmp_path / "a.npy")
    atomic_files.write_npy(path, np.array(["old"]))
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # shareable, unlike mkstemp's 0600

    def half_then_fail(f):
        f.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_files._write_atomically(path, half_then_fail)
    assert np.load(path).tolist() == ["old"]
    assert os.listdir(tmp_path) == ["a.npy"]
    with pytest.raises(TypeError, match="refusing to write an object array"):
        atomic_files.write_npy(path, np.array(["a", None], dtype=object))
