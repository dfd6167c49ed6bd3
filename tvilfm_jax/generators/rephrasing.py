"""LLM rephrasing of captions, batched, seeded and resumable (docs/original.md §8.2).

The paper's prompt is the caption immediately followed by the instruction, with no separator
(the caption's final period runs into it), and the continuation after the prompt is the
rephrase. The original wrapped it in FastChat's Vicuna template and sampled with temperature
0.7, repetition_penalty 1.0, max_new_tokens 1024 and no top-k/top-p cut; these are the defaults.

How the prompt is wrapped (``chat_format``):
- "auto": the tokenizer's chat template when it has one, else the raw prompt;
- "chat": the tokenizer's chat template (an error if there is none);
- "vicuna": FastChat's vicuna_v1.1 conversation text, for Vicuna checkpoints without a
  chat template (how the released texts were made);
- "raw": the prompt as it is.

Sampling is reproducible: each batch seeds torch from (seed, the batch's keys), and batches
are fixed chunks of the full item list, so an interrupted and resumed run gives the same
texts as an uninterrupted one with the same batch size on the same device.
"""

from __future__ import annotations

import hashlib

import torch
from tqdm.auto import tqdm

from tvilfm_jax.generators.progress import ProgressStore, pending_chunks
from tvilfm_jax.generators.settings import (
    CHAT_FORMATS,
    PROMPT_TEMPLATE,
    VICUNA_SYSTEM,
    SamplingSettings,
)


def format_prompt(caption: str, tokenizer, template: str = PROMPT_TEMPLATE, chat_format: str = "auto") -> str:
    """The text fed to the LLM for one caption (see the module docstring for ``chat_format``)."""
    if "{caption}" not in template:
        raise ValueError(f"prompt template must contain '{{caption}}', got {template!r}")
    if chat_format not in CHAT_FORMATS:
        raise ValueError(f"chat format {chat_format!r}: expected one of {CHAT_FORMATS}")
    # str.replace, not str.format: captions may contain braces.
    prompt = template.replace("{caption}", caption)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_format == "chat" and not has_template:
        raise ValueError("chat format 'chat' needs a tokenizer with a chat template; this one has none")
    if chat_format == "chat" or (chat_format == "auto" and has_template):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    if chat_format == "vicuna":
        return f"{VICUNA_SYSTEM} USER: {prompt} ASSISTANT:"
    return prompt


def uses_chat_template(tokenizer, chat_format: str) -> bool:
    """Whether ``format_prompt`` applies the tokenizer's chat template (which writes its own BOS)."""
    return chat_format == "chat" or (chat_format == "auto" and bool(getattr(tokenizer, "chat_template", None)))


def batch_seed(seed: int, keys: list[str]) -> int:
    """A torch seed that depends only on ``seed`` and the batch's keys."""
    digest = hashlib.sha256("\x00".join([str(seed), *keys]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@torch.inference_mode()
def rephrase_batch(model, tokenizer, prompts: list[str], settings: SamplingSettings,
                   add_special_tokens: bool = True) -> list[str]:
    """One sampled continuation per prompt, decoded without special tokens and stripped."""
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    encoded = {k: v.to(model.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
    sampling = settings.temperature > 0
    # top_k=0 / top_p=1.0: no cut of the distribution, as FastChat sampled.
    kwargs = ({"do_sample": True, "temperature": settings.temperature, "top_k": 0, "top_p": 1.0}
              if sampling else {"do_sample": False})
    tokens = model.generate(
        **encoded, max_new_tokens=settings.max_new_tokens, repetition_penalty=settings.repetition_penalty,
        pad_token_id=tokenizer.pad_token_id, num_beams=1, **kwargs)
    continuation = tokens[:, encoded["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(continuation, skip_special_tokens=True)]


def rephrase_captions(model, tokenizer, captions: dict[str, str], store: ProgressStore, *,
                      settings: SamplingSettings | None = None, template: str = PROMPT_TEMPLATE,
                      chat_format: str = "auto", batch_size: int = 8, max_new: int | None = None,
                      progress: bool = True, desc: str = "rephrase") -> int:
    """Rephrases every caption (key -> caption) whose key ``store`` does not hold yet.

    ``store`` receives ``{"description": caption, "aug_description": rephrase}`` per key; an
    entry made from a different caption (the captions were regenerated) is redone.
    ``max_new`` stops after the batch that reaches that many new rephrases. Returns the
    number rephrased.
    """
    settings = settings or SamplingSettings()
    keys = list(captions)

    def done(key: str) -> bool:
        return key in store and store[key].get("description") == captions[key]

    add_special = not uses_chat_template(tokenizer, chat_format)  # the template writes its own BOS
    done_before = sum(done(k) for k in keys)
    made = 0
    with tqdm(total=len(keys), initial=done_before, desc=desc, unit="text", disable=not progress) as bar:
        for batch_keys in pending_chunks(keys, done, batch_size):
            prompts = [format_prompt(captions[k], tokenizer, template, chat_format) for k in batch_keys]
            # A forked RNG keeps the global torch RNG of the caller untouched.
            devices = [model.device] if model.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(batch_seed(settings.seed, batch_keys))
                texts = rephrase_batch(model, tokenizer, prompts, settings, add_special)
            for key, text in zip(batch_keys, texts):
                store.add(key, {"description": captions[key], "aug_description": text})
            made += len(batch_keys)
            bar.update(len(batch_keys))
            if max_new is not None and made >= max_new:
                break
    return made
