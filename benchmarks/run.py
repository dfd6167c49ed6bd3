"""JAX vs the PyTorch reference, side by side in one process: train steps, eval, metrics, input.

    python -m benchmarks.run --quick                 # CPU: reduced network, small batch/images
    python -m benchmarks.run                         # full sizes (GPU; see benchmarks/gpu.sh)
    python -m benchmarks.run --preset tiny --sections stage1,metrics --json out.json

Sections (all by default):
  stage1   stage-1 train step (fwd + bwd + Adam): dual-stem ResNet + GeM + BN-neck, CE + WRT over
           3B images. JAX: `tvilfm_jax.training.step.make_train_step` under jax.jit with the
           state donated; PyTorch: `benchmarks.torch_reference`, eager and `torch.compile`
           (the latter by default with CUDA only: on CPU, inductor compiles for minutes).
  stage2   stage-2 train step: frozen visual (train-mode BN), CLIP text tower over [2B, 77]
           captions, SFF fusion, CE + WRT over the five groups (5B rows).
  eval     gallery feature extraction (uint8 images -> L2(BN(GeM))), images/s. JAX:
           `tvilfm_jax.eval.features.FeatureExtractor`; PyTorch: eval mode, inference_mode.
  metrics  retrieval metrics: jitted `tvilfm_jax.eval.metrics.evaluate` vs the per-query NumPy
           transcription of the original's code (problems from `benchmarks.metrics`).
  input    training input pipeline on one core (functions of `benchmarks.input_pipeline`):
           grain port vs PIL + torchvision; its image size and 8x4 batch are fixed there.

Both networks start from the same weights: the torch model's state dict (official key layout)
is converted with `convert_official`. The first step's loss of every implementation is recorded
and compared (equal up to float error in fp32; AMP fp16 / bf16 differ more).

Every measured repetition runs all implementations of a section back to back, in alternating
order (A B C, C B A, ...), so machine drift and position effects cancel; the table shows medians.
Compile / first-call times are reported separately. On GPU, JAX runs bf16 (fp32 params, BN
statistics and losses) and PyTorch autocast fp16 + GradScaler with channels_last and cuDNN
autotuning; on CPU both run fp32, and the quick/tiny presets pin each framework to one thread
(`--threads`). Results are also written as JSON with the machine's details, after every section.
"""

from __future__ import annotations

import os

# Both frameworks share one accelerator: JAX must not grab 75 % of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import metrics as metric_problems  # noqa: E402
from benchmarks import torch_reference as tref  # noqa: E402
from tvilfm_jax import optim  # noqa: E402
from tvilfm_jax.conversion.official import convert_official  # noqa: E402
from tvilfm_jax.data.tokenizer import CONTEXT_LENGTH, EOT, SOT  # noqa: E402
from tvilfm_jax.eval.features import FeatureExtractor  # noqa: E402
from tvilfm_jax.eval.metrics import evaluate  # noqa: E402
from tvilfm_jax.eval.reference_metrics import reference_evaluate  # noqa: E402
from tvilfm_jax.models.text import TextConfig  # noqa: E402
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig  # noqa: E402
from tvilfm_jax.training.config import DataSettings, ModelSettings  # noqa: E402
from tvilfm_jax.training.state import create_state  # noqa: E402
from tvilfm_jax.training.step import MAIN_GROUP, make_train_step  # noqa: E402

SECTIONS = ("stage1", "stage2", "eval", "metrics", "input")
STAGE_OF_SECTION = {"stage1": "base", "stage2": "tvilfm"}
MAX_AMP_SETTLE_STEPS = 30  # 2^16 halves to 1 in 16 skips
REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What is measured. B = ids_per_batch * images_per_id images per modality and step."""

    ids_per_batch: int
    images_per_id: int
    image_size: tuple[int, int]
    resnet_blocks: tuple[int, ...]
    resnet_width: int
    text_width: int
    text_layers: int
    text_heads: int
    num_classes: int
    eval_images: int
    eval_batch: int
    metrics: str  # "paper": SYSU-sized (1 gallery trial) + RegDB-sized problems; "tiny": 64 x 16
    input_batches: int  # timed batches per input-pipeline repetition (batch 8x4 at 288x144, fixed)
    repeats: int  # measured train steps per implementation
    aux_repeats: int  # measured repetitions of the eval, metrics and input sections
    warmup: int  # untimed steps after compilation
    threads: int | None = None  # CPU threads per framework; None: each framework's default

    @property
    def batch(self) -> int:
        return self.ids_per_batch * self.images_per_id


# The configs' defaults: the paper's sizes.
_DATA, _MODEL = DataSettings(), ModelSettings()
PRESETS = {
    # The paper's network and batch (docs/original.md §2): ResNet-50, CLIP RN50 text tower, 8x4 per modality.
    "full": Sizes(_DATA.ids_per_batch, _DATA.images_per_id, _DATA.image_size, _MODEL.resnet_blocks,
                  _MODEL.resnet_width, _MODEL.text_width, _MODEL.text_layers, _MODEL.text_heads, 395,
                  eval_images=2048, eval_batch=128, metrics="paper", input_batches=10, repeats=20, aux_repeats=5,
                  warmup=3),
    # A 2-core CPU: the same network at one bottleneck per layer and width 32 (D = 1024), a 2-layer
    # text tower of width 128, 2x4 images of 128x64. Keep images >= 128x64 on CPU: XLA:CPU runs a
    # 3x3 conv on maps narrower than the kernel (layer3/4 of 64x32 images are 4x2) ~50x slower
    # than oneDNN, which would dominate the step.
    "quick": Sizes(2, 4, (128, 64), (1, 1, 1, 1), 32, 128, 2, 2, 395, eval_images=64, eval_batch=32,
                   metrics="paper", input_batches=4, repeats=7, aux_repeats=5, warmup=1, threads=1),
    # The smoke test: the smallest sizes that exercise every code path.
    "tiny": Sizes(2, 2, (32, 16), (1, 1, 1, 1), 4, 32, 1, 2, 8, eval_images=8, eval_batch=4,
                  metrics="tiny", input_batches=1, repeats=2, aux_repeats=2, warmup=0, threads=1),
}


def model_config(sizes: Sizes, dtype: str) -> ModelConfig:
    text = TextConfig(width=sizes.text_width, layers=sizes.text_layers, heads=sizes.text_heads,
                      embed_dim=32 * sizes.resnet_width)
    return ModelConfig(num_classes=sizes.num_classes, resnet_blocks=sizes.resnet_blocks,
                       resnet_width=sizes.resnet_width, text=text, dtype=dtype)


# --- inputs ------------------------------------------------------------------------------------


def token_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Caption-like ids int32 [n, 77]: SOT, 6-40 BPE ids, EOT, zero padding."""
    ids = np.zeros((n, CONTEXT_LENGTH), np.int32)
    for row in ids:
        length = int(rng.integers(6, 41))
        row[0], row[length + 1] = SOT, EOT
        row[1:length + 1] = rng.integers(1, SOT - 1, length)
    return ids


def train_batch(sizes: Sizes, stage: str, seed: int = 0) -> dict[str, np.ndarray]:
    """One global batch in the layout of `tvilfm_jax.training.step.BATCH_KEYS` (NHWC float32)."""
    rng = np.random.default_rng(seed)
    h, w = sizes.image_size
    labels = np.repeat(np.arange(sizes.ids_per_batch, dtype=np.int32), sizes.images_per_id)
    batch = {k: rng.standard_normal((sizes.batch, h, w, 3), dtype=np.float32)
             for k in ("img_rgb_ori", "img_rgb_aug", "img_ir")}
    batch.update(target_rgb=labels, target_ir=labels.copy())
    if stage == "tvilfm":
        batch.update(text_rgb=token_ids(rng, sizes.batch), text_ir=token_ids(rng, sizes.batch))
    return batch


# --- timing ------------------------------------------------------------------------------------


def interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    """(wall seconds, process CPU seconds) per call of every fn; each repetition calls all fns,
    alternating the order (A B, B A, ...). CPU time counts every thread of this process, so on a
    shared machine it is the steadier number; wall time is what a user waits for."""
    names = list(fns)
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            times[name][0].append(time.perf_counter() - start)
            times[name][1].append(time.process_time() - cpu)
    return times


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


class Env:
    """Device, precision and synchronisation shared by all sections."""

    def __init__(self, use_gpu: bool, amp: bool, compile_torch: bool):
        self.jax_backend = jax.default_backend()
        self.jax_device = jax.devices()[0]
        self.torch_device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        on_gpu = self.torch_device.type == "cuda"
        self.amp = amp and on_gpu
        self.jax_dtype = "bfloat16" if self.amp and self.jax_backend != "cpu" else "float32"
        self.compile_torch = compile_torch
        self.channels_last = on_gpu
        if on_gpu:
            torch.backends.cudnn.benchmark = True
            # JAX's default fp32 matmul precision on GPU is TF32; give PyTorch the same.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def sync_torch(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize()

    def torch_peak_reset(self) -> None:
        if self.torch_device.type == "cuda":
            self.sync_torch()
            torch.cuda.reset_peak_memory_stats()

    def torch_peak(self) -> int | None:
        return torch.cuda.max_memory_allocated() if self.torch_device.type == "cuda" else None

    def jax_process_peak(self) -> int | None:
        stats = self.jax_device.memory_stats() if self.jax_backend != "cpu" else None
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _impl(times: tuple[list[float], list[float]], units: int, unit: str, **extra) -> dict:
    wall, cpu = times
    med = statistics.median(wall)
    return {"median_s": med, "median_cpu_s": statistics.median(cpu), "times_s": wall, "cpu_times_s": cpu,
            "per_s": units / med, "unit": unit, **extra}


def _mib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


# --- sections ----------------------------------------------------------------------------------


def bench_train(section: str, sizes: Sizes, env: Env) -> dict:
    """One train step of stage "base" or "tvilfm", JAX vs PyTorch eager (+ torch.compile)."""
    stage = STAGE_OF_SECTION[section]
    cfg = model_config(sizes, env.jax_dtype)
    optim_cfg = optim.OptimSettings()  # the docs/original.md §2 defaults
    torch.manual_seed(0)
    tmodel = tref.TorchTVILFM(cfg)
    variables = convert_official(tref.state_dict_numpy(tmodel), cfg)
    batch = train_batch(sizes, stage)
    images = 3 * sizes.batch
    out: dict[str, Any] = {"images_per_step": images, "rows_in_loss": images if stage == "base" else 5 * sizes.batch,
                           "jax_dtype": env.jax_dtype, "torch_amp_fp16": env.amp, "impls": {}}

    # JAX: the training package's step, jitted with the state donated, as the training loop runs it.
    model = TVILFM(cfg)
    steps_per_epoch = 10**6  # timing only: a constant lr within the measured steps
    tx = optim.build_optimizer(variables["params"], optim_cfg, stage, "paper", steps_per_epoch)
    lr, _ = optim.group_hparams(optim_cfg, "paper")[MAIN_GROUP[stage]]
    step_fn = make_train_step(model, tx, stage, "paper", optim.lr_schedule(lr, optim_cfg, steps_per_epoch))
    state = jax.jit(functools.partial(create_state, tx=tx, seed=0))(variables)
    jbatch = jax.device_put(batch)
    compiled, t_compile = timed(lambda: jax.jit(step_fn, donate_argnums=0).lower(state, jbatch).compile())
    mem = compiled.memory_analysis()
    holder = {"state": state}

    def jax_step():
        holder["state"], metrics = compiled(holder["state"], jbatch)
        return jax.block_until_ready(metrics["loss"])

    first_loss, t_first = timed(jax_step)
    for _ in range(sizes.warmup):
        jax_step()
    jax_mem = None
    if mem is not None:
        jax_mem = {"arguments_mib": _mib(mem.argument_size_in_bytes), "temp_mib": _mib(mem.temp_size_in_bytes),
                   "output_mib": _mib(mem.output_size_in_bytes), "alias_mib": _mib(mem.alias_size_in_bytes),
                   "peak_estimate_mib": _mib(mem.argument_size_in_bytes + mem.output_size_in_bytes
                                             - mem.alias_size_in_bytes + mem.temp_size_in_bytes)}
    fns = {"jax": jax_step}
    steps: dict[str, tuple[tref.TorchStep, int]] = {}
    info = {"jax": {"compile_s": t_compile, "first_call_s": t_first, "first_loss": float(first_loss),
                    "memory": jax_mem}}

    # PyTorch: eager, then compiled, on the same model and optimizer.
    tmodel.to(env.torch_device)
    if env.channels_last:
        tmodel.to(memory_format=torch.channels_last)
    initial = {k: v.clone() for k, v in tmodel.state_dict().items()}
    tbatch = tref.to_torch_batch(batch, env.torch_device, env.channels_last)
    variants = [("torch eager", False)] + ([("torch.compile", True)] if env.compile_torch else [])
    for name, compile_ in variants:
        # Each variant starts from the initial weights with a fresh Adam, so first losses compare.
        tmodel.load_state_dict(initial)
        topt = tref.make_optimizer(tmodel, optim_cfg, stage)
        step = tref.TorchStep(tmodel, topt, stage, amp=env.amp, compile=compile_)

        def torch_step(step=step):
            loss = step(tbatch)
            env.sync_torch()
            return loss

        try:
            loss, t_first = timed(lambda: float(torch_step()))  # noqa: B023
        except Exception as err:  # noqa: BLE001  torch.compile needs a toolchain; report, don't abort
            info[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
            continue
        for _ in range(sizes.warmup):
            torch_step()
        # AMP: warm up until GradScaler's scale has settled, so timed steps do update the weights.
        extra = 0
        while step.last_skipped and extra < MAX_AMP_SETTLE_STEPS:
            torch_step()
            extra += 1
        # Peak of one steady-state step (after cuDNN autotuning and compilation).
        env.torch_peak_reset()
        torch_step()
        skipped_before = step.skipped
        info[name] = {"first_call_s": t_first, "first_loss": loss,
                      "memory": {"max_allocated_mib": _mib(env.torch_peak())}}
        fns[name] = torch_step
        steps[name] = (step, skipped_before)

    times = interleaved(fns, sizes.repeats)
    for name, (step, skipped_before) in steps.items():
        # Steps timed without an optimizer update (AMP overflow) make a variant look faster.
        info[name]["amp_skipped_timed_steps"] = step.skipped - skipped_before
    for name, samples in times.items():
        out["impls"][name] = _impl(samples, images, "img", **info[name])
    for name, failed in info.items():  # variants that failed to run keep their error
        out["impls"].setdefault(name, failed)
    losses = {k: v["first_loss"] for k, v in out["impls"].items() if "first_loss" in v}
    ref = losses.get("torch eager")
    out["first_loss_max_rel_diff"] = (max(abs(v - ref) for v in losses.values()) / max(abs(ref), 1e-12)
                                      if ref is not None else None)
    out["jax_process_peak_mib"] = _mib(env.jax_process_peak())
    return out


def bench_eval(sizes: Sizes, env: Env) -> dict:
    """Gallery embeddings of `eval_images` uint8 images, batch `eval_batch`."""
    cfg = model_config(sizes, env.jax_dtype)
    torch.manual_seed(0)
    tmodel = tref.TorchTVILFM(cfg)
    variables = jax.device_put(convert_official(tref.state_dict_numpy(tmodel), cfg))
    h, w = sizes.image_size
    images = np.random.default_rng(1).integers(0, 256, (sizes.eval_images, h, w, 3), dtype=np.uint8)
    extractor = FeatureExtractor(TVILFM(cfg), batch_size=sizes.eval_batch, image_size=(h, w), progress=False)

    def jax_pass():
        feats = extractor.image_features(variables, images, "rgb")
        return jax.block_until_ready(extractor.embed(variables, feats.current))

    tmodel.to(env.torch_device)
    if env.channels_last:
        tmodel.to(memory_format=torch.channels_last)
    extract = tref.gallery_extractor(tmodel, env.torch_device, amp=env.amp, channels_last=env.channels_last)

    def torch_pass():
        parts = [extract(images[i:i + sizes.eval_batch]) for i in range(0, len(images), sizes.eval_batch)]
        out = torch.cat(parts)
        env.sync_torch()
        return out

    emb_jax, t_jax_first = timed(jax_pass)
    env.torch_peak_reset()
    emb_torch, t_torch_first = timed(torch_pass)
    torch_peak = env.torch_peak()
    for _ in range(sizes.warmup):
        jax_pass(), torch_pass()
    times = interleaved({"jax": jax_pass, "torch eager": torch_pass}, sizes.aux_repeats)
    diff = float(np.abs(np.asarray(emb_jax, np.float32) - emb_torch.float().cpu().numpy()).max())
    n = sizes.eval_images
    return {
        "images": n, "batch": sizes.eval_batch, "max_abs_embedding_diff": diff,
        "impls": {"jax": _impl(times["jax"], n, "img", first_call_s=t_jax_first),
                  "torch eager": _impl(times["torch eager"], n, "img", first_call_s=t_torch_first,
                                       memory={"max_allocated_mib": _mib(torch_peak)})},
    }


def _tiny_metric_problem(seed: int = 0):
    """SYSU-protocol problem of 64 IR queries x a 16-image gallery (8 ids x cams 1/2)."""
    rng = np.random.default_rng(seed)
    q_pids = np.repeat(np.arange(8), 8)
    q_cams = np.tile([3, 6], 32)
    g_pids = np.repeat(np.arange(8), 2)
    g_cams = np.tile([1, 2], 8)
    return [metric_problems._scores(rng, q_pids, g_pids)], q_pids, g_pids, q_cams, g_cams


def bench_metrics(sizes: Sizes, env: Env) -> dict:
    """JAX `evaluate` vs the NumPy per-query reference, one similarity matrix per call."""
    problems = {}
    if sizes.metrics == "paper":
        sims, q_pids, g_pids, q_cams, g_cams = metric_problems.sysu_problem(num_trials=1)
        problems["sysu 3803x301"] = (sims[0], q_pids, g_pids, q_cams, g_cams, "sysu")
        sim, pids, _ = metric_problems.regdb_problem()
        problems["regdb 2060x2060"] = (sim, pids, pids, None, None, "regdb")
    else:
        sims, q_pids, g_pids, q_cams, g_cams = _tiny_metric_problem()
        problems[f"sysu {len(q_pids)}x{len(g_pids)}"] = (sims[0], q_pids, g_pids, q_cams, g_cams, "sysu")
    out = {}
    for label, (sim, qp, gp, q_cams, g_cams, protocol) in problems.items():
        call_jax = functools.partial(evaluate, sim, qp, gp, q_cams, g_cams, protocol)
        call_ref = functools.partial(reference_evaluate, sim, qp, gp, q_cams, g_cams, protocol)
        res_jax, t_first = timed(call_jax)
        res_ref = call_ref()
        diff = max(float(np.abs(res_jax["cmc"] - res_ref["cmc"]).max()), abs(res_jax["mAP"] - res_ref["mAP"]),
                   abs(res_jax["mINP"] - res_ref["mINP"]))
        times = interleaved({"jax": call_jax, "numpy reference": call_ref}, sizes.aux_repeats)
        queries = len(qp)
        out[label] = {"max_abs_metric_diff": diff, "rank1": float(res_jax["cmc"][0]), "impls": {
            "jax": _impl(times["jax"], queries, "query", first_call_s=t_first),
            "numpy reference": _impl(times["numpy reference"], queries, "query")}}
    return out


def bench_input(sizes: Sizes, env: Env) -> dict:
    """grain port vs PIL + torchvision, single core, alternating repetitions."""
    threads = torch.get_num_threads()
    # Imported here: the module pins OMP/BLAS threads to 1 for its own single-core comparison.
    from benchmarks import input_pipeline as ip

    try:
        rgb = ip.make_records(8, 4, seed=0)
        ir = ip.make_records(8, 4, seed=1)
        lab_rgb, lab_ir = ip.pipeline.read_labels(rgb), ip.pipeline.read_labels(ir)
        n = sizes.input_batches
        wall: dict[str, list[float]] = {"jax (grain port)": [], "torch reference": []}
        cpu: dict[str, list[float]] = {k: [] for k in wall}
        fns = {"jax (grain port)": lambda: ip.port_rates(rgb, ir, n, labels_rgb=lab_rgb, labels_ir=lab_ir),
               "torch reference": lambda: ip.reference_rates(rgb, ir, lab_rgb, lab_ir, n)}
        names = list(fns)
        for r in range(sizes.aux_repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                w, c = fns[name]()
                wall[name].append(w)
                cpu[name].append(c)
    finally:
        torch.set_num_threads(threads)
    images = 3 * ip.P * ip.K
    return {
        "batch": f"{ip.P}x{ip.K} examples = {images} augmented {ip.H}x{ip.W} images", "batches_per_repeat": n,
        "impls": {name: {"median_s": images / statistics.median(wall[name]),
                         "median_cpu_s": images / statistics.median(cpu[name]), "per_s": statistics.median(wall[name]),
                         "per_s_cpu_time": statistics.median(cpu[name]), "unit": "img",
                         "rates_wall": wall[name], "rates_cpu": cpu[name]} for name in wall},
    }


# --- report ------------------------------------------------------------------------------------


def machine_info(env: Env) -> dict:
    info = {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_backend": env.jax_backend, "jax_device": f"{env.jax_device.device_kind} ({env.jax_device.platform})",
        "torch": torch.__version__, "torch_device": str(env.torch_device), "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "OMP_NUM_THREADS", "JAX_PLATFORMS",
                                               "XLA_PYTHON_CLIENT_PREALLOCATE", "CUDA_VISIBLE_DEVICES")},
        "load_average_start": os.getloadavg(),
    }
    try:
        import flax
        import jaxlib
        import torchvision
        info.update(jaxlib=jaxlib.__version__, flax=flax.__version__, torchvision=torchvision.__version__)
    except ImportError:
        pass
    if env.torch_device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def rows(results: Mapping[str, Any]) -> list[tuple[str, str, dict, dict | None]]:
    """(section label, implementation, its numbers, the JAX numbers of that section)."""
    out = []

    def add(label, block):
        impls = block["impls"]
        jax_row = impls.get("jax") or impls.get("jax (grain port)")
        for name, numbers in impls.items():
            out.append((label, name, numbers, jax_row))

    for section, block in results.items():
        if section == "metrics":
            for problem, sub in block.items():
                add(f"metrics {problem}", sub)
        else:
            add(section, block)
    return out


def format_table(results: Mapping[str, Any]) -> str:
    head = (f"{'section':26s} {'implementation':16s} {'median ms':>10s} {'CPU ms':>9s} {'throughput':>17s} "
            f"{'JAX/this':>8s} {'(CPU)':>6s} {'first s':>8s}")
    lines = [head, "-" * len(head)]
    for label, name, n, jax_row in rows(results):
        if "error" in n:
            lines.append(f"{label:26s} {name:16s} failed: {n['error'][:80]}")
            continue
        own = n is jax_row or jax_row is None
        ratio = "" if own else f"{jax_row['median_s'] / n['median_s']:.2f}"
        cpu_ratio = "" if own else f"{jax_row['median_cpu_s'] / n['median_cpu_s']:.2f}"
        first = n.get("first_call_s")
        first = f"{first + n.get('compile_s', 0.0):.2f}" if first is not None else ""
        lines.append(f"{label:26s} {name:16s} {n['median_s'] * 1e3:10.2f} {n['median_cpu_s'] * 1e3:9.2f} "
                     f"{n['per_s']:11.1f} {n['unit'] + '/s':>5s} {ratio:>8s} {cpu_ratio:>6s} {first:>8s}")
    lines.append("median ms: wall clock; CPU ms: process CPU time (all threads); throughput from wall. JAX/this: "
                 "median time of JAX / of this row, wall and (CPU); < 1: JAX is faster. first s: first call incl.\n"
                 "compilation (jax.jit lower+compile, torch.compile). input: per batch of 96 images.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="full")
    p.add_argument("--quick", action="store_const", const="quick", dest="preset", help="= --preset quick (CPU)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--ids-per-batch", type=int, help="P identities per batch (override)")
    p.add_argument("--images-per-id", type=int, help="K images per identity and modality (override)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--resnet-blocks", help="four comma-separated counts, e.g. 3,4,6,3")
    p.add_argument("--resnet-width", type=int, help="ResNet base width; D = 32 * width")
    p.add_argument("--text-width", type=int)
    p.add_argument("--text-layers", type=int)
    p.add_argument("--text-heads", type=int)
    p.add_argument("--eval-images", type=int)
    p.add_argument("--eval-batch", type=int)
    p.add_argument("--repeats", type=int, help="measured train steps per implementation")
    p.add_argument("--aux-repeats", type=int, help="measured repetitions of the eval, metrics and input sections")
    p.add_argument("--warmup", type=int)
    p.add_argument("--cpu", action="store_true", help="run both frameworks on CPU even when a GPU is available")
    p.add_argument("--no-amp", action="store_true", help="fp32 everywhere on GPU (no bf16 / AMP fp16)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile variant of the train steps; auto: on with CUDA only (on CPU, inductor "
                        "takes minutes per stage to compile)")
    p.add_argument("--threads", type=int, help="CPU threads for each framework (default: the preset's; "
                                               "quick/tiny use 1, full the frameworks' defaults)")
    p.add_argument("--json", help="where to write the results (default benchmarks/results/<preset>-<backend>.json)")
    return p.parse_args(argv)


def sizes_from_args(args: argparse.Namespace) -> Sizes:
    sizes = PRESETS[args.preset]
    overrides = {k: getattr(args, k) for k in ("ids_per_batch", "images_per_id", "resnet_width", "text_width",
                                               "text_layers", "text_heads", "eval_images", "eval_batch",
                                               "repeats", "aux_repeats", "warmup", "threads")
                 if getattr(args, k) is not None}
    if args.image_size:
        overrides["image_size"] = tuple(args.image_size)
    if args.resnet_blocks:
        try:
            overrides["resnet_blocks"] = tuple(int(b) for b in args.resnet_blocks.split(","))
        except ValueError:
            raise SystemExit(f"--resnet-blocks: expected comma-separated ints, got {args.resnet_blocks!r}") from None
    sizes = dataclasses.replace(sizes, **overrides)
    for key in ("ids_per_batch", "images_per_id", "resnet_width", "text_width", "text_layers", "text_heads",
                "eval_images", "eval_batch", "repeats", "aux_repeats"):
        if getattr(sizes, key) < 1:
            raise SystemExit(f"--{key.replace('_', '-')} must be >= 1, got {getattr(sizes, key)}")
    if sizes.threads is not None and sizes.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {sizes.threads}")
    if sizes.batch < 2:
        raise SystemExit("a train batch needs at least 2 images per modality (BatchNorm in train mode)")
    if sizes.ids_per_batch > sizes.num_classes:
        raise SystemExit(f"--ids-per-batch {sizes.ids_per_batch} exceeds the {sizes.num_classes} classes")
    if any(s % 16 for s in sizes.image_size):
        raise SystemExit(f"--image-size must be multiples of 16, got {sizes.image_size}")
    try:
        model_config(sizes, "float32")
    except ValueError as err:
        raise SystemExit(f"invalid sizes: {err}") from None
    return sizes


def set_threads(threads: int | None) -> None:
    """Pins both frameworks to `threads` CPU threads (None: leave their defaults).

    On a small shared machine, PyTorch's OpenMP threads spin-wait for cores that other processes
    hold, which makes multi-threaded timings erratic (a 16 ms step measured 0.1-2.5 s with 2
    threads on 2 busy cores); one thread per framework is stable. For XLA this turns off its
    multi-threaded Eigen and intra-op pool, but XLA:CPU may still run independent ops
    concurrently (CPU time above wall time shows it). XLA reads its flags when its CPU client
    starts, so this only takes effect if nothing has used JAX yet in this process.
    """
    if threads is None:
        return
    torch.set_num_threads(threads)
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        extra = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        if extra not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()


def main(argv: list[str] | None = None) -> dict:
    """Runs the selected sections, prints the table, writes the JSON; returns the report."""
    threads, xla_flags = torch.get_num_threads(), os.environ.get("XLA_FLAGS")
    try:
        return _main(argv)
    finally:  # leave the calling process (e.g. a test session) as it was
        torch.set_num_threads(threads)
        if xla_flags is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = xla_flags


def _main(argv: list[str] | None) -> dict:
    args = parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise SystemExit(f"--sections: unknown {unknown}; expected a comma-separated subset of {SECTIONS}")
    sizes = sizes_from_args(args)
    set_threads(sizes.threads)
    if args.cpu:
        jax.config.update("jax_platforms", "cpu")
    use_gpu = not args.cpu and torch.cuda.is_available()
    env = Env(use_gpu=use_gpu, amp=not args.no_amp,
              compile_torch=args.compile == "on" or (args.compile == "auto" and use_gpu))
    report = {"preset": args.preset, "sizes": dataclasses.asdict(sizes), "machine": machine_info(env), "results": {}}
    print(f"benchmarks.run preset={args.preset}: JAX {env.jax_device.device_kind} ({env.jax_dtype}), "
          f"PyTorch {env.torch_device} ({'AMP fp16' if env.amp else 'fp32'}, {torch.get_num_threads()} threads), "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    print(f"sizes: {dataclasses.asdict(sizes)}", flush=True)
    if args.preset == "full" and env.jax_backend == "cpu":
        print("WARNING: the full preset on CPU runs for hours; use --quick", flush=True)
    if (env.jax_backend == "cpu") != (env.torch_device.type == "cpu"):
        report["machine"]["warning"] = (f"JAX runs on {env.jax_backend} but PyTorch on {env.torch_device}: "
                                        "the ratios compare different devices")
        print(f"WARNING: {report['machine']['warning']}", flush=True)
    runners = {"stage1": functools.partial(bench_train, "stage1"), "stage2": functools.partial(bench_train, "stage2"),
               "eval": bench_eval, "metrics": bench_metrics, "input": bench_input}
    path = Path(args.json) if args.json else REPO / "benchmarks" / "results" / f"{args.preset}-{env.jax_backend}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for section in SECTIONS:
        if section in sections:
            start = time.perf_counter()
            report["results"][section] = runners[section](sizes, env)
            print(f"  {section} done in {time.perf_counter() - start:.1f} s", flush=True)
            gc.collect()  # the section's models and state go before the next section allocates
            if env.torch_device.type == "cuda":
                torch.cuda.empty_cache()
            report["machine"]["load_average_end"] = os.getloadavg()
            # Written after every section, so a run cut short by a time limit keeps what it measured.
            path.write_text(json.dumps(report, indent=1, default=float))
    print()
    print(format_table(report["results"]))
    for section in ("stage1", "stage2"):
        if section in report["results"]:
            r = report["results"][section]
            mem = r["impls"]["jax"].get("memory") or {}
            torch_mem = (r["impls"].get("torch eager", {}).get("memory") or {}).get("max_allocated_mib")
            print(f"{section}: first-step loss max rel. diff across impls {r['first_loss_max_rel_diff']:.2e}; "
                  f"JAX XLA peak estimate {mem.get('peak_estimate_mib')} MiB, torch eager max allocated "
                  f"{torch_mem} MiB")
            for name, numbers in r["impls"].items():
                if numbers.get("amp_skipped_timed_steps"):
                    print(f"WARNING: {section} {name}: GradScaler skipped {numbers['amp_skipped_timed_steps']} "
                          "of the timed steps (no weight update), so its time is too low")
    print(f"load average: start {report['machine']['load_average_start'][0]:.1f}, "
          f"end {report['machine']['load_average_end'][0]:.1f} on {os.cpu_count()} CPUs")
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
