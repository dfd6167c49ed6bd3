"""Query texts at test time: which caption goes where the RGB caption goes (docs/original.md §5.3, §10.27).

An IR query x carries two texts: `rgb`, the colour description that the Text query and the
Fusion term `+T(.)` use, and `ir`, the query image's own IR BLIP caption, the SFF filter
`-T(.)`. The source of `rgb` decides what the benchmark measures:

paper        As the original: one caption drawn (seeded, once, the same for every trial) from
             id_caption_map[query pid], the unique RGB captions of the query's GROUND-TRUTH
             identity over all its RGB test images. The text therefore names the right person,
             and may describe the very gallery image to be found (on RegDB it always comes from
             a gallery image, docs/original.md §10 item 27). Not comparable with text-free methods.
non_gallery  Identity captions as in `paper`, but drawn only from RGB test images NOT in the
             gallery of the trial being scored, and never a text equal to the caption of one of
             that identity's gallery images of the trial. Drawn per (mode, trial) with its own
             seed. Still assumes a colour description of the person exists (a witness, another
             camera), but it cannot describe the gallery image itself. Pool: the RGB images the
             test records hold (the union of all trial galleries) with a caption of their own.
             Unavailable on RegDB (every visible test image is in the gallery) and wherever the
             gallery images have no captions of their own (SYSU-MM01's released Text/ describes
             training images only).
ir_only      No identity information at all: `rgb` is the query's own IR caption. Then
             Text  = L2(BN(T(ir caption))),
             Fusion (SFF) = L2(BN(f_IR + T(ir) - T(ir))) = L2(BN(f_IR)): the IR image feature
                    through the current neck, the text cancels exactly
                    (with "add" fusion: L2(BN(f_IR + T(ir caption)))),
             MER   = the sum of those three cosine scores (for SFF: 2 x IR-current + Text).
             IR    = unchanged (it never uses text).

The `ir` filter text is the query's own IR caption under every source. In the visible->IR
directions (RegDB v->t, LLCM v->i) the IR images become the gallery and carry the same texts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from tvilfm_jax.eval.testset import TestSet

TEXT_SOURCES = ("paper", "non_gallery", "ir_only")
DESCRIPTIONS = {
    "paper": "query text = an RGB caption of the query's ground-truth identity (as the original; "
             "may describe a gallery image)",
    "non_gallery": "query text = an RGB caption of the query's identity from an image outside this "
                   "trial's gallery",
    "ir_only": "query text = the query's own IR caption (no identity information): Text = L2(BN(T(IR caption))); "
               "SFF Fusion cancels to L2(BN(f_IR)) (the IR image through the current neck); "
               "MER = 2 x that IR score + the Text score",
}
# The draw streams of the sources, kept apart.
_STREAMS = {"paper": 0, "non_gallery": 1}
_MODE_IDS = {"all": 0, "indoor": 1}


class TextSourceError(ValueError):
    """A text source cannot be used with this test set; the message says why."""


@dataclasses.dataclass(frozen=True)
class QueryTexts:
    """Per query: `rgb` (Text / Fusion `+T`), `ir` (the SFF filter `-T`); `source` in TEXT_SOURCES."""

    source: str
    rgb: tuple[str, ...]
    ir: tuple[str, ...]


def depends_on_trial(source: str) -> bool:
    """Whether a source draws its texts per (mode, trial)."""
    _check_source(source)
    return source == "non_gallery"


def _check_source(source: str) -> None:
    if source not in TEXT_SOURCES:
        raise ValueError(f"text source must be one of {TEXT_SOURCES}, got {source!r}")


def _require_ir_captions(test: TestSet) -> tuple[str, ...]:
    missing = [i for i, c in enumerate(test.query.captions) if not c]
    if missing:
        raise TextSourceError(
            f"{test.source}: {len(missing)} of {len(test.query)} queries have no IR caption of their own "
            f"(e.g. {test.query.paths[missing[0]]}); the Text, Fusion and MER queries need them "
            "(Text/<captioner>_IR/caption_dict_*). Evaluate modalities=('ir',) only, or add the texts."
        )
    return test.query.captions


def _draw(pools: Sequence[Sequence[str]], rng: np.random.Generator) -> tuple[str, ...]:
    """One uniform draw per pool, in order (one `integers` call per query)."""
    return tuple(pool[int(rng.integers(len(pool)))] for pool in pools)


def paper_texts(test: TestSet, seed: int = 0) -> QueryTexts:
    """The original's choice: one caption of id_caption_map[pid] per query, drawn once."""
    ir = _require_ir_captions(test)
    pools, missing = [], set()
    for pid in test.query.pids:
        pool = test.id_caption_map.get(str(int(pid)), ())
        if not pool:
            missing.add(int(pid))
        pools.append(pool)
    if missing:
        raise TextSourceError(
            f"{test.source}: id_caption_map has no captions for query identities {sorted(missing)[:10]}"
            f"{' ...' if len(missing) > 10 else ''} (Text/<captioner>_RGB/id_caption_map_*.json)"
        )
    rng = np.random.default_rng([seed, _STREAMS["paper"]])
    return QueryTexts("paper", _draw(pools, rng), ir)


def non_gallery_pools(test: TestSet, mode: str, trial: int) -> dict[int, tuple[str, ...]]:
    """pid -> captions of its RGB images outside gallery (mode, trial), minus the texts of its
    gallery images of that trial; unique, in gallery-pool order."""
    if test.layout == "regdb":
        raise TextSourceError(
            f"{test.source}: text source 'non_gallery' is unavailable on RegDB: the gallery of a split "
            "is its whole visible test list (test_visible_<split>), so no RGB image of a query identity "
            "lies outside it. Use 'paper' (identity captions taken from the gallery images themselves) "
            "or 'ir_only'."
        )
    gallery = test.gallery
    if not gallery.has_captions:
        raise TextSourceError(
            f"{test.source}: text source 'non_gallery' needs each gallery RGB image's own caption, and "
            f"none of the {len(gallery)} gallery records has one"
            + (" (SYSU-MM01's released Text/ describes training images only)" if test.layout == "sysu" else "")
            + ". Use 'paper' or 'ir_only', or build the records with per-image RGB test captions."
        )
    in_gallery = np.zeros(len(gallery), bool)
    in_gallery[test.gallery_indices(mode, trial)] = True
    shown: dict[int, set[str]] = {}
    for i in np.flatnonzero(in_gallery):
        shown.setdefault(int(gallery.pids[i]), set()).add(gallery.captions[i])
    pools: dict[int, dict[str, None]] = {}
    for i in np.flatnonzero(~in_gallery):
        pid, caption = int(gallery.pids[i]), gallery.captions[i]
        if caption and caption not in shown.get(pid, ()):
            pools.setdefault(pid, {})[caption] = None
    return {pid: tuple(texts) for pid, texts in pools.items()}


def non_gallery_texts(test: TestSet, mode: str, trial: int, seed: int = 0) -> QueryTexts:
    """Identity captions from RGB images outside the (mode, trial) gallery, one per query."""
    pools = non_gallery_pools(test, mode, trial)
    ir = _require_ir_captions(test)
    missing = sorted({int(p) for p in test.query.pids} - pools.keys())
    if missing:
        raise TextSourceError(
            f"{test.source}: text source 'non_gallery', mode {mode!r} trial {trial}: {len(missing)} query "
            f"identities have no captioned RGB image outside this trial's gallery, e.g. pids {missing[:10]}; "
            "the records need more RGB test images per identity (or captions of them)."
        )
    rng = np.random.default_rng([seed, _STREAMS["non_gallery"], _MODE_IDS.get(mode, 2), trial])
    return QueryTexts("non_gallery", _draw([pools[int(p)] for p in test.query.pids], rng), ir)


def ir_only_texts(test: TestSet) -> QueryTexts:
    """The query's own IR caption in both places: no identity information."""
    ir = _require_ir_captions(test)
    return QueryTexts("ir_only", ir, ir)


def query_texts(test: TestSet, source: str, *, mode: str = "all", trial: int = 0, seed: int = 0) -> QueryTexts:
    """The texts of `source` (see the module docstring); mode/trial matter for non_gallery only."""
    _check_source(source)
    if source == "paper":
        return paper_texts(test, seed)
    if source == "non_gallery":
        return non_gallery_texts(test, mode, trial, seed)
    return ir_only_texts(test)


def unique_captions(texts: Sequence[QueryTexts]) -> tuple[str, ...]:
    """Every distinct caption of several assignments, sorted (the text feature table's rows)."""
    return tuple(sorted({c for t in texts for c in (*t.rgb, *t.ir)}))


def caption_rows(texts: QueryTexts, row: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, ir) int32 [Q] rows of each query's texts in a caption -> row table."""
    return (np.asarray([row[c] for c in texts.rgb], np.int32), np.asarray([row[c] for c in texts.ir], np.int32))
