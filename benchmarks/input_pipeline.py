"""Training input pipeline throughput on ONE CPU core: this port vs the original's way.

    python -m benchmarks.input_pipeline [--batches 20] [--tfds_data_dir DIR]

Both sides produce the same thing per training example: one RGB record augmented twice
(color1, color2), one IR record augmented once (thermal), caption choice, and batching of
P*K = 32 examples (96 augmented images per batch). Reported: augmented images per second.

- port: `tvilfm_jax.data.pipeline` (grain iterator, in-process, no read-ahead) over
  (a) an in-memory list of records, (b) records stored as raw bytes and decoded per access (the
  TFDS `image` encoding), and, when `--tfds_data_dir` holds a prepared copy of `--tfds_name`
  (e.g. `synthetic/regdb`), (c) `pipeline.tfds_train_sources` and (d) plain
  `tfds.data_source` splits (tfds' generic decoder) of it. Prepare one with
  `tfds build tfds_builders/synthetic --config regdb --file_format=array_record --data_dir DIR`
  or the builder's `download_and_prepare(file_format="array_record")`.
- reference: the original's recipe, i.e. PIL + torchvision.transforms on in-memory uint8 arrays,
  ChannelRandomErasing / ChannelExchange / ChannelAdapGray written in torch, Python `random`,
  collated by a torch DataLoader (num_workers=0).

Everything runs single-threaded (torch and BLAS threads are pinned to 1) in this one process.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import random  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from tvilfm_jax.data import images, pipeline, tokenizer, transforms  # noqa: E402

_BATCHES = flags.DEFINE_integer("batches", 20, "timed batches per configuration (after 2 warm-up)")
_IDS = flags.DEFINE_integer("ids", 40, "identities in the synthetic in-memory records")
_PER_ID = flags.DEFINE_integer("per_id", 8, "images per identity and modality in the in-memory records")
_TFDS_DIR = flags.DEFINE_string("tfds_data_dir", None, "data_dir holding a prepared --tfds_name dataset")
_TFDS_NAME = flags.DEFINE_string(
    "tfds_name", "synthetic/regdb", "TFDS dataset (and config) in --tfds_data_dir"
)

P, K = 8, 4
H, W = images.IMAGE_SIZE


class Timer:
    """Wall-clock and process CPU time of a block. On a busy machine the CPU-time rate is the
    fairer "per core" number: this process is single-threaded, so CPU time is its core time."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def rates(self, count: int) -> tuple[float, float]:
        """(count per wall second, count per CPU second)."""
        return count / self.wall, count / self.cpu


# --- synthetic records ---------------------------------------------------------------------


def _person_like(rng: np.random.Generator) -> np.ndarray:
    """A blocky uint8 [288, 144, 3] image (coarse random colours, upsampled, plus noise)."""
    coarse = rng.integers(0, 256, (18, 9, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1).astype(np.int16)
    img += rng.integers(-6, 7, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_records(num_ids: int, per_id: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num_ids * per_id):
        ids = np.zeros(tokenizer.CONTEXT_LENGTH, np.int32)
        ids[:3] = (tokenizer.SOT, 320 + i % 1000, tokenizer.EOT)
        records.append(
            {
                "image": _person_like(rng),
                "label": np.int32(i % num_ids),
                "caption_ids": ids,
                "rephrase_ids": ids[::-1].copy(),
            }
        )
    return records


class RawBytesRecords:
    """Random-access records whose image is stored as raw bytes (the TFDS `image` encoding)."""

    def __init__(self, records: list[dict]):
        self._records = [dict(r, image=r["image"].tobytes()) for r in records]

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> dict:
        record = dict(self._records[i])
        record["image"] = np.frombuffer(record["image"], np.uint8).reshape(H, W, 3)
        return record


# --- the reference: PIL + torchvision + torch channel ops, as in the original ------------------


def _reference_pipelines():
    import torch
    import torchvision.transforms as tvt

    torch.set_num_threads(1)

    class ChannelRandomErasing:
        def __init__(self, probability, sl=0.02, sh=0.4, r1=0.3, mean=transforms.ERASE_FILL):
            self.probability, self.sl, self.sh, self.r1, self.mean = probability, sl, sh, r1, mean

        def __call__(self, img):
            if random.uniform(0, 1) > self.probability:
                return img
            for _ in range(100):
                area = img.size()[1] * img.size()[2]
                target = random.uniform(self.sl, self.sh) * area
                aspect = random.uniform(self.r1, 1 / self.r1)
                h = round(math.sqrt(target * aspect))
                w = round(math.sqrt(target / aspect))
                if w < img.size()[2] and h < img.size()[1]:
                    x1 = random.randint(0, img.size()[1] - h)
                    y1 = random.randint(0, img.size()[2] - w)
                    for c in range(3):
                        img[c, x1 : x1 + h, y1 : y1 + w] = self.mean[c]
                    return img
            return img

    class ChannelExchange:  # gray=2, with the 0.5 skip of docs/original.md §5.5
        def __call__(self, img):
            if random.uniform(0, 1) < 0.5:
                return img
            idx = random.randint(0, 2)
            for c in range(3):
                if c != idx:
                    img[c] = img[idx]
            return img

    class ChannelAdapGray:
        def __init__(self, probability):
            self.probability = probability

        def __call__(self, img):
            idx = random.randint(0, 3)
            if idx < 3:
                for c in range(3):
                    if c != idx:
                        img[c] = img[idx]
            elif random.uniform(0, 1) <= self.probability:
                gray = 0.2989 * img[0] + 0.5870 * img[1] + 0.1140 * img[2]
                img[0], img[1], img[2] = gray, gray, gray
            return img

    normalize = tvt.Normalize(mean=list(transforms.IMAGENET_MEAN), std=list(transforms.IMAGENET_STD))
    head = [tvt.ToPILImage(), tvt.Pad(10), tvt.RandomCrop((H, W)), tvt.RandomHorizontalFlip()]
    color1 = tvt.Compose(
        head + [tvt.RandomGrayscale(p=0.1), tvt.ToTensor(), normalize, ChannelRandomErasing(0.6)]
    )
    color2 = tvt.Compose(head + [tvt.ToTensor(), normalize, ChannelRandomErasing(0.6), ChannelExchange()])
    thermal = tvt.Compose(head + [tvt.ToTensor(), normalize, ChannelRandomErasing(0.5), ChannelAdapGray(0.6)])
    return color1, color2, thermal


def reference_rates(
    rgb: list[dict], ir: list[dict], labels_rgb, labels_ir, batches: int
) -> tuple[float, float]:
    """(images/s wall, images/s CPU) of the original's recipe over the same records."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    from tvilfm_jax.data import sampler

    color1, color2, thermal = _reference_pipelines()
    rgb_images = np.stack([r["image"] for r in rgb])  # the original keeps all images in memory
    ir_images = np.stack([r["image"] for r in ir])

    class TriData(Dataset):
        def __init__(self, index_rgb, index_ir):
            self.index_rgb, self.index_ir = index_rgb, index_ir

        def __len__(self):
            return len(self.index_rgb)

        def __getitem__(self, i):
            a, b = self.index_rgb[i], self.index_ir[i]
            text_rgb = rgb[a]["rephrase_ids" if random.random() < 0.5 else "caption_ids"]
            text_ir = ir[b]["rephrase_ids" if random.random() < 0.5 else "caption_ids"]
            return {
                "img_rgb_ori": color1(rgb_images[a]),
                "img_rgb_aug": color2(rgb_images[a]),
                "img_ir": thermal(ir_images[b]),
                "target_rgb": int(labels_rgb[a]),
                "target_ir": int(labels_ir[b]),
                "text_rgb": torch.from_numpy(text_rgb),
                "text_ir": torch.from_numpy(text_ir),
            }

    random.seed(1)
    epochs = [sampler.identity_epoch(labels_rgb, labels_ir, P, K, seed=1, epoch=0)]
    while sum(e[0].size for e in epochs) < (batches + 2) * P * K:
        epochs.append(sampler.identity_epoch(labels_rgb, labels_ir, P, K, seed=1, epoch=len(epochs)))
    idx_rgb = np.concatenate([e[0] for e in epochs])
    idx_ir = np.concatenate([e[1] for e in epochs])
    loader = iter(
        DataLoader(TriData(idx_rgb, idx_ir), batch_size=P * K, shuffle=False, num_workers=0, drop_last=True)
    )
    for _ in range(2):
        next(loader)
    with Timer() as timer:
        for _ in range(batches):
            batch = next(loader)
    assert batch["img_ir"].shape == (P * K, 3, H, W)
    return timer.rates(3 * P * K * batches)


# --- the port ----------------------------------------------------------------------------------


def port_rates(rgb, ir, batches: int, **kwargs) -> tuple[float, float]:
    """(images/s wall, images/s CPU) of `pipeline.TrainBatches(rgb, ir, **kwargs)`, in-process."""
    tb = pipeline.TrainBatches(rgb, ir, ids_per_batch=P, images_per_id=K, seed=1, **kwargs)
    epochs = (batches + 2) // tb.steps_per_epoch + 1
    it = pipeline.make_iterator(tb.dataset(num_epochs=epochs), prefetch=0)
    for _ in range(2):
        next(it)
    with Timer() as timer:
        for _ in range(batches):
            batch = next(it)
    assert batch["img_ir"].shape == (P * K, H, W, 3)
    return timer.rates(3 * P * K * batches)


def per_transform_us(rgb: list[dict], repeats: int = 200) -> list[tuple[str, float, float]]:
    """CPU microseconds per image of each transform alone: (name, port, reference)."""
    ref = dict(zip(("color1", "color2", "thermal"), _reference_pipelines()))
    rng = np.random.default_rng(0)
    images = [r["image"] for r in rgb[:repeats]]
    rows = []
    for name in ("color1", "color2", "thermal"):
        ours = getattr(transforms, name)
        with Timer() as t_port:
            for img in images:
                ours(img, rng)
        with Timer() as t_ref:
            for img in images:
                ref[name](img)
        rows.append((name, t_port.cpu / len(images) * 1e6, t_ref.cpu / len(images) * 1e6))
    return rows


def main(argv):
    del argv
    batches = _BATCHES.value
    rgb = make_records(_IDS.value, _PER_ID.value, seed=0)
    ir = make_records(_IDS.value, _PER_ID.value, seed=1)
    labels_rgb, labels_ir = pipeline.read_labels(rgb), pipeline.read_labels(ir)

    rows = [
        ("port: in-memory list", port_rates(rgb, ir, batches, labels_rgb=labels_rgb, labels_ir=labels_ir))
    ]
    rows.append(
        (
            "port: raw-bytes records",
            port_rates(
                RawBytesRecords(rgb), RawBytesRecords(ir), batches, labels_rgb=labels_rgb, labels_ir=labels_ir
            ),
        )
    )
    if _TFDS_DIR.value:
        import tensorflow_datasets as tfds

        name, data_dir = _TFDS_NAME.value, _TFDS_DIR.value
        direct = pipeline.tfds_train_sources(name, data_dir)
        generic = [
            tfds.data_source(name, split=s, data_dir=data_dir, download=False)
            for s in ("train_rgb", "train_ir")
        ]
        with Timer() as timer:
            labels = [pipeline.read_labels(s) for s in direct]
        print(f"read_labels over {len(direct[0]) + len(direct[1])} TFDS records: {timer.wall:.2f} s")
        for label, sources in (
            (f"tfds_train_sources({name})", direct),
            (f"tfds.data_source({name})", generic),
        ):
            rows.append(
                (f"port: {label}", port_rates(*sources, batches, labels_rgb=labels[0], labels_ir=labels[1]))
            )
    reference = reference_rates(rgb, ir, labels_rgb, labels_ir, batches)
    rows.append(("reference: PIL+torchvision, in-memory", reference))

    print(
        f"\nTraining input pipeline, 1 CPU core, batch {P}x{K} examples = {3 * P * K} augmented {H}x{W} images"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"{'pipeline':44s} {'img/s wall':>11s} {'img/s CPU':>10s} {'ms/batch CPU':>13s} {'vs ref (CPU)':>13s}"
    )
    for name, (wall, cpu) in rows:
        print(
            f"{name:44s} {wall:11.0f} {cpu:10.0f} {3 * P * K / cpu * 1e3:13.1f} {cpu / reference[1]:12.2f}x"
        )

    print(f"\nPer transform, CPU microseconds per {H}x{W} image (uint8 in, normalised float32 out)")
    print(f"{'transform':10s} {'port':>8s} {'reference':>10s} {'speed-up':>9s}")
    for name, t_port, t_ref in per_transform_us(rgb):
        print(f"{name:10s} {t_port:8.0f} {t_ref:10.0f} {t_ref / t_port:8.2f}x")


if __name__ == "__main__":
    app.run(main)
