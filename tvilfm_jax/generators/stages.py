"""The caption -> rephrase -> filter stages over one dataset tree.

Each stage keeps its finished items in a progress file under ``state_dir`` (default
``<text_dir>/.generator_state``), keyed by path relative to the dataset root, so a rerun
continues where a killed one stopped and a different ``key_prefix`` needs no regeneration.
When a stage has everything it needs it writes its part of the Text/ file set
(``text_files``): captions -> caption dicts, id maps, SYSU caption arrays; rephrases -> RGB
rephrase files and the raw IR rephrases; filter -> the colour-filtered IR rephrase files.
"""

from __future__ import annotations

import dataclasses
import json
import os

from tvilfm_jax.data.text.files import MODALITIES, TEXT_DIR, default_key_prefix
from tvilfm_jax.generators import text_files
from tvilfm_jax.generators.image_sets import ImageSet, list_images
from tvilfm_jax.generators.progress import ProgressStore
from tvilfm_jax.generators.settings import MAX_LENGTH, PROMPT_TEMPLATE, SamplingSettings

STATE_DIR_NAME = ".generator_state"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Where a dataset lives and where its text goes."""

    root: str
    layout: str
    text_dir: str | None = None   # default <root>/Text
    state_dir: str | None = None  # default <text_dir>/.generator_state
    key_prefix: str | None = None  # default datasets/<layout>/

    @property
    def text_path(self) -> str:
        return self.text_dir or os.path.join(self.root, TEXT_DIR)

    @property
    def state_path(self) -> str:
        return self.state_dir or os.path.join(self.text_path, STATE_DIR_NAME)

    @property
    def prefix(self) -> str:
        return default_key_prefix(self.layout) if self.key_prefix is None else self.key_prefix

    def images(self) -> ImageSet:
        return list_images(self.root, self.layout)

    def caption_state(self, modality: str) -> str:
        return os.path.join(self.state_path, f"captions_{modality}.json")

    def rephrase_state(self, modality: str) -> str:
        return os.path.join(self.state_path, f"rephrases_{modality}.json")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a generation stage runs."""

    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 16
    max_new: int | None = None  # stop after the batch reaching this many new items per modality
    flush_every: int = 256
    progress: bool = True


@dataclasses.dataclass
class StageReport:
    """What a stage did: per modality how many items were made now / are done / exist."""

    made: dict[str, int] = dataclasses.field(default_factory=dict)
    done: dict[str, int] = dataclasses.field(default_factory=dict)
    total: dict[str, int] = dataclasses.field(default_factory=dict)
    written: list[str] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(self.done[m] == self.total[m] for m in self.total)


def _open_store(path: str, meta: dict, options: RunOptions) -> ProgressStore:
    return ProgressStore(path, meta, flush_every=options.flush_every)


def _load_items(path: str, what: str) -> dict:
    if not os.path.exists(path):
        return {}
    # Readers of a finished stage do not care which settings made it, so no meta check here.
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a valid {what} progress file ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), dict):
        raise ValueError(f"{path}: not a {what} progress file (no 'items')")  # noqa: TRY004 (bad file content)
    return data["items"]


def load_captions(ds: Dataset) -> dict[str, dict[str, str]]:
    return {m: _load_items(ds.caption_state(m), "caption") for m in MODALITIES}


def load_rephrases(ds: Dataset) -> dict[str, dict[str, dict]]:
    return {m: _load_items(ds.rephrase_state(m), "rephrase") for m in MODALITIES}


def caption_dataset(ds: Dataset, models: dict[str, str], processors: dict[str, str | None] | None = None,
                    options: RunOptions = RunOptions(), max_length: int = MAX_LENGTH) -> StageReport:
    """Captions the dataset's images; ``models[modality]`` is a local BLIP directory.

    Only the modalities in ``models`` are captioned. The caption files are written once both
    modalities are complete.
    """
    from tvilfm_jax.generators.captioning import caption_files
    from tvilfm_jax.generators.model_loading import (
        check_blip_dir,
        load_blip,
        resolve_device,
        resolve_dtype,
    )

    unknown = set(models) - set(MODALITIES)
    if unknown or not models:
        raise ValueError(f"captioning models must be given for modalities {MODALITIES}, got {sorted(models)}")
    for model_dir in models.values():
        check_blip_dir(model_dir)  # fail before hours of work on the first modality
    processors = processors or {}
    images = ds.images()
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    report = StageReport()
    for modality, model_dir in models.items():
        files = {e.key: os.path.join(ds.root, e.path) for e in images.entries[modality]}
        meta = {"stage": "caption", "modality": modality, "max_length": max_length, "decoding": "greedy"}
        with _open_store(ds.caption_state(modality), meta, options) as store:
            pending = [k for k in files if k not in store]
            if pending:
                model, processor = load_blip(model_dir, processors.get(modality), device, dtype)
                report.made[modality] = caption_files(
                    model, processor, files, store, batch_size=options.batch_size, max_length=max_length,
                    max_new=options.max_new, progress=options.progress, desc=f"caption {modality}")
                del model
            else:
                report.made[modality] = 0
            report.done[modality] = sum(k in store for k in files)
            report.total[modality] = len(files)
    captions = load_captions(ds)
    if all(all(e.key in captions[m] for e in images.entries[m]) for m in MODALITIES):
        report.written = text_files.write_caption_files(ds.text_path, images, captions, ds.prefix)
    return report


def _require_complete_captions(ds: Dataset, modality: str, entries) -> dict[str, str]:
    captions = _load_items(ds.caption_state(modality), "caption")
    missing = [e.key for e in entries if e.key not in captions]
    if missing:
        raise ValueError(
            f"{ds.caption_state(modality)}: {len(missing)} of {len(entries)} {modality} training images "
            f"have no caption yet (e.g. {missing[0]!r}); run the caption stage first")
    return {e.key: captions[e.key] for e in entries}


def rephrase_dataset(ds: Dataset, llm_dir: str, options: RunOptions = RunOptions(batch_size=8),
                     settings: SamplingSettings | None = None, template: str = PROMPT_TEMPLATE,
                     chat_format: str = "auto", modalities: tuple[str, ...] = MODALITIES) -> StageReport:
    """Rephrases the captions of the training images with the causal LM in ``llm_dir``.

    Needs complete captions of the training images. Writes the RGB rephrase file and the raw
    IR rephrases once both modalities are complete.
    """
    from tvilfm_jax.generators.model_loading import (
        check_causal_lm_dir,
        load_causal_lm,
        resolve_device,
        resolve_dtype,
    )
    from tvilfm_jax.generators.rephrasing import rephrase_captions

    check_causal_lm_dir(llm_dir)
    settings = settings or SamplingSettings()
    images = ds.images()
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    report = StageReport()
    model = tokenizer = None
    for modality in modalities:
        captions = _require_complete_captions(ds, modality, images.train_entries(modality))
        meta = {"stage": "rephrase", "modality": modality, **dataclasses.asdict(settings),
                "template": template, "chat_format": chat_format}
        with _open_store(ds.rephrase_state(modality), meta, options) as store:
            def done(key, store=store, captions=captions):
                return key in store and store[key].get("description") == captions[key]
            if not all(done(k) for k in captions):
                if model is None:
                    model, tokenizer = load_causal_lm(llm_dir, device, dtype)
                report.made[modality] = rephrase_captions(
                    model, tokenizer, captions, store, settings=settings, template=template,
                    chat_format=chat_format, batch_size=options.batch_size, max_new=options.max_new,
                    progress=options.progress, desc=f"rephrase {modality}")
            else:
                report.made[modality] = 0
            report.done[modality] = sum(done(k) for k in captions)
            report.total[modality] = len(captions)
    if report.complete and set(modalities) == set(MODALITIES):
        report.written = text_files.write_rephrase_files(ds.text_path, images, load_rephrases(ds), ds.prefix)
    return report


def filter_dataset(ds: Dataset) -> StageReport:
    """Removes colour words from the IR rephrases and writes the IR rephrase files."""
    images = ds.images()
    entries = images.train_entries("IR")
    rephrases = _load_items(ds.rephrase_state("IR"), "rephrase")
    missing = [e.key for e in entries if e.key not in rephrases]
    if missing:
        raise ValueError(
            f"{ds.rephrase_state('IR')}: {len(missing)} of {len(entries)} IR training images have no "
            f"rephrase yet (e.g. {missing[0]!r}); run the rephrase stage first")
    captions = _require_complete_captions(ds, "IR", entries)
    stale = [e.key for e in entries if rephrases[e.key].get("description") != captions[e.key]]
    if stale:
        raise ValueError(
            f"{ds.rephrase_state('IR')}: {len(stale)} IR rephrases were made from older captions "
            f"(e.g. {stale[0]!r}); rerun the rephrase stage")
    written = text_files.write_filtered_files(ds.text_path, images, rephrases, ds.prefix)
    return StageReport(made={"IR": len(entries)}, done={"IR": len(entries)}, total={"IR": len(entries)},
                       written=written)

