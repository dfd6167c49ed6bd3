"""Evaluation reports: a JSON document, Markdown tables, and PNG figures.

Numbers are percentages (the metrics return fractions). Every number is printed next to the
protocol it belongs to: the benchmark and direction, the text source and the TTA variant
(see `scoring.Condition.label`), plus the metric variant used for that row. Re-ranked scores
(`eval.rerank`) are named in the JSON's "rerank" entry (null when off), in the Markdown header
and in the title of its mean table, with k1, k2 and lambda.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tvilfm_jax import viz
from tvilfm_jax.eval.scoring import SELECTIONS, Condition, ModalityResult, RankingSample
from tvilfm_jax.eval.settings import MODALITY_NAMES, PROTOCOL_NOTES, PROTOCOLS, EvalSettings
from tvilfm_jax.eval.testset import TestSet
from tvilfm_jax.eval.texts import DESCRIPTIONS

RANKS = (1, 5, 10, 20)
#: The report's JSON file in its output folder (next to report.md and the figures).
REPORT_FILE = "report.json"
SCORES_NUMERICS = "float32, matmul precision HIGHEST"
METRIC_NOTES = {
    "sysu": "eval_sysu: cam3 queries ignore cam2 gallery images; de-duplicated CMC",
    "llcm": "eval_llcm: gallery images with the query's pid and camera removed; de-duplicated CMC",
    "regdb": "eval_regdb: no removal; plain CMC",
}
RECIPE_NOTES = {
    "paper": "the original's evaluation quirks kept: LLCM IR scored with eval_sysu; RegDB v->t IR pairs "
             "current-neck RGB with backup-neck IR features (docs/original.md §6.5, §6.6)",
    "clean": "quirks fixed: every LLCM modality scored with eval_llcm; RegDB v->t IR uses the backup necks "
             "on both sides",
}


RERANK_NOTE = ("k-reciprocal re-ranking (Zhong et al., CVPR 2017) of every score matrix, over the union of its "
               "queries and gallery; MER re-ranked on the unit sum of its three query embeddings "
               "(tvilfm_jax/eval/scoring.py)")


def rerank_info(settings: EvalSettings) -> dict[str, Any] | None:
    """The report's account of re-ranking: None when the scores are plain cosines."""
    if not settings.rerank:
        return None
    return {"k1": settings.rerank_k1, "k2": settings.rerank_k2, "lambda": settings.rerank_lambda,
            "note": RERANK_NOTE}


def rerank_label(info: Mapping[str, Any] | None) -> str:
    """One phrase naming the ranking ("" without re-ranking)."""
    return "" if info is None else f"re-ranked: k1={info['k1']}, k2={info['k2']}, lambda={info['lambda']}"


def modality_notes(fusion: str = "sff", backup: bool = False) -> dict[str, str]:
    """What each query modality is for a model with this fusion and backups."""
    fused = "L2(BN(f_IR + T(text) - T(own IR caption)))" if fusion == "sff" else "L2(BN(f_IR + T(text)))"
    ir = ("the IR image through the frozen stage-1 backup GeM + neck, against an RGB gallery through them "
          "(docs/original.md §1.7, §6.2)" if backup else "the IR image alone, L2(BN(f_IR))")
    return {
        "ir": ir,
        "text": "the query text alone, L2(BN(T(text)))",
        "fusion": f"{fusion.upper()}: {fused}",
        "mer": "sum of the Fusion, IR (current neck) and Text cosine scores against the current gallery "
               "(docs/original.md §6.3)",
    }


def summary_numbers(result: Mapping[str, Any], ranks: Sequence[int] = RANKS) -> dict[str, float]:
    """{"R1", "R5", ..., "mAP", "mINP"} in percent from a metrics dict."""
    cmc = np.asarray(result["cmc"], np.float64)
    out = {f"R{k}": 100.0 * float(cmc[k - 1]) for k in ranks if k <= cmc.size}
    out["mAP"] = 100.0 * float(result["mAP"])
    out["mINP"] = 100.0 * float(result["mINP"])
    return out


def _condition_from_key(key: str) -> Condition:
    name, source, tta = key.split("/")
    return Condition(PROTOCOLS[name], source, tta == "flip")


def build_report(test: TestSet, settings: EvalSettings, results: Mapping[str, Mapping[str, ModalityResult]],
                 *, checkpoint: str | None = None, model_info: Mapping[str, Any] | None = None) -> dict:
    """The JSON-ready report of one evaluation (numbers in percent)."""
    info = dict(model_info or {})
    notes = modality_notes(info.get("fusion", "sff"), bool(info.get("backup", False)))
    conditions = []
    for key, by_modality in results.items():
        condition = _condition_from_key(key)
        rows = {}
        for modality, r in by_modality.items():
            rows[modality] = {
                "metric": r.metric,
                "mean": {**summary_numbers(r.mean), "cmc": [100.0 * float(c) for c in r.mean["cmc"]]},
                # Population std over the trials (0 for one trial), keyed as "mean".
                "std": {**summary_numbers(r.mean["std"]), "cmc": [100.0 * float(c) for c in r.mean["std"]["cmc"]]},
                "trials": [{"trial": int(t), **summary_numbers(x), "num_valid": int(x["num_valid"])}
                           for t, x in zip(r.trials, r.per_trial)],
            }
        conditions.append({
            "key": key,
            "protocol": condition.protocol.name,
            "label": condition.label,
            "text_source": condition.text_source,
            "tta": "flip" if condition.flip else "none",
            "direction": "IR->RGB" if condition.protocol.ir_to_rgb else "RGB->IR",
            "results": rows,
        })
    return {
        "dataset": test.name,
        "source": test.source,
        "layout": test.layout,
        "regdb_split": test.split,
        "counts": {"query": len(test.query), "gallery_pool": len(test.gallery),
                   "trials": {m: len(t) for m, t in test.galleries.items()}},
        "checkpoint": checkpoint,
        "model": info,
        "settings": _jsonable(dataclasses.asdict(settings)),
        "units": "percent",
        "numerics": {"embedding_dtype": settings.dtype, "scores": SCORES_NUMERICS},
        "rerank": rerank_info(settings),
        "protocols": {name: {"title": PROTOCOLS[name].title, "note": PROTOCOL_NOTES[name]}
                      for name in dict.fromkeys(c["protocol"] for c in conditions)},
        "text_sources": {s: DESCRIPTIONS[s] for s in settings.text_sources},
        "modalities": {m: notes[m] for m in settings.modalities},
        "recipe": {settings.recipe: RECIPE_NOTES[settings.recipe]},
        "metrics": METRIC_NOTES,
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "conditions": conditions,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _fmt_spread(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}"


def markdown(report: Mapping[str, Any]) -> str:
    """Mean table (every condition x modality) then per-trial tables, in Markdown."""
    ranks = [f"R{k}" for k in RANKS]
    lines = [f"# Evaluation: {report['dataset']}", ""]
    lines.append(f"- records: {report['source']} ({report['counts']['query']} queries, "
                 f"{report['counts']['gallery_pool']} gallery images in the pool)")
    if report.get("checkpoint"):
        lines.append(f"- checkpoint: `{report['checkpoint']}`")
    s = report["settings"]
    lines.append(f"- recipe `{s['recipe']}`: {report['recipe'][s['recipe']]}")
    lines.append(f"- caption seed {s['seed']}; image size {tuple(s['image_size'])}; embeddings in "
                 f"{report['numerics']['embedding_dtype']} (eval.dtype), scores in {report['numerics']['scores']}; "
                 "numbers in percent")
    reranked = rerank_label(report.get("rerank"))
    if reranked:
        lines.append(f"- {reranked} (eval.rerank): {report['rerank']['note']}")
    lines += ["", "Protocols:"] + [f"- {p['title']} (`{k}`): {p['note']}" for k, p in report["protocols"].items()]
    lines += ["", "Text sources:"] + [f"- `{k}`: {v}" for k, v in report["text_sources"].items()]
    lines += ["", "Query modalities:"] + [f"- {MODALITY_NAMES[k]}: {v}" for k, v in report["modalities"].items()]
    lines += ["", "Metrics:"] + [f"- `{k}`: {v}" for k, v in report["metrics"].items()]

    lines += ["", "## Mean over trials" + (f" ({reranked})" if reranked else ""), "",
              "mean ± std over the gallery trials (population std; 0.00 where one trial is scored)", ""]
    header = ["protocol", "text", "TTA", "query", "metric", "trials", *ranks, "mAP", "mINP"]
    lines += [_row(header), _row(["---"] * len(header))]
    for c in report["conditions"]:
        title = PROTOCOLS[c["protocol"]].title
        for modality, r in c["results"].items():
            m, sd = r["mean"], r["std"]
            shown = [_fmt_spread(m[k], sd[k]) if k in m else "-" for k in (*ranks, "mAP", "mINP")]
            lines.append(_row([title, c["text_source"], c["tta"], MODALITY_NAMES[modality], r["metric"],
                               str(len(r["trials"])), *shown]))

    lines += ["", "## Per trial", ""]
    for c in report["conditions"]:
        lines += [f"### {c['label']}", ""]
        header = ["protocol", "query", "metric", "trial", "R1", "R10", "mAP", "mINP", "valid queries"]
        lines += [_row(header), _row(["---"] * len(header))]
        for modality, r in c["results"].items():
            for t in r["trials"]:
                lines.append(_row([c["key"], MODALITY_NAMES[modality], r["metric"], str(t["trial"]), _fmt(t["R1"]),
                                   _fmt(t.get("R10", float("nan"))), _fmt(t["mAP"]), _fmt(t["mINP"]),
                                   str(t["num_valid"])]))
        lines.append("")
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _file_stem(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def cmc_curves(by_modality: Mapping[str, ModalityResult]) -> dict[str, np.ndarray]:
    """The mean CMC [R] (fractions) of each modality of one condition, named for its plot legend."""
    return {f"{MODALITY_NAMES[m]} ({r.metric})": r.mean["cmc"] for m, r in by_modality.items()}


def cmc_title(key: str, split: int | None) -> str:
    """The CMC plot title of condition `key` (split: the RegDB split, None elsewhere)."""
    condition = _condition_from_key(key)
    shown = f", split {split}" if split is not None else ""
    return (f"{condition.protocol.title}{shown}\n"
            f"text: {condition.text_source}, TTA: {'flip' if condition.flip else 'none'}")


#: Ranking grid file name prefix per `scoring.SELECTIONS` entry ("spread", "worst").
RANKING_PREFIXES = dict(zip(SELECTIONS, ("ranking", "ranking_worst"), strict=True))


def write_report(output: str | os.PathLike, report: Mapping[str, Any], test: TestSet,
                 results: Mapping[str, Mapping[str, ModalityResult]],
                 rankings: Sequence[RankingSample] = ()) -> dict[str, Any]:
    """Writes report.json, report.md, cmc_<condition>.png, and per ranking sample
    ranking_<condition>.png (queries spread over the set) or ranking_worst_<condition>.png
    (the queries of lowest AP).

    Returns {"json": path, "markdown": path, "figures": [paths]}.
    """
    output = os.fspath(output)
    os.makedirs(output, exist_ok=True)
    json_path = os.path.join(output, REPORT_FILE)
    with open(json_path + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(json_path + ".tmp", json_path)
    md_path = os.path.join(output, "report.md")
    with open(md_path, "w") as f:
        f.write(markdown(report))
    figures = []
    for key, by_modality in results.items():
        figures.append(viz.plot_cmc(cmc_curves(by_modality), os.path.join(output, f"cmc_{_file_stem(key)}.png"),
                                    title=cmc_title(key, test.split)))
    for sample in rankings:
        name = f"{RANKING_PREFIXES[sample.selection]}_{_file_stem(sample.condition.key)}.png"
        figures.append(ranking_figure(os.path.join(output, name), test, sample))
    return {"json": json_path, "markdown": md_path, "figures": figures}


def ranking_figure(path: str | os.PathLike, test: TestSet, sample: RankingSample) -> str:
    """The ranking grid of `sample` (query images titled with their AP, their texts, top-k
    gallery images)."""
    queries = np.stack([test.query.images[int(i)] for i in sample.query_index])
    gallery = np.stack([np.stack([test.gallery.images[int(j)] for j in row]) for row in sample.gallery_index])
    # Two short lines: one line is wider than the query's image column and gets clipped.
    aps = ["n/a" if np.isnan(a) else f"{100 * a:.1f}" for a in sample.ap]
    titles = [f"{MODALITY_NAMES[sample.modality]} q{int(i)} AP {ap}\npid {int(test.query.pids[i])} "
              f"cam {int(test.query.cams[i])}" for i, ap in zip(sample.query_index, aps)]
    texts = [f"[{sample.condition.label}, trial {sample.trial}] {t}" for t in sample.texts]
    return viz.ranking_grid(queries, texts, gallery, sample.matches, path, top_k=sample.gallery_index.shape[1],
                            gallery_scores=sample.scores, query_titles=titles)
