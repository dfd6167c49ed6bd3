"""Loading the captioner and the rephraser from local directories, with errors that say why.

Only local directories are accepted (``local_files_only``): the generators never reach a model
hub. A directory is checked before transformers sees it, so a wrong path or a checkpoint of
the wrong kind fails with the directory and what was found there, not a hub lookup error.
"""

from __future__ import annotations

import json
import os

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; otherwise any torch device string."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device {device!r}: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" -> float16 on CUDA (as the original ran Vicuna), float32 elsewhere."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: expected 'auto' or one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _listing(folder: str, limit: int = 8) -> str:
    names = sorted(os.listdir(folder))
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return shown or "nothing"


def read_model_config(model_dir: str, what: str) -> dict:
    """The checkpoint's config.json as a dict; ``what`` names the expected kind in errors."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"{model_dir}: {what} directory not found")
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(
            f"{model_dir}: not a transformers {what} checkpoint: no config.json "
            f"(found: {_listing(model_dir)})")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: unreadable config.json ({err})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ValueError(f"{path}: config.json has no 'model_type', so it is not a {what} checkpoint")
    return config


def check_blip_dir(model_dir: str) -> None:
    """Raises unless ``model_dir`` holds a BLIP image-captioning checkpoint."""
    config = read_model_config(model_dir, "BLIP captioning model")
    if config["model_type"] != "blip":
        raise ValueError(
            f"{model_dir}: expected a BLIP captioning checkpoint (model_type 'blip'), "
            f"found model_type {config['model_type']!r}")
    architectures = config.get("architectures") or []
    if architectures and "BlipForConditionalGeneration" not in architectures:
        raise ValueError(
            f"{model_dir}: expected a BlipForConditionalGeneration (captioning) checkpoint, "
            f"found architectures {architectures}")


def check_causal_lm_dir(model_dir: str) -> None:
    """Raises unless ``model_dir`` holds a checkpoint that transformers can load as a causal LM."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = read_model_config(model_dir, "causal language model")
    if config["model_type"] not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(
            f"{model_dir}: expected a causal language model checkpoint (AutoModelForCausalLM), "
            f"found model_type {config['model_type']!r}, which has no causal-LM class in transformers")


def _wrap_load_error(model_dir: str, what: str, err: Exception) -> ValueError:
    return ValueError(f"{model_dir}: could not load the {what} ({type(err).__name__}: {err})")


def load_blip(model_dir: str, processor_dir: str | None, device: torch.device, dtype: torch.dtype):
    """(BlipForConditionalGeneration in eval mode on ``device``, BlipProcessor).

    ``processor_dir`` defaults to ``model_dir``; fine-tuned checkpoints often lack the
    processor files, which then come from the base model's directory.
    """
    from transformers import BlipForConditionalGeneration, BlipProcessor

    check_blip_dir(model_dir)
    processor_dir = processor_dir or model_dir
    if not os.path.isdir(processor_dir):
        raise FileNotFoundError(f"{processor_dir}: BLIP processor directory not found")
    # Older checkpoints store the image processor in preprocessor_config.json, transformers 5
    # in processor_config.json.
    if not any(os.path.isfile(os.path.join(processor_dir, name))
               for name in ("preprocessor_config.json", "processor_config.json")):
        raise ValueError(
            f"{processor_dir}: no preprocessor_config.json or processor_config.json, so no BLIP processor here "
            f"(found: {_listing(processor_dir)}); pass the processor directory explicitly "
            "(e.g. a local copy of Salesforce/blip-image-captioning-large)")
    try:
        processor = BlipProcessor.from_pretrained(processor_dir, local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise _wrap_load_error(processor_dir, "BLIP processor", err) from err
    try:
        model = BlipForConditionalGeneration.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as err:
        raise _wrap_load_error(model_dir, "BLIP model", err) from err
    return model.to(device).eval(), processor


def load_causal_lm(model_dir: str, device: torch.device, dtype: torch.dtype):
    """(causal LM in eval mode on ``device``, tokenizer padding on the left)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_causal_lm_dir(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise _wrap_load_error(model_dir, "tokenizer", err) from err
    # Batched generation appends new tokens on the right, so prompts are padded on the left.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{model_dir}: the tokenizer has neither a pad nor an eos token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as err:
        raise _wrap_load_error(model_dir, "causal language model", err) from err
    return model.to(device).eval(), tokenizer
