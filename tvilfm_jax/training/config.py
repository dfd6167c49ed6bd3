"""The settings of a training run, one frozen dataclass per config section, and what the loop
derives from them.

The dataclasses' defaults are the config's defaults: tvilfm_jax/configs/common.py builds the
ConfigDict tree from them, and `validate` reads a tree back into `ExperimentSettings`, so the
package never imports a config file and every default and range check is written once.

  ExperimentSettings  stage, recipe, seed and the sections below
    data   DataSettings     TFDS dataset, batch shape (P identities x K images), augmentation
    model  ModelSettings    network size and compute dtype (num_classes comes from the dataset)
    optim  OptimSettings    (tvilfm_jax.optim) parameter groups and schedule
    train  TrainSettings    epochs, logging / checkpoint / evaluation cadence
    eval   EvalSettings     (tvilfm_jax.eval.settings) what the periodic evaluation scores
    init   InitSettings     the checkpoint a run starts from
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import jax

from tvilfm_jax.data import transforms
from tvilfm_jax.data.datasets import tfds_name
from tvilfm_jax.data.images import IMAGE_SIZE
from tvilfm_jax.data.pipeline import LLM_AUG_PROB, check_augmentation
from tvilfm_jax.eval.settings import EvalSettings, settings_from_config
from tvilfm_jax.models.resnet import RESNET50_BLOCKS, feature_dim
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import ModelConfig
from tvilfm_jax.optim import OptimSettings
from tvilfm_jax.sections import ConfigError, one_of, positive_int, read_section
from tvilfm_jax.stages import RECIPES, STAGES

COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """`config.data`: the training input (tvilfm_jax.training.inputs)."""

    # TFDS name with config, e.g. "sysu_mm01", "regdb/trial1", "llcm", "synthetic/sysu".
    name: str = tfds_name("sysu")
    # TFDS data_dir; "" = TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
    data_dir: str = ""
    # Build a missing synthetic/* dataset into data_dir before training (real datasets are built
    # with `tfds build`, see README).
    build_synthetic: bool = False
    # (H, W) of training images; records stored at another size are Lanczos-resized at load.
    image_size: tuple[int, int] = IMAGE_SIZE
    # Zero pad before the training random crop, in pixels at image_size (docs/original.md §5.5: 10).
    crop_padding: int = transforms.PAD
    # P identities x K images per modality make one global batch (B = 32).
    ids_per_batch: int = 8
    images_per_id: int = 4
    # Stage 2: each caption is replaced by its LLM rephrase with this probability (docs/original.md §5.3).
    llm_aug: bool = True
    llm_aug_prob: float = LLM_AUG_PROB
    # grain worker processes per host (0: in the training process) and batches read ahead.
    num_workers: int = 8
    prefetch: int = 2

    def __post_init__(self):
        if not self.name:
            raise ConfigError(f"config.data.name must be a TFDS dataset name, got {self.name!r}")
        try:  # the pipeline's checks, with the config's names
            check_augmentation(self.llm_aug_prob, self.image_size, self.crop_padding, "config.data.")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for key in ("ids_per_batch", "images_per_id"):
            positive_int(getattr(self, key), f"config.data.{key}")
        for key in ("num_workers", "prefetch"):
            positive_int(getattr(self, key), f"config.data.{key}", 0)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """`config.model`: the network's size; the defaults are ModelConfig's (ResNet-50 + CLIP RN50
    text tower). The visual feature size D = 32 * resnet_width; the text projection matches it.
    Vocabulary and context length are TextConfig's (fixed by the tokenizer)."""

    resnet_blocks: tuple[int, ...] = RESNET50_BLOCKS
    resnet_width: int = ModelConfig.resnet_width
    text_width: int = TextConfig.width
    text_layers: int = TextConfig.layers
    text_heads: int = TextConfig.heads
    # "sff": F = f_IR + T(rgb caption) - T(ir caption) (TVI-LFM); "add": F = f_IR + T(rgb caption).
    fusion: str = ModelConfig.fusion
    # Training compute dtype of the ResNet and the text tower; params, BN statistics and losses
    # stay fp32. "auto": bfloat16 on GPU/TPU, float32 on CPU. Evaluation uses eval.dtype instead.
    compute_dtype: str = "auto"

    def __post_init__(self):
        for key in ("resnet_width", "text_width", "text_layers", "text_heads"):
            positive_int(getattr(self, key), f"config.model.{key}")
        one_of(self.compute_dtype, "config.model.compute_dtype", COMPUTE_DTYPES)
        # The model's own checks, with the config's names.
        try:
            self.text_config()
        except ValueError as err:
            raise ConfigError(f"config.model.text_width and config.model.text_heads: {err}") from None
        try:
            self.model_config(num_classes=1, backup=False, dtype="float32")
        except ValueError as err:
            raise ConfigError(f"config.model: {err}") from None

    def text_config(self) -> TextConfig:
        """The text tower of these sizes; its projection matches the visual feature size."""
        return TextConfig(width=self.text_width, layers=self.text_layers, heads=self.text_heads,
                          embed_dim=feature_dim(self.resnet_width))

    def model_config(self, num_classes: int, backup: bool, dtype: str | None = None) -> ModelConfig:
        """The ModelConfig of these sizes; dtype None: `compute_dtype` resolved for this backend."""
        return ModelConfig(num_classes=num_classes, resnet_blocks=tuple(self.resnet_blocks),
                           resnet_width=self.resnet_width, text=self.text_config(), fusion=self.fusion,
                           backup=backup, dtype=dtype or compute_dtype(self.compute_dtype))


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """`config.train`: how long, and how often the loop logs, checkpoints and evaluates."""

    num_epochs: int = 120
    # Console + metrics.jsonl + TensorBoard every this many steps (and at every epoch end).
    log_every_steps: int = 50
    # The latest checkpoint is written every this many steps and at every epoch end.
    checkpoint_every_steps: int = 500
    # How many latest checkpoints to keep (the best model is exported apart, to <workdir>/models/best).
    keep_checkpoints: int = 2
    # Evaluation after epoch e (0-based) when e + 1 >= eval_start_epoch and (e + 1) % eval_every_epochs
    # == 0 (docs/original.md §6.7); the best model is the one with the highest `best_metric` (ties:
    # later), a key of the evaluation's metrics: "<modality>/<R1|R5|R10|R20|mAP|mINP>" of the main
    # protocol, or "rank1" = R1 of its primary modality (MER if scored, else Fusion, Text, IR). The
    # configs select stage 2 of the "paper" recipe by "fusion/R1" (tvilfm_jax/configs/common.py).
    eval_every_epochs: int = 2
    eval_start_epoch: int = 80
    best_metric: str = "rank1"
    # Run the evaluator (config.eval) on that schedule; False trains without it.
    evaluate: bool = True

    def __post_init__(self):
        for key in ("num_epochs", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
                    "eval_every_epochs"):
            positive_int(getattr(self, key), f"config.train.{key}")
        positive_int(self.eval_start_epoch, "config.train.eval_start_epoch", 0)
        if not self.best_metric:
            raise ConfigError(f"config.train.best_metric must be a metric name, got {self.best_metric!r}")


@dataclasses.dataclass(frozen=True)
class InitSettings:
    """`config.init`: a model artifact (tvilfm_jax.artifacts: model.json + variables/), e.g. from
    `python -m tvilfm_jax.convert` or `<stage-1 workdir>/models/last`. Stage "base":
    optional (random init when empty); stage "tvilfm": required (the stage-1 model)."""

    checkpoint: str = ""


@dataclasses.dataclass(frozen=True)
class ExperimentSettings:
    """A whole experiment config; `from_config` is its validation.

    Attributes:
      stage: "base" (stage 1, RGB_IR, docs/original.md §3.3) or "tvilfm" (stage 2, RGB_IR_Text:
        SFF + MJL on the frozen visual encoder, §3.4); see tvilfm_jax.stages.
      recipe: "paper" (the original's behaviour incl. its quirks, docs/original.md §10.2) or "clean".
      seed: seeds the model initialisation and every random draw of the input pipeline.
    """

    stage: str = STAGES[0]
    recipe: str = RECIPES[0]
    seed: int = 1
    data: DataSettings = dataclasses.field(default_factory=DataSettings)
    model: ModelSettings = dataclasses.field(default_factory=ModelSettings)
    optim: OptimSettings = dataclasses.field(default_factory=OptimSettings)
    train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    eval: EvalSettings = dataclasses.field(default_factory=EvalSettings)
    init: InitSettings = dataclasses.field(default_factory=InitSettings)

    def __post_init__(self):
        one_of(self.stage, "config.stage", STAGES)
        one_of(self.recipe, "config.recipe", RECIPES)
        positive_int(self.seed, "config.seed", 0)
        if self.stage == "tvilfm" and not self.init.checkpoint:
            raise ConfigError("config.init.checkpoint is required for stage 'tvilfm': the stage-1 model to start "
                              "from (e.g. <stage-1 workdir>/models/last, or `python -m tvilfm_jax.convert "
                              "--kind official ...`)")
        parts = self.train.best_metric.split("/")  # "<modality>/<metric>" of the main protocol
        if len(parts) == 2 and self.train.evaluate and parts[0] not in self.eval.modalities:
            raise ConfigError(f"config.train.best_metric={self.train.best_metric!r} needs the {parts[0]!r} query, "
                              f"which config.eval.modalities {self.eval.modalities} does not score")

    @classmethod
    def from_config(cls, config: Any) -> ExperimentSettings:
        """Reads an experiment config tree (ConfigDict or nested dict); raises ConfigError naming
        the first key that is missing, unknown or has a bad value."""
        top = {f.name for f in dataclasses.fields(cls)}
        keys = set(config.keys())
        if keys != top:
            missing, unknown = sorted(top - keys), sorted(keys - top)
            raise ConfigError(f"config: missing key {missing[0]!r}" if missing else
                              f"config: unknown key(s) {unknown}; expected some of {sorted(top)}")
        sections = {name: read_section(settings, config[name], name) for name, settings in (
            ("data", DataSettings), ("model", ModelSettings), ("optim", OptimSettings), ("train", TrainSettings),
            ("init", InitSettings))}
        try:
            evaluation = settings_from_config(config)
        except ConfigError:  # already names config.eval
            raise
        except ValueError as err:  # EvalSettings' checks name "eval.<key>"
            raise ConfigError(f"config.{err}") from None
        return cls(stage=config["stage"], recipe=config["recipe"], seed=config["seed"], eval=evaluation, **sections)


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Sorted dotted keys (e.g. "optim.lr_visual") where two JSON-decoded configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return sorted(d for k in set(a) | set(b) for d in config_diff(a.get(k), b.get(k), f"{prefix}{k}."))
    return [] if a == b else [prefix.rstrip(".")]


def config_changes(stored: dict, now: dict) -> list[str]:
    """`config_diff(stored, now)` less the section keys `stored` lacks that hold their default in
    `now`: an option added to a section after a run was written changes nothing at its default
    (new options default to the behaviour before them), so such a run still resumes and is reused."""
    return [k for k in config_diff(stored, now) if not _added_at_default(stored, now, k)]


def _added_at_default(stored: dict, now: dict, key: str) -> bool:
    section, _, name = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(ExperimentSettings)}
    if section not in fields or "." in name or not isinstance(stored.get(section), dict) or name in stored[section]:
        return False
    default = getattr(fields[section].default_factory(), name, dataclasses.MISSING)
    # JSON holds tuples as lists: compare the default as the stored config would hold it.
    return default is not dataclasses.MISSING and json.loads(json.dumps(default)) == now[section][name]


def validate(config: Any) -> ExperimentSettings:
    """The settings of an experiment config; ConfigError names the first bad key."""
    return ExperimentSettings.from_config(config)


def compute_dtype(name: str, backend: str | None = None) -> str:
    """"auto" -> bfloat16 on accelerators, float32 on CPU; other names pass through."""
    if name != "auto":
        return name
    return "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"


def model_config(config: Any, num_classes: int) -> ModelConfig:
    """The ModelConfig of this experiment (stage 2 carries the backup GeM/neck, docs/original.md §1.7)."""
    return read_section(ModelSettings, config["model"], "model").model_config(num_classes,
                                                                             backup=config["stage"] == "tvilfm")


def unknown_override(argv: Sequence[str], config: Any) -> str | None:
    """The one-line error for the first `--config.<key>=...` of argv that names a key `config`
    lacks, with the closest keys there, e.g. "--config.optim.lr_visul: config.optim has no key
    'lr_visul'; did you mean 'lr_visual'?"; None when every override names a key."""
    for arg in argv:
        found = re.match(r"--?(?:no)?config\.([^=]+)", arg)
        if not found:
            continue
        node, where = config, "config"
        for part in found.group(1).split("."):
            keys = [str(k) for k in node.keys()] if hasattr(node, "keys") else []
            if part not in keys:
                close = difflib.get_close_matches(part, keys, n=3)
                hint = (f"; did you mean {' or '.join(map(repr, close))}?" if close
                        else f"; its keys are {', '.join(sorted(keys))}" if keys else f" ({where} is a value)")
                return f"--config.{found.group(1)}: {where} has no key {part!r}{hint}"
            node, where = node[part], f"{where}.{part}"
    return None


def _config_spec(argv: Sequence[str]) -> str | None:
    """The value of the last --config flag in argv (`--config=X` or `--config X`)."""
    spec = None
    for i, arg in enumerate(argv):
        if re.match(r"--?config=", arg):
            spec = arg.split("=", 1)[1]
        elif re.fullmatch(r"--?config", arg) and i + 1 < len(argv):
            spec = argv[i + 1]
    return spec


def load_config_file(spec: str) -> Any:
    """The config tree of `file.py[:arg]`, without any command-line override."""
    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", spec, flag_values=values, sys_argv=["config"])
    values(["config"])
    return values.config


@contextlib.contextmanager
def exit_on_unknown_override(default_spec: str | None = None,
                             argv: Sequence[str] | None = None) -> Iterator[None]:
    """For the CLIs, around defining and parsing the `--config` flag: an override naming no key
    (ml_collections raises a 50-line AttributeError traceback) ends the program with
    `unknown_override`'s one-line error instead (exit status 1).

    default_spec: the config file the flag uses when argv has no --config.
    argv: the command line parsed (default: sys.argv).
    """
    try:
        yield
    except (AttributeError, KeyError):
        argv = sys.argv if argv is None else argv
        spec = _config_spec(argv) or default_spec
        message = spec and unknown_override(argv, load_config_file(spec))
        if not message:
            raise
        sys.exit(f"error: {message}")
