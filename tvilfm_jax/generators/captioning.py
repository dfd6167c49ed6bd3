"""BLIP captioning of image files, batched and resumable (docs/original.md §8.1).

The original captioned one image at a time with ``model.generate(pixel_values, max_length=50)``
(greedy) and decoded with special tokens skipped; this does the same in batches. Images in a
batch share one size after the processor and no padding is involved, so batching changes
nothing but float rounding (batched == one-by-one on CPU, tested).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from tvilfm_jax.generators.progress import ProgressStore, pending_chunks
from tvilfm_jax.generators.settings import MAX_LENGTH


def load_image(path: str) -> Image.Image:
    """The image at ``path`` as 3-channel RGB (IR images are stored grey or 3-channel)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from None


def _prefetched(batches: Iterator[list[str]], files: dict[str, str]):
    """Yields (keys, images), decoding the next batch in a thread while the model runs."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        def submit(keys):
            return keys, pool.submit(lambda: [load_image(files[k]) for k in keys])

        upcoming = None
        for keys in batches:
            current, upcoming = upcoming, submit(keys)
            if current is not None:
                yield current[0], current[1].result()
        if upcoming is not None:
            yield upcoming[0], upcoming[1].result()


@torch.inference_mode()
def caption_batch(model, processor, images: Sequence[Image.Image], max_length: int = MAX_LENGTH) -> list[str]:
    """Greedy BLIP captions for ``images`` (list of PIL images), one string each."""
    pixel_values = processor(images=list(images), return_tensors="pt")["pixel_values"]
    pixel_values = pixel_values.to(model.device, model.dtype)
    tokens = model.generate(pixel_values=pixel_values, max_length=max_length, do_sample=False, num_beams=1)
    return [text.strip() for text in processor.batch_decode(tokens, skip_special_tokens=True)]


def caption_files(model, processor, files: dict[str, str], store: ProgressStore, *,
                  batch_size: int = 16, max_length: int = MAX_LENGTH, max_new: int | None = None,
                  progress: bool = True, desc: str = "caption") -> int:
    """Captions every image in ``files`` (key -> file path) that ``store`` does not hold yet.

    Results go to ``store`` under the same keys. ``max_new`` stops after the batch that
    reaches that many new captions (for runs cut into pieces). Returns the number captioned.
    """
    keys = list(files)
    done_before = sum(k in store for k in keys)
    made = 0
    with tqdm(total=len(keys), initial=done_before, desc=desc, unit="img", disable=not progress) as bar:
        batches = pending_chunks(keys, store.__contains__, batch_size)
        for batch_keys, images in _prefetched(batches, files):
            for key, text in zip(batch_keys, caption_batch(model, processor, images, max_length)):
                store.add(key, text)
            made += len(batch_keys)
            bar.update(len(batch_keys))
            if max_new is not None and made >= max_new:
                break
    return made
