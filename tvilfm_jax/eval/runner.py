"""Running evaluations: a reusable `Evaluator`, the trainer's `evaluate_fn`, and loading models.

    evaluate_fn = make_evaluate_fn(config, model)          # reads the test records once
    metrics = evaluate_fn(state)                            # every eval epoch
    metrics["rank1"], metrics["fusion/mAP"]                 # percent

Everything that does not depend on the weights (test records, caption draws, gallery indices,
jitted functions) is prepared once; a call extracts features with the given variables and
scores every configured protocol.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from tvilfm_jax import run_layout
from tvilfm_jax.data.datasets import DEFAULT_PROTOCOLS, SYNTHETIC_PREFIX, layout_of
from tvilfm_jax.eval import report as report_lib
from tvilfm_jax.eval import scoring
from tvilfm_jax.eval.features import FeatureExtractor
from tvilfm_jax.eval.settings import EvalSettings, settings_from_config
from tvilfm_jax.eval.testset import TestSet, from_layout, from_tfds
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig


def load_test_set(config: Any, dataset_root: str | os.PathLike | None = None) -> TestSet:
    """The test records of an experiment config: the TFDS dataset `config.data.name` in
    `config.data.data_dir` ("" = TFDS's default), or with `dataset_root` the dataset tree there
    read through `tvilfm_jax.data.layouts` (layout and RegDB trial from `config.data.name`).
    """
    data = config.get("data") or {}  # a ConfigDict or dict
    name = data.get("name")
    if not name:
        raise ValueError("config.data.name must name the dataset (e.g. 'sysu_mm01', 'regdb/trial1', "
                         "'synthetic/llcm')")
    if dataset_root is not None:
        layout, trial = layout_of(name)
        return from_layout(dataset_root, layout, trial=trial, synthetic=name.startswith(SYNTHETIC_PREFIX))
    return from_tfds(name, data.get("data_dir") or None)


def as_variables(state_or_variables: Any) -> dict:
    """{"params", "batch_stats"} of a variables dict or of a train state with `.params` /
    `.batch_stats` attributes (the trainer's TrainState)."""
    obj = state_or_variables
    if isinstance(obj, Mapping) and "params" in obj:
        return {"params": obj["params"], "batch_stats": obj.get("batch_stats", {})}
    params = getattr(obj, "params", None)
    if params is not None:
        return {"params": params, "batch_stats": getattr(obj, "batch_stats", {})}
    raise TypeError(f"expected a variables dict with 'params' or a state with .params, got {type(obj).__name__}")


@dataclasses.dataclass(frozen=True)
class EvalRun:
    """One evaluation: results per condition key and modality, and the ranking samples (queries
    spread over the query set, then the worst by AP; empty unless asked for)."""

    results: Mapping[str, Mapping[str, scoring.ModalityResult]]
    rankings: tuple[scoring.RankingSample, ...]

    def flat(self) -> dict[str, float]:
        """Metrics in percent, for logs and model selection:

          "<modality>/<R1|R5|R10|R20|mAP|mINP>"   the first (primary) condition
          "rank1", "mAP", "mINP"                  its primary modality: MER if scored, else
                                                  Fusion, Text, IR
          "<protocol>/<text source>/<noflip|flip>/<modality>/<metric>"   every other condition
        """
        out: dict[str, float] = {}
        for i, (key, by_modality) in enumerate(self.results.items()):
            for modality, r in by_modality.items():
                for name, value in report_lib.summary_numbers(r.mean).items():
                    out[f"{modality}/{name}" if i == 0 else f"{key}/{modality}/{name}"] = value
        primary = self.primary_modality()
        for name, alias in (("R1", "rank1"), ("mAP", "mAP"), ("mINP", "mINP")):
            out[alias] = out[f"{primary}/{name}"]
        return out

    def primary_modality(self) -> str:
        scored = next(iter(self.results.values()))
        return next(m for m in ("mer", "fusion", "text", "ir") if m in scored)


class EvalMetrics(dict):
    """`EvalRun.flat()` metrics (what the trainer logs and selects the best model by), with the
    primary condition's mean CMC curves riding along for the trainer's TensorBoard figure:
    `curves` {legend name: CMC [R] fractions} (`report.cmc_curves`) and `title`."""

    def __init__(self, run: EvalRun, split: int | None):
        super().__init__(run.flat())
        key, by_modality = next(iter(run.results.items()))
        self.curves = report_lib.cmc_curves(by_modality)
        self.title = report_lib.cmc_title(key, split)


def with_dtype(model: TVILFM, dtype: str) -> TVILFM:
    """The same model computing in `dtype` (its variables do not depend on the dtype)."""
    return model if model.config.dtype == dtype else TVILFM(dataclasses.replace(model.config, dtype=dtype))


class Evaluator:
    """Scores one model definition on one test set, for any number of weight sets.

    Args:
      test: the test records.
      model: the `TVILFM` module (defines backups and fusion); it embeds in `settings.dtype`,
        not in the compute dtype it was trained (or exported) with.
      settings: what to score.
      sharding: optional sharding of the batch axis for feature extraction.
      progress: show progress bars.

    Calling it with variables (or a train state) returns `EvalRun.flat()` metrics as `EvalMetrics`
    (with the CMC curves), which is the `evaluate_fn` the trainer calls; `run` returns the full
    results.
    """

    def __init__(self, test: TestSet, model: TVILFM, settings: EvalSettings, *,
                 sharding: jax.sharding.Sharding | None = None, progress: bool = True):
        self.test = test
        self.model = with_dtype(model, settings.dtype)
        self.settings = settings
        settings.protocols_for(test.layout)  # fails early on protocols of another dataset
        self.texts = scoring.prepare_texts(test, settings)
        self.extractor = FeatureExtractor(self.model, settings.batch_size, settings.image_size, sharding, progress)

    def run(self, state_or_variables: Any, *, ranking: bool = False) -> EvalRun:
        variables = as_variables(state_or_variables)
        feats = scoring.extract(self.extractor, variables, self.test, self.settings, self.texts)
        results, samples = scoring.score(self.extractor, variables, self.test, self.settings, self.texts, feats,
                                         ranking=ranking)
        return EvalRun(results, samples)

    def __call__(self, state_or_variables: Any) -> EvalMetrics:
        return EvalMetrics(self.run(state_or_variables), self.test.split)


def make_evaluate_fn(config: Any, model: TVILFM, *, test: TestSet | None = None,
                     settings: EvalSettings | None = None, sharding: jax.sharding.Sharding | None = None,
                     progress: bool = False, **overrides) -> Evaluator:
    """The trainer's `evaluate_fn(state_or_variables) -> dict[str, float]` (percent; keys in
    `EvalRun.flat`, any of which `config.train.best_metric` names).

    Test records come from `config.data` (read once, here) unless `test` is given; settings
    from `settings_from_config(config)` unless `settings` is given; `overrides` replace
    settings fields. Unless protocols are set, only the dataset's primary protocol is scored
    (SYSU all-search, RegDB t->v, LLCM i->v), as the original does while training.
    sharding: e.g. `NamedSharding(mesh, P("data"))` to spread each batch over the mesh.
    """
    settings = settings or settings_from_config(config)
    if overrides:
        settings = settings.replace(**overrides)
    test = test if test is not None else load_test_set(config)
    if not settings.protocols:
        settings = settings.replace(protocols=DEFAULT_PROTOCOLS[test.layout][:1])
    return Evaluator(test, model, settings, sharding=sharding, progress=progress)


def load_model(checkpoint: str | os.PathLike | None = None, *, workdir: str | os.PathLike | None = None,
               which: str = "best") -> tuple[ModelConfig, dict, str]:
    """(model config, variables, description) of a model artifact.

    checkpoint: a model artifact directory (`tvilfm_jax.artifacts`: model.json + variables/),
      e.g. from `python -m tvilfm_jax.convert`.
    workdir: a training run; its `models/<which>` export ("best": written at each new best
      evaluation, "last": at the end of training). One in the old layout is refused.
    """
    from tvilfm_jax import artifacts

    if (checkpoint is None) == (workdir is None):
        raise ValueError("pass exactly one of --checkpoint (a model directory: model.json + variables/) "
                         "and --workdir (a training run)")
    if workdir is not None:
        old = run_layout.old_layout_problem(workdir)
        if old:
            raise ValueError(old)
        checkpoint = run_layout.model_dir(workdir, which)
        if not os.path.isdir(checkpoint):
            raise ValueError(f"training run {workdir} has no {run_layout.MODELS_DIR}/{which} export (best: written "
                             "at the first evaluation that improves config.train.best_metric; last: at the end of "
                             "training)")
    config, variables = artifacts.load_model(checkpoint)
    return config, variables, os.path.abspath(os.fspath(checkpoint))


#: Query modalities that go through the text tower, which only stage 2 ("tvilfm") trains.
TEXT_MODALITIES = ("text", "fusion", "mer")


def require_trained_text(model_config: ModelConfig, settings: EvalSettings, source: str) -> None:
    """Refuses to score text-based queries with a stage-1 model.

    The exported model.json records the stage: only stage 2 ("tvilfm") carries the backup
    GeM/neck (`ModelConfig.backup`). A model without them comes from stage 1 ("base", or a
    converted stage-1 / ImageNet checkpoint), whose text tower was never trained, so its
    Text/Fusion/MER numbers would be meaningless.
    """
    asked = [m for m in settings.modalities if m in TEXT_MODALITIES]
    if asked and not model_config.backup:
        raise ValueError(
            f"{source} is a stage-1 model (its model.json has backup=false: stage 'base' never trains the text "
            f"tower), but the config asks for {'/'.join(asked)} queries; evaluate it with the stage=base config "
            "(IR queries only), or set config.eval.modalities=('ir',)")


def evaluate_and_report(config: Any, model_config: ModelConfig, variables: Any, output: str | os.PathLike, *,
                        checkpoint: str | None = None, test: TestSet | None = None, progress: bool = True,
                        print_fn=print) -> dict:
    """Evaluates `variables` on every configured protocol (default: all protocols of the
    dataset) and writes the report under `output`.

    Returns {"report": JSON report, "files": written paths, "flat": flat metrics}. Raises
    ValueError for text-based queries of a stage-1 model (`require_trained_text`).
    """
    settings = settings_from_config(config)
    require_trained_text(model_config, settings, checkpoint or "the model")
    test = test if test is not None else load_test_set(config)
    evaluator = Evaluator(test, TVILFM(model_config), settings, progress=progress)
    run = evaluator.run(variables, ranking=True)
    params = jax.tree_util.tree_leaves(as_variables(variables)["params"])
    info = {"num_classes": model_config.num_classes, "embed_dim": model_config.embed_dim,
            "fusion": model_config.fusion, "backup": model_config.backup,
            "num_params": sum(int(np.prod(x.shape)) for x in params)}
    report = report_lib.build_report(evaluator.test, evaluator.settings, run.results, checkpoint=checkpoint,
                                     model_info=info)
    files = report_lib.write_report(output, report, evaluator.test, run.results, run.rankings)
    if print_fn is not None:
        print_fn(report_lib.markdown(report))
        print_fn(f"wrote {files['json']}, {files['markdown']} and {len(files['figures'])} figures")
    return {"report": report, "files": files, "flat": run.flat()}
