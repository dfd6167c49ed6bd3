"""Tokenizer equality with OpenAI's own `SimpleTokenizer` (from the `openai-clip` sdist).

The reference is OpenAI's Python code and vocabulary file, shipped by the `openai-clip` package
(test extra); nothing here shares code or data with `instant-clip-tokenizer`. The package's
`clip/__init__.py` needs `pkg_resources` and torch, so only `clip/simple_tokenizer.py` is loaded,
by path. It is then given the IRRA changes of docs/original.md §5.4 (`<|mask|>` in the pattern and the
vocabulary as 49405) and the IRRA truncation rule.
"""

import gzip
import importlib.util
import os
import random

import numpy as np
import pytest

from tvilfm_jax.data import tokenizer as tok

CTX = 77


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the `openai-clip` package (test extra) is not installed: pip install -e '.[test]'")
    folder = spec.submodule_search_locations[0]
    path = os.path.join(folder, "simple_tokenizer.py")
    vocab = os.path.join(folder, "bpe_simple_vocab_16e6.txt.gz")
    assert os.path.isfile(path) and os.path.isfile(vocab), f"{folder} is not OpenAI's clip package"
    mod_spec = importlib.util.spec_from_file_location("openai_clip_simple_tokenizer", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    ref = module.SimpleTokenizer(bpe_path=vocab)
    # IRRA's additions. "jekyll</w>" keeps OpenAI's 49405 (see tvilfm_jax.data.tokenizer).
    ref.encoder["<|mask|>"] = 49405
    ref.cache["<|mask|>"] = "<|mask|>"
    ref.pat = module.re.compile(
        r"""<\|startoftext\|>|<\|mask\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        module.re.IGNORECASE,
    )
    assert ref.encoder["<|startoftext|>"] == tok.SOT and ref.encoder["<|endoftext|>"] == tok.EOT
    with gzip.open(vocab, "rt", encoding="utf-8") as f:
        assert len(f.read().split("\n")) > 48894, "vocabulary file too short"
    return ref


def reference_tokenize(ref, texts):
    out = np.zeros((len(texts), CTX), dtype=np.int32)
    for row, text in enumerate(texts):
        ids = [tok.SOT, *ref.encode(text), tok.EOT]
        if len(ids) > CTX:
            ids = ids[:CTX]
            ids[-1] = tok.EOT
        out[row, : len(ids)] = ids
    return out


WORDS = (
    "a man woman person young old wearing carrying holding walking standing black white red blue "
    "green yellow grey gray pink purple brown orange dark light long short hair t-shirt shirt "
    "jacket coat jeans trousers pants skirt shorts dress shoes sneakers boots backpack bag handbag "
    "glasses hat cap with and the of in on at his her their sleeved sleeveless striped plaid"
).split()
PUNCT = list(",.;:!?-()[]{}'\"/\\@#$%^&*_+=~`|<>") + ["...", "--", "?!", "''", "``", "—", "–", "…"]
NUMBERS = ["0", "7", "42", "123", "2024", "4.5", "1,000", "3rd", "10kg", "½", "²", "٣", "४", "①"]
ACCENTS = ["café", "naïve", "Zoë", "façade", "ÉCOLE", "Ångström", "Straße", "İstanbul", "ǅemal",
           "e\u0301", "crème brûlée", "São Paulo", "Łódź", "ﬁne", "Œuvre", "ΣΟΦΙΑ", "σοφός"]
UNICODE = ["数字", "行人重识别", "Привет мир", "مرحبا", "नमस्ते", "สวัสดี", "안녕하세요", "こんにちは",
           "カタカナ", "Ａｂｃ１２３", "\u200b", "\u00a0", "\u2028", "\u3000", "ﬀ", "Ⅻ", "℃", "™",
           "â€™", "Ã©", "\U0001d400\U0001d401", "\u0300", "ß", "ﬃ", "ⓐⓑ", "𝔘𝔫𝔦"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧", "🇯🇵", "❤️", "🔥🔥", "🙂", "☀", "🧥👖👟"]
HTML = ["&amp;", "&#39;", "&quot;", "&lt;b&gt;", "&amp;amp;", "&amp;#39;", "&nbsp;", "&#x27;",
        "&eacute;", "&amp;quot;", "&#128512;", "&amp;lt;i&amp;gt;", "&copy;", "&bogus;", "&#0;"]
CONTRACTIONS = ["it's", "they're", "I'VE", "we'll", "he'd", "don't", "I'm", "‘curly’", "’s",
                "rock'n'roll", "'tis", "o'clock", "ISN'T"]
SPECIALS = ["<|endoftext|>", "<|startoftext|>", "<|mask|>", "x!<|mask|>", "<|MASK|>", "<|mask",
            "a<|endoftext|>b", "<|unknown|>", "jekyll", "Jekyll", "JEKYLL and hyde"]
SEPARATORS = ["", " ", " ", " ", "  ", "\t", "\n", ", ", " \r\n ", "   \t  "]
POOLS = [WORDS, WORDS, WORDS, PUNCT, NUMBERS, ACCENTS, UNICODE, EMOJI, HTML, CONTRACTIONS, SPECIALS]

HANDWRITTEN = [
    "",
    " ",
    "A person riding a motorcycle",
    ("A young woman with long black hair wearing a red short-sleeved T-shirt, blue jeans and white "
     "shoes, carrying a black backpack."),
    "The pedestrian in the infrared image is wearing a light-coloured top and dark trousers.",
    "  leading and trailing   whitespace runs \t\n ",
    "MiXeD CaSe TeXt WiTh UPPER and lower",
    "Tom &amp; Jerry&#39;s &quot;show&quot; &lt;3",
    "double escaped: &amp;amp; &amp;#39; &amp;quot;",
    "numbers 1234567890 and 3.14159 and 1e-5",
    "emoji soup 😀😃😄😁😆😅🤣😂",
    "ÀÉÎÕÜ àéîõü ÇÑ çñ",
    "he said: “quoted” and ‘single’ — dash – en…",
    "tab\tseparated\tvalues",
    "line\nbreaks\r\nand\rreturns",
    "jekyll",
    "<|mask|> is a mask",
    "text with <|endoftext|> inside",
    "!!!???...,,,;;;",
    "a" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    ("A man wearing a black jacket, a grey hoodie, blue jeans and brown boots, carrying a red "
     "bag on his left shoulder, walks past a parked car while talking on a phone. ") * 3,
    " ".join(str(i) for i in range(120)),
    "😀" * 100,
]


def make_corpus(n_random=240, seed=0):
    rng = random.Random(seed)
    corpus = list(HANDWRITTEN)
    for i in range(n_random):
        # One in eight is long enough to overflow 77 tokens.
        n_frag = rng.randint(60, 120) if i % 8 == 0 else rng.randint(1, 25)
        parts = []
        for _ in range(n_frag):
            parts.append(rng.choice(rng.choice(POOLS)))
            parts.append(rng.choice(SEPARATORS))
        text = "".join(parts)
        if i % 5 == 1:
            text = text.capitalize()
        elif i % 5 == 2:
            text = text.upper()
        corpus.append(text)
    return corpus


def test_equals_openai_reference_on_varied_corpus(reference):
    corpus = make_corpus()
    assert len(corpus) >= 200
    got = tok.tokenize(corpus)
    want = reference_tokenize(reference, corpus)
    assert got.dtype == np.int32 and got.shape == (len(corpus), CTX)
    bad = [corpus[i] for i in np.flatnonzero((got != want).any(axis=1))]
    assert not bad, f"{len(bad)} mismatching texts, first: {bad[:3]!r}"
    # The corpus must exercise what it claims to.
    overflowing = sum(len(reference.encode(t)) + 2 > CTX for t in corpus)
    assert overflowing >= 20
    assert (got == tok.MASK).any() and (got[:, 1:-1] == tok.EOT).any()


def test_row_layout_and_overflow_rule(reference):
    short, long_ = "a red coat", ("a man in a red coat " * 20).strip()
    rows = tok.tokenize([short, long_])
    ids = reference.encode(short)
    np.testing.assert_array_equal(rows[0, : len(ids) + 2], [tok.SOT, *ids, tok.EOT])
    assert not rows[0, len(ids) + 2 :].any()
    long_ids = reference.encode(long_)
    assert len(long_ids) > CTX
    np.testing.assert_array_equal(rows[1], [tok.SOT, *long_ids[: CTX - 2], tok.EOT])
    # Exactly full: SOT + 75 + EOT is kept whole; one more token is cut.
    fill = " ".join(["red"] * (CTX - 2))
    np.testing.assert_array_equal(tok.tokenize(fill)[0, -2:], [reference.encode("red")[0], tok.EOT])
    np.testing.assert_array_equal(tok.tokenize(fill + " coat")[0], tok.tokenize(fill)[0])


def test_single_string_and_context_length():
    one = tok.tokenize("a person")
    assert one.shape == (1, CTX) and one.dtype == np.int32
    np.testing.assert_array_equal(tok.tokenize(["a person"], context_length=5)[0, [0, 3, 4]], [tok.SOT, tok.EOT, 0])
    np.testing.assert_array_equal(tok.tokenize("a tall person in red", context_length=4)[0, [0, 3]], [tok.SOT, tok.EOT])
    assert tok.tokenize([]).shape == (0, CTX)


def test_special_tokens_follow_the_original():
    # Recognised only where a pattern match starts: after "!" it is plain punctuation.
    assert list(tok.encode("<|mask|>")) == [tok.MASK]
    assert list(tok.encode("A <|MASK|>")) == [tok.encode("a")[0], tok.MASK]
    assert tok.MASK not in tok.encode("x!<|mask|>")
    assert tok.encode("hi <|endoftext|> there")[1] == tok.EOT
    assert tok.encode("jekyll") == [tok.MASK]


def test_bad_input_is_named():
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        tok.tokenize(["fine", 3])
    with pytest.raises(ValueError, match="context_length"):
        tok.tokenize("x", context_length=1)
