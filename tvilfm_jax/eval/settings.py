"""What an evaluation runs: the protocols of each benchmark and the evaluator's settings.

Protocols (docs/original.md §6.4-6.6); "mode" selects the gallery set of the test records:

  sysu-all     SYSU-MM01 all-search, IR (cams 3, 6) -> RGB (cams 1, 2, 4, 5), single-shot,
               10 gallery trials, eval_sysu (cam3 queries drop cam2 gallery images).
  sysu-indoor  SYSU-MM01 indoor-search: the same queries, RGB cams 1, 2 only.
  regdb-t2v    RegDB thermal -> visible of one trained split, eval_regdb (no removal).
  regdb-v2t    RegDB visible -> thermal: S = G Q^T, the visible images query the IR-side
               embeddings (IR, Text, or Fusion "gallery"); MER is not defined there.
  llcm-i2v     LLCM NIR (cams 1, 2, 4-9) -> VIS, single-shot, 10 trials, eval_llcm (same pid
               AND same camera removed). The "paper" recipe scores the IR query with eval_sysu
               as the original does (docs/original.md §6.6: no same-camera removal for IR only).
  llcm-v2i     LLCM VIS -> NIR, which the original does not implement [AMBIGUOUS]: here the
               roles of llcm-i2v are swapped as in RegDB v->t (queries = that trial's sampled
               VIS gallery, gallery = every NIR query image with its texts), eval_llcm. This is
               NOT the LLCM paper's VIS->IR protocol (all VIS images query a sampled NIR
               gallery), whose sets the records do not hold; and under the "paper" text source
               every NIR gallery item carries a caption chosen by its ground-truth identity.

Query modalities: "ir" (IR image only; backup neck in stage 2), "text", "fusion" (SFF), "mer"
(fusion + ir-current + text scores). What the texts are depends on the text source
(`tvilfm_jax.eval.texts`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tvilfm_jax.data.datasets import DEFAULT_PROTOCOLS
from tvilfm_jax.data.images import IMAGE_SIZE, check_size
from tvilfm_jax.eval.texts import TEXT_SOURCES
from tvilfm_jax.sections import as_dict, unknown_keys
from tvilfm_jax.stages import RECIPES

MODALITIES = ("ir", "text", "fusion", "mer")
MODALITY_NAMES = {"ir": "IR", "text": "Text", "fusion": "Fusion", "mer": "MER"}
# Compute dtypes of evaluation (independent of the training compute dtype).
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One retrieval protocol.

    Attributes:
      name: e.g. "sysu-all"; layout: the dataset layout it applies to.
      mode: which gallery set of the test records ("all" / "indoor").
      ir_to_rgb: True when IR images query the RGB gallery; False for the swapped direction.
      metric: `eval.metrics.evaluate` protocol ("sysu", "regdb", "llcm").
      title: human-readable description used in every report line.
    """

    name: str
    layout: str
    mode: str
    ir_to_rgb: bool
    metric: str
    title: str

    def modalities(self, requested: Sequence[str]) -> tuple[str, ...]:
        """The requested modalities this protocol scores (MER only in the IR->RGB direction)."""
        return tuple(m for m in requested if m != "mer" or self.ir_to_rgb)

    def metric_for(self, modality: str, recipe: str) -> str:
        """The metric protocol of one modality (the "paper" recipe keeps the LLCM IR quirk)."""
        if recipe == "paper" and self.layout == "llcm" and self.ir_to_rgb and modality == "ir":
            return "sysu"
        return self.metric


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("sysu-all", "sysu", "all", True, "sysu", "SYSU-MM01 all-search IR->RGB"),
    Protocol("sysu-indoor", "sysu", "indoor", True, "sysu", "SYSU-MM01 indoor-search IR->RGB"),
    Protocol("regdb-t2v", "regdb", "all", True, "regdb", "RegDB thermal->visible"),
    Protocol("regdb-v2t", "regdb", "all", False, "regdb", "RegDB visible->thermal"),
    Protocol("llcm-i2v", "llcm", "all", True, "llcm", "LLCM NIR->VIS"),
    Protocol("llcm-v2i", "llcm", "all", False, "llcm", "LLCM VIS->NIR (swapped i2v sets)"),
)}
#: What each protocol is, in one paragraph (printed in reports).
PROTOCOL_NOTES = {
    "sysu-all": "IR queries of cams 3 and 6; single-shot RGB gallery of cams 1, 2, 4, 5 (one random image "
                "per id and camera), one gallery per trial; eval_sysu.",
    "sysu-indoor": "The same IR queries; single-shot RGB gallery of the indoor cams 1, 2; eval_sysu.",
    "regdb-t2v": "All thermal test images of the trained split query its visible test images; eval_regdb.",
    "regdb-v2t": "The visible test images query the thermal ones, S = G Q^T; the IR-side embeddings (IR, Text, "
                 "Fusion) form the gallery; no MER, as in the original; eval_regdb.",
    "llcm-i2v": "NIR queries of cams 1, 2, 4-9; single-shot VIS gallery of cams 1-9 per trial; eval_llcm (the "
                "'paper' recipe scores the IR query with eval_sysu, as the original).",
    "llcm-v2i": "[AMBIGUOUS] The original has no VIS->NIR test. Here the roles of llcm-i2v are swapped, as in "
                "RegDB v->t: each trial's sampled VIS gallery queries every NIR query image (with its texts); "
                "eval_llcm; no MER. This is not the LLCM paper's VIS->IR protocol (all VIS test images query a "
                "sampled NIR gallery), whose sets the records do not hold, and under the 'paper' text source "
                "every NIR gallery item carries a caption chosen by its ground-truth identity.",
}


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Evaluator settings (see `settings_from_config` for where a config sets them).

    Attributes:
      protocols: protocol names; empty = every protocol of the dataset's layout.
      modalities: query modalities among MODALITIES.
      text_sources: among TEXT_SOURCES.
      flip: TTA variants to report: (False,) = as the original, (False, True) = both.
      trials: gallery trials of SYSU/LLCM to score (None = all the records hold).
      batch_size: images / captions per jitted call (the original uses 128).
      image_size: (H, W) the network sees; must match training.
      seed: seed of the query-caption draws.
      max_rank: CMC length.
      recipe: "paper" keeps the original's evaluation quirks (LLCM IR metric, RegDB v->t IR
        with current-neck RGB features), "clean" fixes them.
      ranking_queries: queries shown in the ranking grid, spread evenly over the query set;
        ranking_worst: the queries of lowest AP shown in a second grid (0: none);
        ranking_top_k: gallery images each.
      dtype: compute dtype of the ResNet and text tower while embedding, whatever the model was
        trained in: "float32" (as the original, which evaluates without autocast) or "bfloat16"
        (faster on accelerators, ~1e-2 relative error in the embeddings). Scores are fp32.
      rerank: replace every score matrix by its k-reciprocal re-ranking (`eval.rerank`, Zhong et
        al. 2017) with rerank_k1, rerank_k2 and rerank_lambda (the paper's 20, 6, 0.3); off by
        default, as the original evaluates. Costs O((Q + G)^2) memory per score matrix.
    """

    protocols: tuple[str, ...] = ()
    modalities: tuple[str, ...] = MODALITIES
    text_sources: tuple[str, ...] = ("paper",)
    flip: tuple[bool, ...] = (False,)
    trials: tuple[int, ...] | None = None
    batch_size: int = 128
    dtype: str = "float32"
    image_size: tuple[int, int] = IMAGE_SIZE
    seed: int = 0
    max_rank: int = 20
    recipe: str = RECIPES[0]
    ranking_queries: int = 8
    ranking_worst: int = 8
    ranking_top_k: int = 10
    rerank: bool = False
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3

    def __post_init__(self):
        # Frozen: normalise the sequences (lists from JSON / ConfigDict) in place.
        object.__setattr__(self, "protocols", tuple(str(p) for p in self.protocols))
        object.__setattr__(self, "modalities", tuple(str(m) for m in self.modalities))
        object.__setattr__(self, "text_sources", tuple(str(s) for s in self.text_sources))
        object.__setattr__(self, "flip", tuple(bool(f) for f in self.flip))
        object.__setattr__(self, "image_size", check_size(self.image_size, "eval.image_size"))
        if self.trials is not None:
            object.__setattr__(self, "trials", tuple(int(t) for t in self.trials))
        _check_subset("eval.protocols", self.protocols, PROTOCOLS)
        _check_subset("eval.modalities", self.modalities, MODALITIES, nonempty=True)
        _check_subset("eval.text_sources", self.text_sources, TEXT_SOURCES, nonempty=True)
        if not self.flip or len(set(self.flip)) != len(self.flip):
            raise ValueError(f"eval.flip must list False and/or True once each, got {self.flip}")
        if self.dtype not in DTYPES:
            raise ValueError(f"eval.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.recipe not in RECIPES:
            raise ValueError(f"eval.recipe (or config.recipe) must be one of {RECIPES}, got {self.recipe!r}")
        for name in ("batch_size", "max_rank", "ranking_queries", "ranking_top_k"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"eval.{name} must be positive, got {getattr(self, name)}")
        if int(self.ranking_worst) < 0:
            raise ValueError(f"eval.ranking_worst must be >= 0 (0: no grid of the worst queries), "
                             f"got {self.ranking_worst}")
        if self.trials is not None and not self.trials:
            raise ValueError("eval.trials must name at least one trial (or be None for all)")
        self._check_rerank()

    def _check_rerank(self) -> None:
        if not isinstance(self.rerank, bool):
            raise ValueError(f"eval.rerank must be True or False, got {self.rerank!r}")
        for name in ("rerank_k1", "rerank_k2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"eval.{name} must be an int >= 1, got {value!r}")
        lam = self.rerank_lambda
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
            raise ValueError(f"eval.rerank_lambda must be a number in [0, 1], got {lam!r}")

    def protocols_for(self, layout: str) -> tuple[Protocol, ...]:
        """The protocols to run on a test set of `layout`."""
        names = self.protocols or DEFAULT_PROTOCOLS[layout]
        wrong = [n for n in names if PROTOCOLS[n].layout != layout]
        if wrong:
            raise ValueError(f"eval.protocols {wrong} do not apply to a {layout!r} test set "
                             f"(its protocols: {list(DEFAULT_PROTOCOLS[layout])})")
        return tuple(PROTOCOLS[n] for n in names)

    def replace(self, **changes) -> EvalSettings:
        return dataclasses.replace(self, **changes)


def _check_subset(name: str, values: Sequence[str], allowed: Mapping | Sequence, nonempty: bool = False) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"{name}: unknown value(s) {bad}; expected some of {list(allowed)}")
    if nonempty and not values:
        raise ValueError(f"{name} must not be empty; expected some of {list(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} lists a value twice: {list(values)}")


#: EvalSettings fields an experiment config sets outside `config.eval`: `config.recipe` and
#: `config.data.image_size` (what the model was trained with).
FROM_EXPERIMENT = ("recipe", "image_size")


def stage_modalities(stage: str | None) -> tuple[str, ...]:
    """The query modalities scored by default: IR only for the stage-1 "base" model (its text
    tower is untrained), all four otherwise."""
    return ("ir",) if stage == "base" else MODALITIES


def settings_from_config(config: Any) -> EvalSettings:
    """EvalSettings from an experiment config (tvilfm_jax/configs), a ConfigDict or dict.

    Read: every EvalSettings field from `config.eval` when that section exists (unknown keys
    raise, naming them; `trials=()` means all), except those of FROM_EXPERIMENT: `recipe` from
    `config.recipe`, `image_size` from `config.data.image_size`. For fields left out:
    `modalities` from `config.stage` (`stage_modalities`); the remaining fields keep their
    defaults.
    """
    section = config.get("eval")
    kwargs = {} if section is None else as_dict(section, "config.eval")
    unknown_keys(kwargs, EvalSettings, "config.eval")
    for key in ("protocols", "modalities", "text_sources", "flip", "image_size", "trials"):
        if isinstance(kwargs.get(key), (str, bool, int)):
            kwargs[key] = (kwargs[key],)
    if "trials" in kwargs and kwargs["trials"] is not None and len(kwargs["trials"]) == 0:
        kwargs["trials"] = None
    if "recipe" not in kwargs and config.get("recipe") is not None:
        kwargs["recipe"] = config.get("recipe")
    image_size = (config.get("data") or {}).get("image_size")
    if "image_size" not in kwargs and image_size is not None:
        kwargs["image_size"] = tuple(image_size)
    if "modalities" not in kwargs:
        kwargs["modalities"] = stage_modalities(config.get("stage"))
    return EvalSettings(**kwargs)
