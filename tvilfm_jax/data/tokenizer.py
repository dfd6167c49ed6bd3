"""CLIP byte-level BPE tokenizer with the original's (IRRA) special tokens and truncation.

Ids equal OpenAI CLIP's: SOT 49406, EOT 49407, zero padding. The IRRA variant used by TVI-LFM
(docs/original.md §5.4) also knows `<|mask|>` = 49405. The BPE itself runs in `instant-clip-tokenizer`
(Rust, vocabulary bundled); the text cleaning that it skips (ftfy, HTML unescaping, whitespace)
and the special tokens it does not recognise are handled here.

One deliberate difference from the original's Python code: "jekyll" encodes to 49405, as in
OpenAI CLIP, instead of raising KeyError (the IRRA vocabulary dropped that merge, yet the
embedding row 49405 loaded from CLIP is jekyll's). The overflow rule is the original's: keep
the first `context_length` ids and overwrite the last one with EOT.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence

import ftfy
import instant_clip_tokenizer
import numpy as np
import regex

from tvilfm_jax.models.text import TextConfig

SOT = 49406
EOT = 49407
MASK = 49405
# Rows are as long as the text tower's positional embedding (77 for every CLIP model).
CONTEXT_LENGTH = TextConfig.context_length

_SPECIAL_IDS = {"<|startoftext|>": SOT, "<|mask|>": MASK, "<|endoftext|>": EOT}
# The original's pre-tokenizer. Only needed when a text may contain a special token literally:
# otherwise it splits exactly like the Rust tokenizer's own pattern (the same minus the
# specials). A special is recognised only where a match starts, so "x!<|mask|>" stays plain
# punctuation; a whole-text regex scan reproduces that, a plain split on the specials would not.
_PIECES = regex.compile(
    r"""<\|startoftext\|>|<\|mask\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


@functools.cache
def _bpe() -> instant_clip_tokenizer.Tokenizer:
    # Building the tokenizer parses the bundled vocabulary (~70 ms): do it once per process.
    return instant_clip_tokenizer.Tokenizer()


def clean(text: str) -> str:
    """The original's normalisation: ftfy, HTML-unescape twice, collapse whitespace, lowercase."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def encode(text: str) -> list[int]:
    """BPE ids of one text, without SOT/EOT and without truncation."""
    text = clean(text)
    bpe = _bpe()
    if "<|" not in text:
        return bpe.encode(text)
    ids: list[int] = []
    for piece in _PIECES.findall(text):
        special = _SPECIAL_IDS.get(piece)
        if special is not None:
            ids.append(special)
        else:
            ids.extend(bpe.encode(piece))
    return ids


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> np.ndarray:
    """Tokenizes captions for the CLIP text tower.

    Args:
      texts: one string or a sequence of strings.
      context_length: row length; 77 for every CLIP model.

    Returns:
      int32 [N, context_length]: SOT, BPE ids, EOT, zeros. A row that would be longer is cut to
      `context_length` ids and its last id replaced by EOT.
    """
    if isinstance(texts, str):
        texts = [texts]
    if context_length < 2:
        raise ValueError(f"context_length must leave room for SOT and EOT, got {context_length}")
    out = np.zeros((len(texts), context_length), dtype=np.int32)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"tokenize: texts[{row}] is a {type(text).__name__}, expected str")
        ids = [SOT, *encode(text), EOT][:context_length]
        ids[-1] = EOT
        out[row, : len(ids)] = ids
    return out
