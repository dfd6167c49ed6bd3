"""Query text sources (tvilfm_jax.eval.texts) and the evaluator's test records (eval.testset)."""

from __future__ import annotations

import numpy as np
import pytest

from tvilfm_jax.data.synthetic import write_tree
from tvilfm_jax.eval import scoring, texts
from tvilfm_jax.eval.settings import EvalSettings
from tvilfm_jax.eval.testset import TestDataError, from_layout, from_records

SMALL = {"num_train_ids": 2, "num_test_ids": 4, "image_size": (48, 24)}


@pytest.fixture(scope="module")
def llcm(tmp_path_factory):
    root = tmp_path_factory.mktemp("llcm")
    write_tree(root, "llcm", seed=5, images_per_cam=2, **SMALL)
    return from_layout(root, "llcm", synthetic=True)


@pytest.fixture(scope="module")
def regdb(tmp_path_factory):
    root = tmp_path_factory.mktemp("regdb")
    write_tree(root, "regdb", seed=5, images_per_id=2, num_trials=1, **SMALL)
    return from_layout(root, "regdb", trial=1, synthetic=True)


@pytest.fixture(scope="module")
def sysu(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysu")
    write_tree(root, "sysu", seed=5, num_val_ids=1, images_per_cam=2, **SMALL)
    return from_layout(root, "sysu", synthetic=True)


def _record(path, pid, cam, caption):
    return {"image": np.zeros((4, 2, 3), np.uint8), "pid": pid, "cam": cam, "path": path.encode(),
            "caption": caption.encode()}


def crafted(gallery_captions, galleries, id_map=None, layout="llcm"):
    """Two IR queries of pid 1 and 2, and a gallery pool of (pid, caption) pairs."""
    query = [_record("q/1", 1, 1, "ir one"), _record("q/2", 2, 1, "ir two")]
    gallery = [_record(f"g/{i}", pid, 1 + i % 3, cap) for i, (pid, cap) in enumerate(gallery_captions)]
    metadata = {"layout": layout, "trial": None, "galleries": galleries,
                "id_caption_map": id_map or {"1": ["red one", "blue one"], "2": ["green two"]}}
    return from_records(query, gallery, metadata, "crafted")


# --- the test records --------------------------------------------------------------------------


def test_layout_testset_matches_protocol_lists(llcm):
    from tvilfm_jax.data import protocols

    root = llcm.source.split(" tree ", 1)[1]
    assert llcm.query.paths == tuple(r.path for r in protocols.llcm_query(root))
    for trial in range(10):
        expected = [r.path for r in protocols.llcm_gallery(root, trial)]
        assert [llcm.gallery.paths[i] for i in llcm.gallery_indices("all", trial)] == expected
    assert all(llcm.query.captions) and all(llcm.gallery.captions)
    assert llcm.query.images[0].shape == (288, 144, 3) and llcm.query.images[0].dtype == np.uint8


def test_records_errors_name_the_problem():
    with pytest.raises(TestDataError, match="metadata has no 'galleries'"):
        from_records([_record("q", 1, 1, "")], [_record("g", 1, 1, "")], {"layout": "llcm"}, "src")
    with pytest.raises(TestDataError, match="src split 'query' record 0: missing field 'cam'"):
        from_records([{"pid": 1, "path": b"q", "caption": b""}], [_record("g", 1, 1, "")],
                             {"layout": "llcm", "galleries": {"all": {"0": [0]}}}, "src")
    with pytest.raises(TestDataError, match="indices of mode 'all' trial 0 must lie in 0..0"):
        crafted([(1, "a")], {"all": {"0": [3]}})
    with pytest.raises(TestDataError, match="id_caption_map key 'x' is not an integer pid"):
        crafted([(1, "a")], {"all": {"0": [0]}}, id_map={"x": ["a"]})


# --- paper ---------------------------------------------------------------------------------------


def test_paper_draws_from_the_ground_truth_identity_once(llcm):
    a = texts.query_texts(llcm, "paper", seed=0)
    assert a.ir == llcm.query.captions
    for pid, text in zip(llcm.query.pids, a.rgb):
        assert text in llcm.id_caption_map[str(pid)]
    # Seeded, and independent of the trial (the original draws once at dataset construction).
    assert texts.query_texts(llcm, "paper", seed=0, trial=7) == a
    draws = {texts.query_texts(llcm, "paper", seed=s).rgb for s in range(6)}
    assert len(draws) > 1


def test_paper_names_missing_identities():
    test = crafted([(1, "a"), (2, "b")], {"all": {"0": [0, 1]}}, id_map={"1": ["red one"]})
    with pytest.raises(texts.TextSourceError, match=r"no captions for query identities \[2\]"):
        texts.paper_texts(test)


# --- non_gallery ---------------------------------------------------------------------------------


def test_non_gallery_never_uses_a_caption_of_a_trial_gallery_image(llcm):
    gallery = llcm.gallery
    changed = False
    for trial in llcm.trials("all"):
        idx = llcm.gallery_indices("all", trial)
        a = texts.query_texts(llcm, "non_gallery", mode="all", trial=trial, seed=0)
        outside = np.setdiff1d(np.arange(len(gallery)), idx)
        for pid, text in zip(llcm.query.pids, a.rgb):
            shown = {gallery.captions[i] for i in idx if gallery.pids[i] == pid}
            assert text not in shown
            # ... and it is the caption of one of this identity's images outside the gallery.
            assert any(gallery.captions[i] == text and gallery.pids[i] == pid for i in outside)
        assert a.ir == llcm.query.captions
        changed |= a != texts.query_texts(llcm, "non_gallery", mode="all", trial=0, seed=0)
    assert changed  # drawn per trial


def test_non_gallery_excludes_equal_texts_and_reports_empty_pools():
    # pid 1: image 0 in the gallery says "red one"; image 2 outside says the same text; image 3 differs.
    pairs = [(1, "red one"), (2, "green two"), (1, "red one"), (1, "blue one"), (2, "green two")]
    test = crafted(pairs, {"all": {"0": [0, 1], "1": [2, 4]}})
    assert texts.non_gallery_pools(test, "all", 1) == {1: ("blue one",)}
    assert texts.non_gallery_pools(test, "all", 0) == {1: ("blue one",)}
    with pytest.raises(texts.TextSourceError, match=r"trial 0: 1 query identities .* pids \[2\]"):
        texts.non_gallery_texts(test, "all", 0)


def test_non_gallery_is_unavailable_on_regdb(regdb):
    with pytest.raises(texts.TextSourceError, match="unavailable on RegDB: the gallery of a split is its whole"):
        texts.query_texts(regdb, "non_gallery", mode="all", trial=1)
    # The claim behind the message: every visible test image is in the gallery.
    assert len(regdb.gallery_indices("all", 1)) == len(regdb.gallery)
    with pytest.raises(texts.TextSourceError, match="unavailable on RegDB"):
        scoring.prepare_texts(regdb, EvalSettings(text_sources=("paper", "non_gallery")))


def test_non_gallery_needs_gallery_captions(sysu):
    assert not sysu.gallery.has_captions
    with pytest.raises(texts.TextSourceError, match="released Text/ describes training images only"):
        texts.query_texts(sysu, "non_gallery", mode="indoor", trial=0)


# --- ir_only -------------------------------------------------------------------------------------


def test_ir_only_uses_no_identity_caption(llcm):
    a = texts.query_texts(llcm, "ir_only")
    assert a.rgb == a.ir == llcm.query.captions
    identity_texts = {c for caps in llcm.id_caption_map.values() for c in caps} | set(llcm.gallery.captions)
    assert not identity_texts & set(a.rgb)


def test_text_modalities_need_ir_captions():
    test = from_records([_record("q", 1, 1, "")], [_record("g", 1, 1, "a")],
                                {"layout": "llcm", "galleries": {"all": {"0": [0]}}, "id_caption_map": {"1": ["a"]}})
    with pytest.raises(texts.TextSourceError, match=r"1 of 1 queries have no IR caption .* modalities=\('ir',\)"):
        texts.query_texts(test, "ir_only")
    assert scoring.prepare_texts(test, EvalSettings(modalities=("ir",))) is None


def test_prepared_texts_index_one_caption_table(llcm):
    settings = EvalSettings(text_sources=("paper", "non_gallery", "ir_only"), trials=(0, 3))
    prepared = scoring.prepare_texts(llcm, settings)
    assert len(set(prepared.captions)) == len(prepared.captions)
    keys = set(prepared.assignments)
    assert keys == {("paper", None, None), ("ir_only", None, None),
                    ("non_gallery", "all", 0), ("non_gallery", "all", 3)}
    for key, assigned in prepared.assignments.items():
        rgb, ir = prepared.rows[key]
        assert [prepared.captions[i] for i in rgb] == list(assigned.rgb)
        assert [prepared.captions[i] for i in ir] == list(assigned.ir)
    with pytest.raises(ValueError, match=r"eval.trials \[11\] are not among"):
        scoring.prepare_texts(llcm, settings.replace(trials=(11,)))
