"""Defaults of the generators, as the original produced the released texts (docs/original.md §8).

Pure Python, so the CLI and the colour filter load without torch.
"""

from __future__ import annotations

import dataclasses

# BLIP captioning: generate(pixel_values, max_length=50), greedy; max_length counts the
# decoder's start token.
MAX_LENGTH = 50

# LLM rephrasing: the caption immediately followed by this instruction, no separator.
INSTRUCTION = "rephrase the person's description above using similar words. Answer:"
PROMPT_TEMPLATE = "{caption}" + INSTRUCTION
CHAT_FORMATS = ("auto", "chat", "vicuna", "raw")
# FastChat's vicuna_v1.1 system message; the conversation text is
# "<system> USER: <prompt> ASSISTANT:".
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """Rephrasing settings; the defaults are the paper's. temperature 0 means greedy.

    FastChat sampled with no top-k and no top-p cut, which is also what is used here.
    """

    temperature: float = 0.7
    repetition_penalty: float = 1.0
    max_new_tokens: int = 1024
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
