"""Grain training input pipeline: identity sampler -> paired records -> captions -> augment -> batch.

The pipeline is a `grain.MapDataset` whose element i is this process's share of global batch i
(counting batches over all epochs). Everything random in a batch is a pure function of
(seed, epoch, global position in the epoch): the sampler order of `sampler.identity_epoch`, and
one NumPy generator per example for the caption choice and the three augmentations. Batches
therefore do not depend on the number of worker processes or hosts, and resuming at batch i
(grain iterator state, or `start_step`) reproduces the same stream.

Sources are random-access sequences of record dicts: a `tfds.data_source(...)` split
(`train_rgb` / `train_ir`, schema in tfds_builders/), best wrapped in `TfdsTrainRecords`, which
decodes only these keys (training does; `tfds_train_sources` opens both splits so), or, e.g. in
tests, a plain list. Keys used: `image` uint8 [h, w, 3] (Lanczos-resized to `image_size` when it
differs), `label` int (0..C-1), and with text `caption_ids` int [77] (and `rephrase_ids` int [77]
with `llm_aug`).

A batch is a dict of NumPy arrays (B = P*K / process_count, (H, W) = image_size):
  img_rgb_ori, img_rgb_aug, img_ir   float32 [B, H, W, 3]  (color1, color2, thermal; normalised)
  target_rgb, target_ir              int32 [B]             (equal position-wise)
  text_rgb, text_ir                  int32 [B, 77]         (only when with_text)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

from tvilfm_jax.data import images, sampler, transforms
from tvilfm_jax.data.tokenizer import CONTEXT_LENGTH

# Keeps the per-example random streams apart from the sampler's (sampler.SAMPLER_STREAM).
EXAMPLE_STREAM = 1
# The original's probability of feeding a caption's LLM rephrase instead (docs/original.md §5.3).
LLM_AUG_PROB = 0.5


def _describe(source: Any) -> str:
    split = getattr(source, "split", None)
    return f"split {split!r}" if split is not None else type(source).__name__


def _field(record: Any, key: str, where: str) -> Any:
    try:
        return record[key]
    except (KeyError, TypeError):
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise KeyError(f"{where}: record has no field {key!r} (fields: {keys})") from None


def read_labels(source: Sequence[dict]) -> np.ndarray:
    """int64 [N], the `label` of every record of `source`, in order.

    One pass over the records (for a TFDS source about 0.6 ms of CPU per record here, mostly
    ArrayRecord decompression and tf.Example parsing); pass the labels to `TrainBatches` when
    they are known already.
    """
    where = _describe(source)
    labels = np.empty(len(source), np.int64)
    for i in range(len(source)):
        labels[i] = int(np.asarray(_field(source[i], "label", f"{where} record {i}")).reshape(()))
    return labels


def check_augmentation(llm_aug_prob: float, image_size: Sequence[int], crop_padding: int,
                       where: str = "") -> tuple[float, tuple[int, int], int]:
    """(llm_aug_prob, (H, W), crop_padding) as `TrainBatches` takes them; a bad one is a
    ValueError naming `where` + the argument (the training config: "config.data.")."""
    if not 0.0 <= llm_aug_prob <= 1.0:
        raise ValueError(f"{where}llm_aug_prob must be in [0, 1], got {llm_aug_prob!r}")
    size = images.check_size(image_size, f"{where}image_size")
    if isinstance(crop_padding, bool) or int(crop_padding) != crop_padding or crop_padding < 0:
        raise ValueError(f"{where}crop_padding must be an int >= 0, got {crop_padding!r}")
    return llm_aug_prob, size, int(crop_padding)


class TfdsTrainRecords:
    """A TFDS `train_rgb` / `train_ir` data source that decodes only the fields the pipeline uses.

    tfds' generic NumPy decoder converts all nine features of a record (~0.2 ms of CPU here);
    this reads `image`, `label`, `caption_ids` and `rephrase_ids` straight from the stored
    tf.Example (~0.04 ms). The shortcut is checked against tfds' own decoding of the first
    record, and tfds' decoder is used for every record if they differ (say, PNG images).

    Args:
      source: `tfds.data_source(name, split=...)` of a builder written with the record schema.
    """

    fields = ("image", "label", "caption_ids", "rephrase_ids")

    def __init__(self, source):
        self._source = source
        self.split = source.split
        self._image_shape = tuple(source.dataset_info.features["image"].shape)
        self.direct = len(source) > 0 and self._direct_matches_tfds(0)

    def _decode_direct(self, raw: bytes) -> dict:
        from tensorflow_datasets.proto import tf_example_pb2  # tfds' copy of the proto, no TF

        feature = tf_example_pb2.Example.FromString(raw).features.feature
        return {
            "image": np.frombuffer(feature["image"].bytes_list.value[0], np.uint8).reshape(self._image_shape),
            "label": int(feature["label"].int64_list.value[0]),
            "caption_ids": np.asarray(feature["caption_ids"].int64_list.value, np.int32),
            "rephrase_ids": np.asarray(feature["rephrase_ids"].int64_list.value, np.int32),
        }

    def _direct_matches_tfds(self, index: int) -> bool:
        reference = self._source[index]
        try:
            direct = self._decode_direct(self._source.data_source[index])
        except (KeyError, IndexError, ValueError):
            return False
        return all(
            key in reference
            and np.shape(direct[key]) == np.shape(reference[key])
            and np.array_equal(direct[key], reference[key])
            for key in self.fields
        )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        if not self.direct:
            return self._source[index]
        return self._decode_direct(self._source.data_source[index])


def tfds_train_sources(name: str, data_dir: str | None = None) -> tuple[TfdsTrainRecords, TfdsTrainRecords]:
    """(train_rgb, train_ir) of a prepared TFDS dataset, e.g. `tfds_train_sources("sysu_mm01")`."""
    import tensorflow_datasets as tfds

    return tuple(
        TfdsTrainRecords(tfds.data_source(name, split=split, data_dir=data_dir, download=False))
        for split in ("train_rgb", "train_ir")
    )


class TrainBatches:
    """Builds this process's share of every training batch; a pure function of the step.

    Args:
      rgb_source, ir_source: random-access sequences of record dicts (`train_rgb`, `train_ir`).
      ids_per_batch: P identities per global batch (8).
      images_per_id: K images per identity and modality (4). Global batch = P*K.
      seed: base seed of the sampler and of all per-example randomness.
      process_index, process_count: this host's slice of every global batch.
      with_text: whether to emit `text_rgb` / `text_ir` (stage 1 does not need them).
      llm_aug, llm_aug_prob: each caption is replaced by its LLM rephrase with this probability,
        independently for the RGB and the IR sample (docs/original.md §5.3).
      image_size: (H, W) of the emitted images; records of another size are Lanczos-resized
        at load.
      crop_padding: zero pad before the random crop, in pixels of `image_size` (the original's
        10 at 288x144; smaller images want a proportionally smaller shift).
      labels_rgb, labels_ir: the sources' labels if already known; read with `read_labels`
        otherwise.
    """

    def __init__(
        self,
        rgb_source: Sequence[dict],
        ir_source: Sequence[dict],
        *,
        ids_per_batch: int = 8,
        images_per_id: int = 4,
        seed: int = 1,
        process_index: int = 0,
        process_count: int = 1,
        with_text: bool = True,
        llm_aug: bool = True,
        llm_aug_prob: float = LLM_AUG_PROB,
        image_size: tuple[int, int] = images.IMAGE_SIZE,
        crop_padding: int = transforms.PAD,
        labels_rgb: np.ndarray | None = None,
        labels_ir: np.ndarray | None = None,
    ):
        self.rgb_source = rgb_source
        self.ir_source = ir_source
        self.labels_rgb = np.asarray(read_labels(rgb_source) if labels_rgb is None else labels_rgb)
        self.labels_ir = np.asarray(read_labels(ir_source) if labels_ir is None else labels_ir)
        for name, labels, source in (
            ("labels_rgb", self.labels_rgb, rgb_source),
            ("labels_ir", self.labels_ir, ir_source),
        ):
            if labels.shape != (len(source),):
                raise ValueError(f"{name} has shape {labels.shape}, expected ({len(source)},)")
        self.ids_per_batch = ids_per_batch
        self.images_per_id = images_per_id
        self.global_batch = ids_per_batch * images_per_id
        self.process_index = process_index
        self.process_count = process_count
        # This process's positions in every global batch (they also key each example's rng);
        # a bad process split fails here.
        self._columns = sampler.process_share(
            np.arange(self.global_batch), self.global_batch, process_index, process_count
        )[0]
        self.batch_size = len(self._columns)
        self.seed = seed
        self.with_text = with_text
        self.llm_aug = llm_aug
        self.llm_aug_prob, self.image_size, self.crop_padding = check_augmentation(
            llm_aug_prob, image_size, crop_padding)
        self.steps_per_epoch = sampler.steps_per_epoch(
            len(rgb_source), len(ir_source), ids_per_batch, images_per_id
        )
        # Fails early (identity sets, P too large) instead of inside a worker process.
        self._order(0)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_cached_order", None)  # recomputed in each worker
        return state

    def _order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Global (index_rgb, index_ir) of `epoch`, each int64 [steps_per_epoch, P*K]."""
        cached = getattr(self, "_cached_order", None)
        if cached is None or cached[0] != epoch:
            rgb, ir = sampler.identity_epoch(
                self.labels_rgb,
                self.labels_ir,
                self.ids_per_batch,
                self.images_per_id,
                self.seed,
                epoch,
            )
            cached = (epoch, rgb.reshape(-1, self.global_batch), ir.reshape(-1, self.global_batch))
            self._cached_order = cached
        return cached[1], cached[2]

    def example_rng(self, epoch: int, position: int) -> np.random.Generator:
        """The generator of the example at global `position` (0..steps*P*K-1) of `epoch`."""
        return np.random.default_rng([self.seed, EXAMPLE_STREAM, epoch, position])

    def _record(self, source, index: int, modality: str) -> dict:
        where = f"{modality} {_describe(source)} record {index}"
        record = source[index]
        image = np.asarray(_field(record, "image", where))
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{where}: 'image' must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        label = int(np.asarray(_field(record, "label", where)))
        out = {"image": images.resize(image, self.image_size), "label": label}
        if self.with_text:
            keys = ("caption_ids", "rephrase_ids") if self.llm_aug else ("caption_ids",)
            for key in keys:
                ids = np.asarray(_field(record, key, where))
                if ids.shape != (CONTEXT_LENGTH,) or not np.issubdtype(ids.dtype, np.integer):
                    raise ValueError(
                        f"{where}: {key!r} must be int [{CONTEXT_LENGTH}], got {ids.dtype} {ids.shape}"
                    )
                out[key] = ids
        return out

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        """This process's share of global batch `step` (counted over all epochs)."""
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        order_rgb, order_ir = self._order(epoch)
        b, (h, w) = self.batch_size, self.image_size
        batch = {
            "img_rgb_ori": np.empty((b, h, w, 3), np.float32),
            "img_rgb_aug": np.empty((b, h, w, 3), np.float32),
            "img_ir": np.empty((b, h, w, 3), np.float32),
            "target_rgb": np.empty((b,), np.int32),
            "target_ir": np.empty((b,), np.int32),
        }
        if self.with_text:
            batch["text_rgb"] = np.empty((b, CONTEXT_LENGTH), np.int32)
            batch["text_ir"] = np.empty((b, CONTEXT_LENGTH), np.int32)
        for i, col in enumerate(self._columns.tolist()):
            i_rgb, i_ir = int(order_rgb[in_epoch, col]), int(order_ir[in_epoch, col])
            rgb = self._record(self.rgb_source, i_rgb, "RGB")
            ir = self._record(self.ir_source, i_ir, "IR")
            for modality, rec, idx, labels in (
                ("RGB", rgb, i_rgb, self.labels_rgb),
                ("IR", ir, i_ir, self.labels_ir),
            ):
                if rec["label"] != labels[idx]:
                    raise ValueError(
                        f"{modality} record {idx} has label {rec['label']} but the sampler was given "
                        f"{labels[idx]}; labels_{modality.lower()} does not match the source"
                    )
            rng = self.example_rng(epoch, in_epoch * self.global_batch + col)
            # Both coins are always drawn so the image randomness is the same with and without
            # text (stage 1 and stage 2 see identical augmentations for a seed).
            rephrase_rgb = rng.random() < self.llm_aug_prob
            rephrase_ir = rng.random() < self.llm_aug_prob
            if self.with_text:
                batch["text_rgb"][i] = rgb["rephrase_ids" if self.llm_aug and rephrase_rgb else "caption_ids"]
                batch["text_ir"][i] = ir["rephrase_ids" if self.llm_aug and rephrase_ir else "caption_ids"]
            padded = transforms.pad(rgb["image"], self.crop_padding)
            transforms.color1(rgb["image"], rng, padded=padded, out=batch["img_rgb_ori"][i])
            transforms.color2(rgb["image"], rng, padded=padded, out=batch["img_rgb_aug"][i])
            transforms.thermal(ir["image"], rng, padded=transforms.pad(ir["image"], self.crop_padding),
                               out=batch["img_ir"][i])
            batch["target_rgb"][i] = rgb["label"]
            batch["target_ir"][i] = ir["label"]
        return batch

    def dataset(self, num_epochs: int, start_step: int = 0) -> grain.MapDataset:
        """MapDataset of batches for steps [start_step, num_epochs * steps_per_epoch)."""
        total = num_epochs * self.steps_per_epoch
        if num_epochs < 1 or not 0 <= start_step <= total:
            raise ValueError(
                f"need num_epochs >= 1 and 0 <= start_step <= {total}, got {num_epochs}, {start_step}"
            )
        return grain.MapDataset.range(start_step, total).map(self)


def make_iterator(
    dataset: grain.MapDataset, *, num_workers: int = 0, prefetch: int = 2
) -> grain.DatasetIterator:
    """Iterator over `dataset` with `num_workers` processes (0: in this process).

    `prefetch` batches are prepared ahead (per worker, or by one background thread when
    num_workers == 0; 0 disables read-ahead). The iterator's `get_state()` / `set_state()` are
    checkpointable; a state restores with the same `num_workers`. To change the worker count on
    resume, rebuild with `TrainBatches.dataset(..., start_step=step)` instead.

    Workers are spawned processes that unpickle the dataset: a script that uses them must guard
    its entry point with `if __name__ == "__main__":`. Close the iterator when done.
    """
    if num_workers < 0 or prefetch < 0:
        raise ValueError(f"num_workers and prefetch must be >= 0, got {num_workers}, {prefetch}")
    threads = 1 if prefetch and not num_workers else 0
    read = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch if threads else 0)
    ds = dataset.to_iter_dataset(read)
    if num_workers:
        # grain reads an absl flag when it starts workers and raises if flags were never parsed
        # (google/grain#1355); outside an absl app, use every flag's default.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=max(prefetch, 1))
        )
    return iter(ds)
