"""Scoring every protocol, text source, TTA variant, trial and query modality.

`prepare_texts` fixes the query captions once per test set (they do not depend on the model);
`score` takes the features of one model (`features.FeatureExtractor`), builds the embeddings
and score matrices, and runs the metrics (`eval.metrics.evaluate`).

Score matrices, with g = gallery embeddings of the trial, q = query embeddings (rows [N, D],
L2-normalised, so every product is a cosine):

  IR->RGB   ir: q_ir . g_ir^T        (backup necks on both sides in stage 2, docs/original.md §6.2)
            text: q_T . g^T, fusion: q_F . g^T
            mer: q_F . g^T + q_I . g^T + q_T . g^T   (q_I through the CURRENT neck, docs/original.md §6.3)
  RGB->IR   S = g . q^T per modality (the IR-side embeddings become the gallery, docs/original.md §6.5);
            no MER. IR with backups: the "clean" recipe uses the backup necks on both sides;
            "paper" pairs the current-neck RGB features with the backup-neck IR features, as
            the original's overwritten matrix does (docs/original.md §6.5, §10 item 15).

With `eval.rerank` every matrix is replaced by its k-reciprocal re-ranking (`eval.rerank`), from
the query-gallery, query-query and gallery-gallery cosines of the same two sets of rows (for
RGB->IR the RGB rows are the queries). MER, a sum of three cosines, has no single embedding
pair; it is re-ranked on the unit vector (q_F + q_I + q_T) / |q_F + q_I + q_T| against g, whose
cosine with each gallery item is the MER score divided by a per-query constant, so its
un-re-ranked ranking is MER's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tvilfm_jax.eval import metrics, rerank, texts
from tvilfm_jax.eval.features import FeatureExtractor, ImageFeatures
from tvilfm_jax.eval.settings import EvalSettings, Protocol
from tvilfm_jax.eval.testset import TestSet

TEXT_MODALITIES = ("text", "fusion", "mer")


@dataclasses.dataclass(frozen=True)
class Condition:
    """One protocol under one text source and TTA variant: a table of the report."""

    protocol: Protocol
    text_source: str
    flip: bool

    @property
    def key(self) -> str:
        return f"{self.protocol.name}/{self.text_source}/{'flip' if self.flip else 'noflip'}"

    @property
    def label(self) -> str:
        """The protocol named in full, as printed next to every number."""
        return f"{self.protocol.title} | text: {self.text_source} | TTA: {'flip' if self.flip else 'none'}"


@dataclasses.dataclass(frozen=True)
class ModalityResult:
    """Metrics of one modality under one condition: per trial and their mean.

    metric: the `metrics.evaluate` protocol used; trials: trial ids (RegDB: the split);
    per_trial: `metrics.evaluate` dicts; mean: `metrics.average_results` of them.
    """

    modality: str
    metric: str
    trials: tuple[int, ...]
    per_trial: tuple[Mapping[str, Any], ...]
    mean: Mapping[str, Any]


#: How a ranking grid picks its queries: evenly over the query set, or those of lowest AP.
SELECTIONS = ("spread", "worst")


@dataclasses.dataclass(frozen=True)
class RankingSample:
    """Top-k retrievals of a few queries, for the ranking grid (direction IR->RGB).

    selection: one of SELECTIONS; query_index [n] into test.query, gallery_index [n, k] into
    test.gallery, matches bool [n, k], scores [n, k]; ap [n]: each query's AP (fraction) in this
    trial under the protocol's metric, NaN for a query without a true match; texts: the query
    text each query was given.
    """

    condition: Condition
    modality: str
    trial: int
    selection: str
    query_index: np.ndarray
    gallery_index: np.ndarray
    matches: np.ndarray
    scores: np.ndarray
    ap: np.ndarray
    texts: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class PreparedTexts:
    """Query captions of every (source, mode, trial) needed, and the caption table they index.

    captions: the distinct captions (rows of the text feature table);
    rows[(source, mode, trial)] = (rgb rows [Q], ir rows [Q]); assignments: the QueryTexts.
    Sources that do not depend on the trial are stored under (source, None, None).
    """

    captions: tuple[str, ...]
    rows: Mapping[tuple, tuple[np.ndarray, np.ndarray]]
    assignments: Mapping[tuple, texts.QueryTexts]

    def lookup(self, source: str, mode: str, trial: int) -> tuple[tuple, texts.QueryTexts]:
        key = (source, mode, trial) if texts.depends_on_trial(source) else (source, None, None)
        return key, self.assignments[key]


def protocol_trials(test: TestSet, protocol: Protocol, settings: EvalSettings) -> tuple[int, ...]:
    """Trials of `protocol` to score: RegDB its one split; SYSU/LLCM `settings.trials` or all."""
    available = test.trials(protocol.mode)
    if test.layout == "regdb" or settings.trials is None:
        return available
    missing = [t for t in settings.trials if t not in available]
    if missing:
        raise ValueError(f"{test.source}: eval.trials {missing} are not among the {protocol.mode!r} "
                         f"gallery trials of the records {list(available)}")
    return settings.trials


def prepare_texts(test: TestSet, settings: EvalSettings) -> PreparedTexts | None:
    """Draws the query texts of every text source for every trial (None: no text modality)."""
    if not any(m in TEXT_MODALITIES for m in settings.modalities):
        return None
    assignments: dict[tuple, texts.QueryTexts] = {}
    for source in settings.text_sources:
        if not texts.depends_on_trial(source):
            assignments[(source, None, None)] = texts.query_texts(test, source, seed=settings.seed)
            continue
        for protocol in settings.protocols_for(test.layout):
            for trial in protocol_trials(test, protocol, settings):
                key = (source, protocol.mode, trial)
                if key not in assignments:
                    assignments[key] = texts.query_texts(test, source, mode=protocol.mode, trial=trial,
                                                         seed=settings.seed)
    captions = texts.unique_captions(list(assignments.values()))
    row = {c: i for i, c in enumerate(captions)}
    return PreparedTexts(captions, {k: texts.caption_rows(a, row) for k, a in assignments.items()}, assignments)


@dataclasses.dataclass(frozen=True)
class ModelFeatures:
    """Pre-neck features of one model over a test set (see `extract`)."""

    query: ImageFeatures
    gallery: ImageFeatures
    captions: jax.Array | None


def extract(extractor: FeatureExtractor, variables, test: TestSet, settings: EvalSettings,
            prepared: PreparedTexts | None) -> ModelFeatures:
    """Every query image, gallery image and needed caption through the network once."""
    flip = any(settings.flip)
    gallery = extractor.image_features(variables, test.gallery.images, "rgb", flip=flip,
                                       desc=f"{test.name} gallery (RGB)")
    query = extractor.image_features(variables, test.query.images, "ir", flip=flip, desc=f"{test.name} queries (IR)")
    captions = None if prepared is None else extractor.text_features(variables, prepared.captions)
    return ModelFeatures(query, gallery, captions)


# Full fp32 (not TF32 on GPUs): near-tied cosines decide ranks.
_matmul_t = jax.jit(lambda a, b: jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST))
_sum3 = jax.jit(lambda a, b, c: a + b + c)
_unit_sum3 = jax.jit(lambda a, b, c: (a + b + c) / jnp.linalg.norm(a + b + c, axis=1, keepdims=True))


def _scored_pairs(protocol: Protocol, modalities: Sequence[str], recipe: str, g: Mapping[str, jax.Array],
                  q: Mapping[str, jax.Array]) -> dict[str, tuple[jax.Array, jax.Array]]:
    """(query-side rows [Q', D], gallery-side rows [G', D]) behind the score matrix of each
    modality but MER, in the protocol's roles (module docstring)."""
    if protocol.ir_to_rgb:
        return {m: (q["ir"], g["ir"]) if m == "ir" else (q[m], g["current"]) for m in modalities if m != "mer"}
    rgb_ir = g["current"] if recipe == "paper" else g["ir"]
    return {m: (rgb_ir, q["ir"]) if m == "ir" else (g["current"], q[m]) for m in modalities}


def _score_trial(protocol: Protocol, modalities: Sequence[str], recipe: str, g: Mapping[str, jax.Array],
                 q: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Score matrices [num queries, num gallery] of one trial (see module docstring)."""
    out = {m: _matmul_t(a, b) for m, (a, b) in _scored_pairs(protocol, modalities, recipe, g, q).items()}
    if "mer" in modalities:
        parts = {k: out[k] if k in out else _matmul_t(q[k], g["current"]) for k in ("fusion", "text")}
        out["mer"] = _sum3(parts["fusion"], _matmul_t(q["ir_current"], g["current"]), parts["text"])
    return out


def _reranked_trial(protocol: Protocol, modalities: Sequence[str], settings: EvalSettings,
                    g: Mapping[str, jax.Array], q: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """The k-reciprocal re-ranked scores [num queries, num gallery] of one trial (module
    docstring; MER on the unit sum of its three query embeddings against the current gallery)."""
    pairs = _scored_pairs(protocol, modalities, settings.recipe, g, q)
    if "mer" in modalities:
        pairs["mer"] = (_unit_sum3(q["fusion"], q["ir_current"], q["text"]), g["current"])
    return {m: rerank.rerank(_matmul_t(a, b), _matmul_t(a, a), _matmul_t(b, b), settings.rerank_k1,
                             settings.rerank_k2, settings.rerank_lambda) for m, (a, b) in pairs.items()}


def conditions(test: TestSet, settings: EvalSettings) -> tuple[Condition, ...]:
    """Every condition to report, in report order: flip variant, then text source, then protocol."""
    return tuple(Condition(protocol, source, flip)
                 for flip in settings.flip
                 for source in settings.text_sources
                 for protocol in settings.protocols_for(test.layout))


@dataclasses.dataclass(frozen=True)
class Job:
    """One trial of one condition: its gallery scored against its queries in every modality."""

    condition: Condition
    trial: int


@dataclasses.dataclass(frozen=True)
class _FlipEmbeddings:
    """What every job of one TTA variant shares: gallery embeddings {"current", "ir"} of the whole
    gallery pool, the query features, and (when no text modality is scored) the query
    embeddings with placeholder captions, of which only "ir" is read."""

    flip: bool
    gallery: Mapping[str, jax.Array]
    query: ImageFeatures
    image_only: Mapping[str, jax.Array] | None


def _flip_embeddings(extractor: FeatureExtractor, variables, feats: ModelFeatures, flip: bool,
                     prepared: PreparedTexts | None) -> _FlipEmbeddings:
    query = feats.query.with_tta(flip)
    image_only = None
    if prepared is None:
        zeros = jnp.zeros_like(query.current)
        image_only = extractor.query_embeddings(variables, query, zeros, zeros)
    gallery = extractor.gallery_embeddings(variables, feats.gallery.with_tta(flip))
    return _FlipEmbeddings(flip, gallery, query, image_only)


def _query_embeddings(extractor: FeatureExtractor, variables, shared: _FlipEmbeddings,
                      prepared: PreparedTexts | None, captions: jax.Array | None,
                      job: Job) -> tuple[Mapping[str, jax.Array], texts.QueryTexts | None]:
    """The query embeddings of one job and the texts the queries were given (None: no text)."""
    if prepared is None:
        return shared.image_only, None
    key, assigned = prepared.lookup(job.condition.text_source, job.condition.protocol.mode, job.trial)
    rgb_rows, ir_rows = prepared.rows[key]
    return extractor.query_embeddings(variables, shared.query, captions[rgb_rows], captions[ir_rows]), assigned


def _evaluate(protocol: Protocol, modality: str, sim: jax.Array, test: TestSet, idx: np.ndarray,
              settings: EvalSettings) -> tuple[dict[str, Any], np.ndarray]:
    """`metrics.evaluate` of one score matrix, with queries and gallery in the protocol's roles,
    and the per-query AP behind it (float64 [rows of sim], NaN where a query has no true match)."""
    metric = protocol.metric_for(modality, settings.recipe)
    ir = (test.query.pids, test.query.cams)
    rgb = (test.gallery.pids[idx], test.gallery.cams[idx])
    (q_pids, q_cams), (g_pids, g_cams) = (ir, rgb) if protocol.ir_to_rgb else (rgb, ir)
    ranks, ap, inp, valid = metrics.per_query_stats(sim, q_pids, g_pids, q_cams, g_cams, metric)
    return metrics.summarize(ranks, ap, inp, valid, settings.max_rank), np.where(valid, ap, np.nan)


def score(extractor: FeatureExtractor, variables, test: TestSet, settings: EvalSettings,
          prepared: PreparedTexts | None, feats: ModelFeatures,
          ranking: bool = False) -> tuple[dict[str, dict[str, ModalityResult]], tuple[RankingSample, ...]]:
    """Metrics of every condition: {condition key: {modality: ModalityResult}}, in settings order,
    plus (if `ranking`) the top-k retrievals of a few queries under the first IR->RGB condition
    (`_ranking_samples`; empty without `ranking` or an IR->RGB condition).

    Every (condition, trial) is one `Job`, run in one loop; jobs come flip variant by flip
    variant, so each variant's gallery is embedded once.
    """
    conds = conditions(test, settings)
    trials = {c.key: protocol_trials(test, c.protocol, settings) for c in conds}
    jobs = [Job(c, trial) for c in conds for trial in trials[c.key]]
    per_trial = {c.key: {m: [] for m in c.protocol.modalities(settings.modalities)} for c in conds}
    shared, samples = None, ()
    for job in jobs:
        protocol = job.condition.protocol
        if shared is None or shared.flip != job.condition.flip:
            shared = _flip_embeddings(extractor, variables, feats, job.condition.flip, prepared)
        q, assigned = _query_embeddings(extractor, variables, shared, prepared, feats.captions, job)
        idx = test.gallery_indices(protocol.mode, job.trial)
        g = {k: v[idx] for k, v in shared.gallery.items()}
        modalities = protocol.modalities(settings.modalities)
        if settings.rerank:
            sims = _reranked_trial(protocol, modalities, settings, g, q)
        else:
            sims = _score_trial(protocol, modalities, settings.recipe, g, q)
        query_ap = {}
        for m, sim in sims.items():
            result, query_ap[m] = _evaluate(protocol, m, sim, test, idx, settings)
            per_trial[job.condition.key][m].append(result)
        if ranking and not samples and protocol.ir_to_rgb:
            samples = _ranking_samples(job.condition, job.trial, sims, query_ap, idx, test, assigned, settings)
    results = {
        c.key: {m: ModalityResult(m, c.protocol.metric_for(m, settings.recipe), trials[c.key], tuple(rs),
                                  metrics.average_results(rs))
                for m, rs in per_trial[c.key].items()}
        for c in conds
    }
    return results, samples


def _ranking_samples(condition: Condition, trial: int, sims: Mapping[str, jax.Array],
                     query_ap: Mapping[str, np.ndarray], idx: np.ndarray, test: TestSet,
                     assigned: texts.QueryTexts | None, settings: EvalSettings) -> tuple[RankingSample, ...]:
    """The ranking grids of one IR->RGB job, in MER if scored (else Fusion, Text, IR):
    `settings.ranking_queries` queries spread over the query set, then the `settings.ranking_worst`
    queries of lowest AP (ties by query index; queries without a true match have no AP and are
    left out); query_ap: `_evaluate`'s per-query AP of each modality."""
    modality = next(m for m in ("mer", "fusion", "text", "ir") if m in sims)
    ap = query_ap[modality]
    n = min(settings.ranking_queries, len(test.query))
    spread = np.unique(np.linspace(0, len(test.query) - 1, n).round().astype(int))
    scored = np.flatnonzero(~np.isnan(ap))
    worst = scored[np.argsort(ap[scored], kind="stable")][:settings.ranking_worst]
    sim = np.asarray(sims[modality])
    return tuple(_ranking_sample(condition, modality, trial, selection, chosen, sim, ap, idx, test, assigned,
                                 settings)
                 for selection, chosen in zip(SELECTIONS, (spread, worst)) if chosen.size)


def _ranking_sample(condition: Condition, modality: str, trial: int, selection: str, chosen: np.ndarray,
                    sim: np.ndarray, ap: np.ndarray, idx: np.ndarray, test: TestSet,
                    assigned: texts.QueryTexts | None, settings: EvalSettings) -> RankingSample:
    """Top-k of the `chosen` queries [n] from one trial's scores sim [Q, G] and AP [Q], among the
    gallery images the metric ranks them against (e.g. not cam 2 for a SYSU cam-3 query)."""
    keep = metrics.kept(test.query.pids[chosen], test.gallery.pids[idx], test.query.cams[chosen],
                        test.gallery.cams[idx], condition.protocol.metric_for(modality, settings.recipe))
    sim = np.where(keep, sim[chosen], -np.inf)
    k = min(settings.ranking_top_k, int(keep.sum(axis=1).min()))
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    gallery_index = idx[order]
    matches = test.gallery.pids[gallery_index] == test.query.pids[chosen][:, None]
    if assigned is None:
        shown = ("(no text)",) * len(chosen)
    else:
        shown = tuple(f"text: {assigned.rgb[i]}  |  own IR caption: {assigned.ir[i]}" for i in chosen)
    return RankingSample(condition, modality, trial, selection, chosen, gallery_index, matches,
                         np.take_along_axis(sim, order, axis=1), ap[chosen], shown)
