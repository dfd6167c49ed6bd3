"""`python -m tvilfm_jax.demo`: the quick-start run on the embedded synthetic default.

What it does today: writes a small synthetic SYSU-MM01-layout dataset (drawn people, captions),
reads and validates it, builds the TVI-LFM network in a small configuration, and runs every
forward path on a real batch of those people — stage-1 and stage-2 training forwards, gallery
and IR / Text / Fusion / MER query embeddings — printing shapes and parameter counts, plus the
parameter count of the full-size (ResNet-50 + CLIP text) model.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from tvilfm_jax.data.images import load_image
from tvilfm_jax.data.layouts import read_sysu
from tvilfm_jax.data.synthetic import write_tree
from tvilfm_jax.data.tokenizer import tokenize
from tvilfm_jax.data.transforms import normalize
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig, add_backup, init_variables


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _normalise(images: np.ndarray) -> jnp.ndarray:
    """uint8 [N, H, W, 3] -> ImageNet-normalised float32 (the test-time transform)."""
    return jnp.asarray(np.stack([normalize(img) for img in images]))


def _shapes(tree) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in tree.items())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/demo", help="where the synthetic dataset is written")
    parser.add_argument("--ids", type=int, default=4, help="identities in the demo batch (P)")
    parser.add_argument("--per-id", type=int, default=2, help="images per identity and modality (K)")
    args = parser.parse_args(argv)

    root = Path(args.workdir) / "synthetic_sysu"
    if not root.exists() or not any(root.iterdir()):
        t0 = time.time()
        summary = write_tree(root, "sysu", seed=0, num_train_ids=12, num_test_ids=6, images_per_cam=2)
        print(f"wrote a synthetic SYSU-MM01 tree to {root}: {summary['num_files']} files, "
              f"{summary['num_ids']} identities ({time.time() - t0:.1f} s)")
    index = read_sysu(root, synthetic=True)
    print(f"read {root}: {len(index.train_rgb)} RGB / {len(index.train_ir)} IR training images, "
          f"{index.num_classes} classes, {len(index.query)} IR queries")

    # One P x K batch, RGB and IR aligned by identity as the sampler does.
    h, w = 128, 64
    labels = sorted({r.label for r in index.train_rgb} & {r.label for r in index.train_ir})[: args.ids]
    rgb = [r for lab in labels for r in [x for x in index.train_rgb if x.label == lab][: args.per_id]]
    ir = [r for lab in labels for r in [x for x in index.train_ir if x.label == lab][: args.per_id]]
    rgb_img = _normalise(np.stack([load_image(root / r.path, h, w) for r in rgb]))
    ir_img = _normalise(np.stack([load_image(root / r.path, h, w) for r in ir]))
    text_rgb = jnp.asarray(tokenize([r.caption for r in rgb]))
    text_ir = jnp.asarray(tokenize([r.caption for r in ir]))
    print(f'example RGB caption: "{rgb[0].caption}"')
    print(f'its IR partner:      "{ir[0].caption}"')

    config = ModelConfig(num_classes=index.num_classes, resnet_blocks=(1, 1, 1, 1), resnet_width=16,
                         text=TextConfig(width=64, layers=2, heads=2, embed_dim=512), backup=True)
    model = TVILFM(config)
    variables = add_backup(init_variables(config, jax.random.key(0), (h, w)))
    print(f"\nsmall TVI-LFM (blocks {config.resnet_blocks}, width {config.resnet_width}, D {config.embed_dim}):")
    for name, sub in variables["params"].items():
        print(f"  {name:12s} {_count(sub):>12,d} params")

    (feats, logits), _ = model.apply(variables, rgb_img, rgb_img, ir_img, method="stage1",
                                     mutable=["batch_stats"])
    print(f"stage-1 forward (RGB view1, view2, IR): features {feats.shape}, logits {logits.shape}")
    (feats, logits), _ = model.apply(variables, rgb_img, rgb_img, ir_img, text_rgb, text_ir,
                                     method="stage2", mutable=["batch_stats"])
    print(f"stage-2 forward (+ fusion, text):       features {feats.shape}, logits {logits.shape}")
    gallery = model.apply(variables, rgb_img, method="gallery_embeddings")
    query = model.apply(variables, ir_img, text_rgb, text_ir, method="query_embeddings")
    print(f"gallery embeddings: {_shapes(gallery)}")
    print(f"query embeddings:   {_shapes(query)}")

    full = ModelConfig(num_classes=395)
    shapes = jax.eval_shape(lambda k: init_variables(full, k, (288, 144)), jax.random.key(0))
    print(f"\nfull-size TVI-LFM (dual-stem ResNet-50 + CLIP text, SYSU C=395): "
          f"{_count(shapes['params']):,d} params")
    print("\nTraining and evaluation are not wired into this demo yet; see README.")


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
