"""Figures for evaluation reports: CMC curves and ranking grids, written as PNG files (or as
pixels, for TensorBoard).

Matplotlib is driven through `Figure` + the Agg canvas directly (no pyplot), so nothing here
touches global backend state or needs a display.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MATCH_RGB = (0, 170, 0)
NON_MATCH_RGB = (220, 0, 0)
# Frames of gallery images whose identity is unknown (a search without the query's pid).
UNKNOWN_RGB = (150, 150, 150)


def plot_cmc(
    curves: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    title: str = "CMC",
    max_rank: int | None = None,
) -> str:
    """Writes CMC curves (one line per query modality) to a PNG.

    Args:
      curves: name -> CMC [R] as fractions (e.g. `evaluate(...)["cmc"]`).
      path: output .png path; parent folders are created.
      title: figure title.
      max_rank: ranks shown (default: the longest curve).
    Returns:
      the path written, as a string.
    """
    return _save(cmc_figure(curves, title=title, max_rank=max_rank), path)


def cmc_figure(curves: Mapping[str, Any], *, title: str = "CMC", max_rank: int | None = None) -> Figure:
    """The figure `plot_cmc` writes (same arguments), e.g. for `figure_pixels`."""
    if not curves:
        raise ValueError("plot_cmc needs at least one curve")
    arrays = {}
    for name, cmc in curves.items():
        cmc = np.asarray(cmc, np.float64)
        if cmc.ndim != 1 or cmc.size == 0:
            raise ValueError(f"curve {name!r} must be a non-empty 1-D CMC, got shape {cmc.shape}")
        if np.any((cmc < 0) | (cmc > 1)) or np.any(np.diff(cmc) < 0):
            raise ValueError(f"curve {name!r} must be non-decreasing fractions in [0, 1]")
        arrays[name] = cmc
    shown = max_rank or max(c.size for c in arrays.values())

    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, cmc in arrays.items():
        ranks = np.arange(1, min(shown, cmc.size) + 1)
        ax.plot(
            ranks,
            100 * cmc[: ranks.size],
            marker="o",
            markersize=3,
            label=f"{name} (R1 {100 * cmc[0]:.1f})",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(1, shown)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def figure_pixels(fig: Figure) -> np.ndarray:
    """uint8 [H, W, 3]: the figure rendered by its Agg canvas (as its PNG would show it)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def ranking_grid(
    query_image: Any,
    query_text: str | Sequence[str],
    gallery_images: Any,
    gallery_match_flags: Any,
    path: str | os.PathLike,
    *,
    top_k: int = 10,
    gallery_scores: Any = None,
    query_titles: Sequence[str] | None = None,
    border: int = 6,
    text_width: int = 110,
) -> str:
    """Writes a retrieval grid: per query row, the query image and its text, then the top-k
    gallery images framed green (true match) or red (non-match); grey where
    `gallery_match_flags` is None (identities unknown).

    Accepts one query or a batch of N queries:
      query_image [H, W, 3] / [H, W] or [N, H, W, 3] / [N, H, W] (uint8, or floats in [0, 1]);
      query_text str or N strings;
      gallery_images [K, h, w, 3] or [N, K, h, w, 3], ranked best first (K >= top_k is cut);
      gallery_match_flags bool [K] or [N, K], or None;
      gallery_scores optional [K] or [N, K], printed above each gallery image.
    Returns:
      the path written, as a string.
    """
    q_imgs = _as_uint8(query_image, "query_image")
    g_imgs = _as_uint8(gallery_images, "gallery_images")
    known = gallery_match_flags is not None
    flags = np.asarray(gallery_match_flags if known else np.zeros(g_imgs.shape[:-3], bool)).astype(bool)
    single = isinstance(query_text, str)
    if single:
        q_imgs, g_imgs, flags, texts = q_imgs[None], g_imgs[None], flags[None], [query_text]
        scores = None if gallery_scores is None else np.asarray(gallery_scores)[None]
    else:
        texts = list(query_text)
        scores = None if gallery_scores is None else np.asarray(gallery_scores)
    num_q = len(texts)
    if q_imgs.shape[0] != num_q or g_imgs.shape[0] != num_q or flags.shape[0] != num_q:
        raise ValueError(
            f"ranking_grid: {num_q} query texts but query_image {q_imgs.shape[:1]}, "
            f"gallery_images {g_imgs.shape[:1]}, gallery_match_flags {flags.shape[:1]} queries"
        )
    if q_imgs.ndim != 4 or g_imgs.ndim != 5:
        raise ValueError(
            "ranking_grid: expected query_image [H, W(, C)] per query and gallery_images "
            f"[K, H, W(, C)] per query, got {q_imgs.shape[1:]} and {g_imgs.shape[1:]}"
        )
    k = min(top_k, g_imgs.shape[1])
    if flags.shape[1] < k:
        raise ValueError(f"gallery_match_flags has {flags.shape[1]} entries per query, need {k}")
    if scores is not None and scores.shape[:2] != (num_q, g_imgs.shape[1]):
        raise ValueError(
            f"gallery_scores must be [N, K] = {(num_q, g_imgs.shape[1])}, got {scores.shape}"
        )
    if query_titles is not None and len(query_titles) != num_q:
        raise ValueError(f"query_titles has {len(query_titles)} entries for {num_q} queries")

    wrapped = [textwrap.fill(t, text_width) or "(no text)" for t in texts]
    text_lines = max(w.count("\n") + 1 for w in wrapped)
    cols = 1 + k
    img_h = 2.0  # inches per image row; person crops are 2:1
    text_h = 0.18 * text_lines + 0.1
    fig_h = num_q * (img_h + text_h + 0.3) + 0.25  # + room for a two-line title on top
    fig = Figure(figsize=(1.05 * cols + 0.2, fig_h), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        2 * num_q,
        cols,
        height_ratios=[img_h, text_h] * num_q,
        wspace=0.08,
        hspace=0.25,
        left=0.01,
        right=0.99,
        top=1 - 0.45 / fig_h,
        bottom=0.02,
    )
    for i in range(num_q):
        ax = fig.add_subplot(grid[2 * i, 0])
        _show(ax, _frame(q_imgs[i], (90, 90, 90), border))
        ax.set_title(query_titles[i] if query_titles else "query", fontsize=8)
        for j in range(k):
            ax = fig.add_subplot(grid[2 * i, 1 + j])
            colour = (MATCH_RGB if flags[i, j] else NON_MATCH_RGB) if known else UNKNOWN_RGB
            _show(ax, _frame(g_imgs[i, j], colour, border))
            label = f"{j + 1}" if scores is None else f"{j + 1}: {float(scores[i, j]):.3f}"
            ax.set_title(label, fontsize=7)
        ax = fig.add_subplot(grid[2 * i + 1, :])
        ax.axis("off")
        ax.text(0.0, 1.0, wrapped[i], fontsize=7, va="top", ha="left", transform=ax.transAxes)
    return _save(fig, path)


def _as_uint8(images: Any, name: str) -> np.ndarray:
    """uint8 array with a trailing RGB channel axis (grayscale / 1-channel are repeated)."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{name} must be uint8 or float in [0, 1], got dtype {arr.dtype}")
        if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1):
            raise ValueError(
                f"{name}: float images must lie in [0, 1] (normalised images "
                "must be mapped back first)"
            )
        arr = np.round(arr * 255).astype(np.uint8)
    if arr.shape[-1] == 3:
        return arr
    if arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    # No channel axis: grayscale, e.g. a single-channel IR image.
    return np.repeat(arr[..., None], 3, axis=-1)


def _frame(img: np.ndarray, colour: tuple[int, int, int], width: int) -> np.ndarray:
    """[H, W, 3] -> [H + 2w, W + 2w, 3] with a solid border."""
    out = np.empty((img.shape[0] + 2 * width, img.shape[1] + 2 * width, 3), np.uint8)
    out[...] = colour
    out[width : width + img.shape[0], width : width + img.shape[1]] = img
    return out


def _show(ax, img: np.ndarray) -> None:
    ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _save(fig: Figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png")
    return path
