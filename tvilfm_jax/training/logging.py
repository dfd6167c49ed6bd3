"""What a run reports: a console progress bar, workdir/metrics.jsonl, TensorBoard (workdir/tensorboard).

Only process 0 reports (`enabled=False` elsewhere). Records of metrics.jsonl, one JSON object
per line, each with "kind", "step" (optimizer steps done) and "epoch" (0-based):
  kind "train"  means over the last `log_every_steps` steps: loss, id, wrt, acc, lr, plus
                images_per_sec (images through the visual encoder, 3 per row of the global batch)
  kind "epoch"  means over the whole epoch (what the original logs, docs/original.md §10.4 item 29)
  kind "eval"   whatever the evaluation hook returned
On resume the file is cut back to the restored step, so it reads as one uninterrupted run;
TensorBoard drops the events after that step the same way (`purge_step`).

TensorBoard gets the same scalars under "<kind>/<name>", the experiment config as hparams
(dotted keys, `hparams`; written at the start of every attempt, so a resumed run writes them
again, with any allowed config change) and, at each evaluation that provides curves, the CMC
figure as the image "eval/cmc".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from absl import logging
from tqdm import tqdm

from tvilfm_jax.run_layout import METRICS_FILE, TENSORBOARD_DIR

#: The TensorBoard image tag of the evaluation's CMC figure.
CMC_TAG = "eval/cmc"


def say(message: str) -> None:
    """A console line from process 0 that does not break the progress bar."""
    if jax.process_index() == 0:
        tqdm.write(message)


class Averages:
    """Running sums of scalar metrics; a plain dict state so it can ride in a checkpoint."""

    def __init__(self, state: Mapping[str, Any] | None = None):
        state = state or {}
        self.sums: dict[str, float] = dict(state.get("sums", {}))
        self.count: int = int(state.get("count", 0))

    def add(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}


def truncate_metrics(path: str, last_step: int) -> None:
    """Keeps the records of steps <= last_step (atomically); a torn last line is dropped."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if record.get("step", math.inf) <= last_step:
                kept.append(json.dumps(record))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def flat_hparams(tree: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A JSON-decoded config as TensorBoard hparams: {"optim.lr_visual": 1e-3, ...}; numbers,
    booleans and strings kept, anything else (None, lists) as its JSON text."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_hparams(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return out


def read_metrics(path: str) -> list[dict]:
    """All records of a metrics.jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
    """metrics.jsonl + TensorBoard for one workdir.

    Args:
      workdir: the run directory.
      resume_step: the step a resumed run starts from (0 for a fresh run): later records of an
        earlier attempt are dropped.
      enabled: False on every process but 0.
    """

    def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        truncate_metrics(self.path, resume_step)
        self._file = open(self.path, "a")
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            logging.warning("tensorboardX is not installed: no TensorBoard scalars (metrics.jsonl is still written)")
        else:
            # purge_step hides events of an interrupted attempt past the resumed step.
            self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR),
                                     purge_step=resume_step + 1 if resume_step else None)

    def write(self, kind: str, step: int, epoch: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), "epoch": int(epoch), **{k: float(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))
            self._tb.flush()

    def hparams(self, config: Mapping[str, Any], metrics: Sequence[str]) -> None:
        """Writes `config` (a JSON-decoded experiment config) as the run's hparams, with the
        scalar tags (e.g. "eval/rank1") the hparams dashboard shows next to them."""
        if self._tb is None:
            return
        from tensorboardX.summary import hparams

        # The experiment and session-start summaries only: the session is not over yet.
        experiment, session_start, _ = hparams(flat_hparams(config), {tag: 0.0 for tag in metrics})
        # Into this run's own event file: add_hparams would open a second run folder for them.
        writer = self._tb._get_file_writer()
        writer.add_summary(experiment)
        writer.add_summary(session_start)
        self._tb.flush()

    def cmc(self, step: int, curves: Mapping[str, Any], title: str) -> None:
        """The CMC figure of `viz.cmc_figure(curves, title=title)` as the image CMC_TAG at `step`."""
        if self._tb is None:
            return
        from tvilfm_jax import viz  # matplotlib: imported by the first figure, not by every run

        self._tb.add_image(CMC_TAG, viz.figure_pixels(viz.cmc_figure(curves, title=title)), int(step),
                           dataformats="HWC")
        self._tb.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class Progress:
    """Console progress bar over all steps of the run, with the latest metrics."""

    def __init__(self, total: int, initial: int, enabled: bool = True, desc: str = "train"):
        self._bar = tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True,
                         smoothing=0.1)

    def update(self, steps: int, metrics: Mapping[str, float], images_per_sec: float | None = None) -> None:
        shown = {k: f"{metrics[k]:.4g}" for k in ("loss", "acc", "lr") if k in metrics}
        if images_per_sec is not None:
            shown["img/s"] = f"{images_per_sec:.1f}"
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(steps)

    def write(self, message: str) -> None:
        self._bar.write(message)

    def close(self) -> None:
        self._bar.close()
