"""Figures: files are written, are valid PNGs of sensible size, and show what they claim."""

import numpy as np
import pytest
from PIL import Image

from tvilfm_jax.viz import MATCH_RGB, NON_MATCH_RGB, UNKNOWN_RGB, plot_cmc, ranking_grid


def _png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = Image.open(path)
    img.load()
    return np.asarray(img.convert("RGB"))


def _has_colour(img, rgb, min_pixels):
    return int(np.all(img == np.array(rgb, np.uint8), axis=-1).sum()) >= min_pixels


def test_plot_cmc_writes_png(tmp_path):
    ranks = np.arange(1, 21)
    curves = {"IR": 1 - 0.6 * 0.9**ranks, "Fusion": 1 - 0.4 * 0.8**ranks}
    out = plot_cmc(curves, tmp_path / "sub" / "cmc.png", title="SYSU all-search")
    img = _png(out)
    assert img.shape == (450, 600, 3)
    assert img.std() > 10  # not a blank canvas


def test_plot_cmc_rejects_bad_curves(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        plot_cmc({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="'IR'"):
        plot_cmc({"IR": [0.5, 0.4]}, tmp_path / "x.png")  # decreasing: not a CMC
    with pytest.raises(ValueError, match="'T'"):
        plot_cmc({"T": [50.0, 80.0]}, tmp_path / "x.png")  # percentages, not fractions


def test_ranking_grid_single_query_borders(tmp_path):
    rng = np.random.default_rng(0)
    # Images in muted tones, so pure green / red pixels can only come from the borders.
    query = rng.integers(60, 120, (48, 24), dtype=np.uint8)  # single-channel IR
    gallery = rng.integers(60, 120, (12, 48, 24, 3), dtype=np.uint8)
    flags = np.zeros(12, bool)
    flags[[1, 4]] = True
    out = ranking_grid(
        query,
        "a man in a dark jacket and jeans " * 8,
        gallery,
        flags,
        tmp_path / "grid.png",
        gallery_scores=np.linspace(0.9, 0.3, 12),
    )
    img = _png(out)
    h, w, _ = img.shape
    assert w > 2 * h > 200  # one row of 11 person crops
    assert _has_colour(img, MATCH_RGB, 100) and _has_colour(img, NON_MATCH_RGB, 100)
    # Without matches there is no green at all.
    out = ranking_grid(query, "x", gallery, np.zeros(12, bool), tmp_path / "none.png")
    assert not _has_colour(_png(out), MATCH_RGB, 1)
    # Identities unknown (a search without the query's pid): grey frames only.
    img = _png(ranking_grid(query, "x", gallery, None, tmp_path / "unknown.png"))
    assert _has_colour(img, UNKNOWN_RGB, 100)
    assert not _has_colour(img, MATCH_RGB, 1) and not _has_colour(img, NON_MATCH_RGB, 1)


def test_ranking_grid_batch_of_queries(tmp_path):
    rng = np.random.default_rng(1)
    queries = rng.random((3, 64, 32, 3))  # floats in [0, 1]
    gallery = rng.integers(0, 255, (3, 10, 64, 32, 3), dtype=np.uint8)
    flags = rng.random((3, 10)) < 0.3
    out = ranking_grid(
        queries,
        ["one", "two", "three"],
        gallery,
        flags,
        tmp_path / "b.png",
        query_titles=["q0", "q1", "q2"],
    )
    one = _png(ranking_grid(queries[0], "one", gallery[0], flags[0], tmp_path / "a.png"))
    img = _png(out)
    assert img.shape[1] == one.shape[1] and img.shape[0] > 2.5 * one.shape[0]


def test_ranking_grid_rejects_bad_input(tmp_path):
    gallery = np.zeros((10, 8, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="query_image"):
        ranking_grid(np.full((8, 4, 3), 2.0), "t", gallery, np.ones(10), tmp_path / "x.png")
    with pytest.raises(ValueError, match="gallery_match_flags"):
        ranking_grid(np.zeros((8, 4, 3), np.uint8), "t", gallery, np.ones(3), tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 query texts"):
        ranking_grid(
            np.zeros((3, 8, 4, 3), np.uint8),
            ["a", "b"],
            gallery[None].repeat(3, 0),
            np.ones((3, 10)),
            tmp_path / "x.png",
        )
