"""Checks an experiment config (configs/*.py) and derives what the loop builds from it.

The config tree itself is defined in configs/common.py; this module only reads it, so the
package never imports a config file.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import jax

from tvilfm_jax.data.pipeline import TEXT_LENGTH as CONTEXT_LENGTH
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import ModelConfig
from tvilfm_jax.optim import RECIPES, STAGES

VOCAB_SIZE = 49408  # CLIP BPE; the EOT id 49407 is the largest, which the text tower relies on
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


class ConfigError(ValueError):
    """An experiment config value is missing or out of range; the message names the key."""


def _get(config: Any, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            raise ConfigError(f"config: missing key {dotted!r}") from None
    return node


def _positive_int(config: Any, key: str, minimum: int = 1) -> int:
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"config.{key} must be an int >= {minimum}, got {value!r}")
    return value


def validate(config: Any) -> None:
    """Raises ConfigError naming the first key that is missing or has a bad value."""
    if _get(config, "stage") not in STAGES:
        raise ConfigError(f"config.stage must be one of {STAGES}, got {config.stage!r}")
    if _get(config, "recipe") not in RECIPES:
        raise ConfigError(f"config.recipe must be one of {RECIPES}, got {config.recipe!r}")
    _positive_int(config, "seed", 0)
    if not isinstance(_get(config, "data.name"), str) or not config.data.name:
        raise ConfigError(f"config.data.name must be a TFDS dataset name, got {config.data.name!r}")
    size = tuple(_get(config, "data.image_size"))
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 16 for v in size):
        raise ConfigError(f"config.data.image_size must be (H, W) ints >= 16, got {config.data.image_size!r}")
    for key in ("data.ids_per_batch", "data.images_per_id", "model.resnet_width", "model.text_width",
                "model.text_layers", "model.text_heads", "train.num_epochs", "train.log_every_steps",
                "train.checkpoint_every_steps", "train.keep_checkpoints", "train.eval_every_epochs"):
        _positive_int(config, key)
    for key in ("data.num_workers", "data.prefetch", "train.eval_start_epoch"):
        _positive_int(config, key, 0)
    if not 0.0 <= float(_get(config, "data.llm_aug_prob")) <= 1.0:
        raise ConfigError(f"config.data.llm_aug_prob must be in [0, 1], got {config.data.llm_aug_prob!r}")
    if _get(config, "model.compute_dtype") not in COMPUTE_DTYPES:
        raise ConfigError(f"config.model.compute_dtype must be one of {COMPUTE_DTYPES}, "
                          f"got {config.model.compute_dtype!r}")
    if config.model.text_width % config.model.text_heads:
        raise ConfigError(f"config.model.text_width ({config.model.text_width}) must be divisible by "
                          f"config.model.text_heads ({config.model.text_heads})")
    if config.stage == "tvilfm" and not _get(config, "init.checkpoint"):
        raise ConfigError("config.init.checkpoint is required for stage 'tvilfm': the stage-1 model to start "
                          "from (e.g. <stage-1 workdir>/models/last, or `python -m tvilfm_jax.convert "
                          "--kind official ...`)")
    if not isinstance(_get(config, "train.best_metric"), str) or not config.train.best_metric:
        raise ConfigError(f"config.train.best_metric must be a metric name, got {config.train.best_metric!r}")
    parts = config.train.best_metric.split("/")  # "<modality>/<metric>" of the main protocol
    if len(parts) == 2 and _get(config, "train.evaluate") and parts[0] not in tuple(_get(config, "eval.modalities")):
        raise ConfigError(f"config.train.best_metric={config.train.best_metric!r} needs the {parts[0]!r} query, "
                          f"which config.eval.modalities {tuple(config.eval.modalities)} does not score")


def compute_dtype(name: str, backend: str | None = None) -> str:
    """"auto" -> bfloat16 on accelerators, float32 on CPU; other names pass through."""
    if name != "auto":
        return name
    return "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"


def model_config(config: Any, num_classes: int) -> ModelConfig:
    """The ModelConfig of this experiment (stage 2 carries the backup GeM/neck, docs/original.md §1.7)."""
    m = config.model
    width = m.resnet_width
    text = TextConfig(vocab_size=VOCAB_SIZE, context_length=CONTEXT_LENGTH, width=m.text_width,
                      layers=m.text_layers, heads=m.text_heads, embed_dim=32 * width)
    return ModelConfig(num_classes=num_classes, resnet_blocks=tuple(m.resnet_blocks), resnet_width=width,
                       text=text, fusion=m.fusion, backup=config.stage == "tvilfm",
                       dtype=compute_dtype(m.compute_dtype))


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


def _load_config_file(spec: str) -> Any:
    """The config tree of `file.py[:arg]`, without any command-line override."""
    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", spec, flag_values=values, sys_argv=["config"])
    values(["config"])
    return values.config


@contextlib.contextmanager
def exit_on_unknown_override(default_spec: str | None = None) -> Iterator[None]:
    """For the CLIs, around defining and parsing the `--config` flag: an override naming no key
    (ml_collections raises a 50-line AttributeError traceback) ends the program with
    `unknown_override`'s one-line error instead (exit status 1).

    default_spec: the config file the flag uses when argv has no --config.
    """
    try:
        yield
    except (AttributeError, KeyError):
        spec = _config_spec(sys.argv) or default_spec
        message = spec and unknown_override(sys.argv, _load_config_file(spec))
        if not message:
            raise
        sys.exit(f"error: {message}")
