"""Mean ± std over runs (seeds, RegDB splits) of evaluation reports.

    table = aggregate({"seed0": report0, "seed1": report1})   # report.json dicts (`eval.report`)
    write(root, table)                                         # root/aggregate.json, aggregate.md

Each report gives, per condition (protocol x text source x TTA, keyed by `key`) and query
modality, its mean over gallery trials (`results[modality]["mean"]`, percent). Across runs,
every condition and modality of the first run must be in every other run (a missing one is an
error naming the run); the numbers are averaged over runs, with the sample standard deviation
(n - 1 in the denominator; none for a single run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from tvilfm_jax.eval.report import RANKS
from tvilfm_jax.eval.settings import MODALITY_NAMES, PROTOCOLS

#: The metrics aggregated, in table order (those a report's means hold: R20 needs max_rank >= 20).
METRICS = (*(f"R{k}" for k in RANKS), "mAP", "mINP")
FILES = {"json": "aggregate.json", "markdown": "aggregate.md"}
STD_NOTE = "sample standard deviation over runs (n - 1 in the denominator); null for one run"


def _means(report: Mapping[str, Any], run: str) -> dict[str, dict[str, dict[str, float]]]:
    """{condition key: {modality: {metric: mean over trials}}} of one report."""
    try:
        return {c["key"]: {m: {k: float(v) for k, v in r["mean"].items() if k in METRICS}
                           for m, r in c["results"].items()}
                for c in report["conditions"]}
    except (KeyError, TypeError) as err:
        raise ValueError(f"run {run}: not an evaluation report (missing {err})") from None


def aggregate(reports: Mapping[str, Mapping[str, Any]]) -> dict:
    """The mean ± std table of `reports` ({run name: report.json dict}, at least one).

    Returns {"runs": [names], "n": N, "units": "percent", "std": STD_NOTE, "datasets": {run:
    dataset}, "conditions": [{"key", "protocol", "label", "text_source", "tta", "direction",
    "results": {modality: {"metric", "mean": {metric: x}, "std": {metric: x | None},
    "runs": {run: {metric: x}}}}}]} in the first run's condition and modality order. Raises
    ValueError naming the run that lacks a condition, modality or metric of the first.
    """
    if not reports:
        raise ValueError("no reports to aggregate")
    names = list(reports)
    means = {name: _means(reports[name], name) for name in names}
    first = reports[names[0]]
    conditions = []
    for c in first["conditions"]:
        key, results = c["key"], {}
        for modality, row in c["results"].items():
            metrics = [k for k in METRICS if k in means[names[0]][key][modality]]
            values = np.array([[_value(means, name, key, modality, k) for k in metrics] for name in names])
            std = values.std(axis=0, ddof=1) if len(names) > 1 else [None] * len(metrics)
            results[modality] = {
                "metric": row.get("metric"),
                "mean": dict(zip(metrics, values.mean(axis=0).tolist())),
                "std": {k: None if s is None else float(s) for k, s in zip(metrics, std)},
                "runs": {name: dict(zip(metrics, v.tolist())) for name, v in zip(names, values)},
            }
        conditions.append({**{k: c[k] for k in ("key", "protocol", "label", "text_source", "tta", "direction")},
                           "results": results})
    return {"runs": names, "n": len(names), "units": "percent", "std": STD_NOTE,
            "datasets": {name: reports[name].get("dataset") for name in names}, "conditions": conditions}


def _value(means: Mapping, run: str, key: str, modality: str, metric: str) -> float:
    by_key = means[run]
    if key not in by_key:
        raise ValueError(f"run {run}: its report has no condition {key} (it has {', '.join(by_key) or 'none'})")
    if modality not in by_key[key]:
        raise ValueError(f"run {run}: its report has no {modality} results for {key} (it has "
                         f"{', '.join(by_key[key]) or 'none'})")
    if metric not in by_key[key][modality]:
        raise ValueError(f"run {run}: its report has no {metric} for {key} {modality}")
    return by_key[key][modality][metric]


def _cell(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def markdown(table: Mapping[str, Any]) -> str:
    """The table in Markdown: one row per condition and query modality, mean ± std per metric."""
    lines = [f"# Mean ± std over {table['n']} runs", "",
             f"- runs: {', '.join(table['runs'])}",
             f"- numbers in percent; each run's number is its mean over gallery trials; ± is the {table['std']}", ""]
    metrics = [k for k in METRICS if any(k in r["mean"] for c in table["conditions"] for r in c["results"].values())]
    header = ["protocol", "text", "TTA", "query", "metric", "runs", *metrics]
    lines += [_row(header), _row(["---"] * len(header))]
    for c in table["conditions"]:
        for modality, r in c["results"].items():
            cells = [_cell(r["mean"][k], r["std"][k]) if k in r["mean"] else "-" for k in metrics]
            lines.append(_row([PROTOCOLS[c["protocol"]].title, c["text_source"], c["tta"], MODALITY_NAMES[modality],
                               str(r["metric"]), str(len(r["runs"])), *cells]))
    return "\n".join(lines) + "\n"


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def write(root: str | os.PathLike, table: Mapping[str, Any]) -> dict[str, str]:
    """Writes root/aggregate.json and root/aggregate.md; returns {"json": path, "markdown": path}."""
    root = os.fspath(root)
    os.makedirs(root, exist_ok=True)
    paths = {kind: os.path.join(root, name) for kind, name in FILES.items()}
    for kind, text in (("json", json.dumps(table, indent=2)), ("markdown", markdown(table))):
        with open(paths[kind] + ".tmp", "w") as f:
            f.write(text)
        os.replace(paths[kind] + ".tmp", paths[kind])
    return paths
