"""TFDS build time per 1,000 images: the Python (no TensorFlow) path of our builders.

    python -m benchmarks.tfds_build [--layout sysu] [--scale 1] [--data_dir DIR]

Writes a synthetic tree (timed apart: that is the renderer, not TFDS), then builds it the way
a real dataset is built (the manual builder with the tree as --manual_dir) and reports, per
1,000 written records: the validation pass of `layouts` (full image decode), the whole build
(validation + load_image + tokenize + ArrayRecord write), and reading records back through
`tfds.data_source`, next to what a PNG-encoded image would cost to decode instead.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from tfds_builders import schema
from tfds_builders.llcm import llcm_dataset_builder
from tfds_builders.regdb import regdb_dataset_builder
from tfds_builders.sysu_mm01 import sysu_mm01_dataset_builder
from tvilfm_jax.data import layouts
from tvilfm_jax.data.synthetic import write_tree
from tvilfm_jax.data.synthetic.trees import DEFAULTS

BUILDERS = {
    "sysu": (sysu_mm01_dataset_builder.Builder, None, "sysu_mm01"),
    "regdb": (regdb_dataset_builder.Builder, "trial1", "regdb/trial1"),
    "llcm": (llcm_dataset_builder.Builder, None, "llcm"),
}


def _sizes(layout: str, scale: int) -> dict:
    sizes = {k: v for k, v in DEFAULTS[layout].items() if k in ("num_train_ids", "num_test_ids")}
    sizes = {k: v * scale for k, v in sizes.items()}
    if layout == "regdb":
        sizes["num_trials"] = 1
    return sizes


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(layout: str, scale: int, work: Path) -> dict:
    root = work / "tree"
    summary, t_tree = _timed(lambda: write_tree(root, layout, seed=0, **_sizes(layout, scale)))
    trial = 1 if layout == "regdb" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", layouts.DatasetCountWarning)
        index, t_validate = _timed(lambda: layouts.read_layout(root, layout, trial=trial, images="decode"))
        cls, config, name = BUILDERS[layout]
        builder = cls(config=config, data_dir=str(work / "data"))
        _, t_build = _timed(lambda: builder.download_and_prepare(
            file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=str(root))))
    sources = tfds.data_source(name, data_dir=str(work / "data"))
    records = sum(len(sources[s]) for s in schema.SPLITS)
    train = sources["train_rgb"]
    _, t_read = _timed(lambda: [train[i] for i in range(len(train))])
    image = train[0]["image"]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    png = buffer.getvalue()
    repeats = 200
    _, t_png = _timed(lambda: [np.asarray(Image.open(io.BytesIO(png))) for _ in range(repeats)])
    size = sum(f.stat().st_size for f in (work / "data").rglob("*array_record*"))
    return {
        "layout": layout,
        "records": records,
        "source_files": summary["num_files"],
        "tree_s": t_tree,
        "validate_s": t_validate,
        "build_s": t_build,
        "read_ms": 1e3 * t_read / len(train),
        "png_decode_ms": 1e3 * t_png / repeats,
        "kb_per_record": size / records / 1e3,
        "index_counts": index.counts(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=sorted(BUILDERS), default="sysu")
    parser.add_argument("--scale", type=int, default=1, help="multiplies write_tree's default id counts")
    parser.add_argument("--data_dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.data_dir) as work:
        r = run(args.layout, args.scale, Path(work))
    per_k = 1000 / r["records"]
    print(f"TFDS build, Python path (no TensorFlow), {r['layout']}: {r['records']} records "
          f"from {r['source_files']} source files; {os.cpu_count()} CPU(s)")
    print(f"{'stage':<44}{'s total':>10}{'s / 1k records':>16}")
    rows = [
        ("synthetic tree (write_tree, not TFDS)", r["tree_s"]),
        ("layouts validation (full decode pass)", r["validate_s"]),
        ("whole build (validate + encode + write)", r["build_s"]),
        ("  of which writing (build - validation)", r["build_s"] - r["validate_s"]),
    ]
    for label, seconds in rows:
        print(f"{label:<44}{seconds:>10.2f}{seconds * per_k:>16.2f}")
    print(f"read back via tfds.data_source: {r['read_ms']:.3f} ms/record "
          f"(a PNG decode of the same image: {r['png_decode_ms']:.3f} ms); {r['kb_per_record']:.1f} KB/record on disk")


if __name__ == "__main__":
    main()
