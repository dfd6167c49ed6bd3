"""Removing colour words from a description (the IR rephrase filter of docs/original.md §8.3).

The LLM that rephrases colour-free IR captions hallucinates colours; TVI-LFM removes them so
that the IR text only says what an infrared camera can see. The original notebook did naive
substring replacement ("red" also hit "bored red-"), this module does the same job with word
boundaries and one vocabulary.

What counts as a colour (decided here; the colour filter tests pin every rule):
- every word in ``COLOUR_WORDS`` on its own ("black", "navy", "khaki", "dark", "colourful",
  "reddish", "blonde");
- a run of shade/colour words ending in a colour, joined by spaces or hyphens: "navy blue",
  "sky blue", "light grey", "light-grey", "dark navy blue", "blue-green";
- such a run followed by "colored"/"coloured"/"color"/"toned"/"tinted"/"haired"
  ("black-colored", "grey haired");
- colour lists joined by and/or/&/commas, "black and white", "red, white and blue",
  "black-and-white", and "half-X and half-Y";
- a colour used as a noun after "in"/"of" ("a man in black, carrying ..."), where the
  preposition goes too.
Shade words ("light", "pale", "bright", "deep", "sky", ...) count only in front of a colour:
"a light jacket" and "bright day" keep them.

What stays:
- words that merely contain a colour: "whitewashed", "bluetooth", "blackboard", "tank";
- hyphenated compounds whose other part is not colour vocabulary: "white-collar";
- "redhead" and "brunette": they are nouns for a person, and deleting them would leave a
  sentence without its subject. "blond"/"blonde" are adjectives and are removed;
- "transparent" (the original list had it; it is not a colour).

After a removal the sentence is tidied: an article left in front of the removed words is
fixed ("an orange bag" -> "a bag") or dropped when nothing follows ("wearing a black." ->
"wearing."), a capital at the start of a sentence moves to the next word, and spaces and
commas are collapsed. Sentences without colour words come back unchanged. Predicates such
as "the shoes are white." become "the shoes are." - no grammar is rebuilt.
"""

from __future__ import annotations

import re

# The one list of colour vocabulary. Words here are colours wherever they stand.
COLOUR_WORDS: tuple[str, ...] = (
    "black", "white", "grey", "gray", "red", "blue", "green", "yellow", "orange", "purple",
    "pink", "brown", "beige", "khaki", "navy", "maroon", "burgundy", "tan", "cream", "ivory",
    "olive", "teal", "turquoise", "cyan", "magenta", "violet", "lavender", "lilac", "gold",
    "golden", "silver", "charcoal", "crimson", "scarlet", "indigo", "coral", "mustard",
    "blond", "blonde", "dark",
    "colorful", "colourful", "multicolored", "multicoloured", "multi-colored", "multi-coloured",
    "greyish", "grayish", "reddish", "bluish", "blueish", "greenish", "yellowish", "brownish",
    "pinkish", "purplish", "whitish", "blackish", "orangish",
)

# Words that are colours only in front of a colour word: "light grey" but "a light jacket".
SHADE_WORDS: tuple[str, ...] = (
    "light", "pale", "bright", "deep", "pastel", "neon", "sky", "royal", "baby", "hot", "off",
    "forest", "lime", "dusty", "muted", "soft", "dull", "vivid", "rich", "medium", "jet",
    "pitch", "snow", "wine",
)

# Trailing words that belong to the colour phrase: "black-colored", "grey haired".
_COLOUR_SUFFIXES = ("colored", "coloured", "color", "colour", "toned", "tinted", "haired")

# Words after "in <colour>" that show the colour was a noun ("a man in black walking").
_AFTER_NOUN_COLOUR = (
    "and", "or", "with", "while", "who", "that", "is", "are", "was", "were", "carrying",
    "holding", "walking", "standing", "sitting", "wearing", "looking", "talking", "riding",
    "on", "at", "near", "in",
)

_ARTICLE_MARK = "\x00"  # stands where words were removed, so the tidy-up knows where to look
_CAPITAL_MARK = "\x01"  # the same, when the removed words started with a capital


def _alternation(words) -> str:
    # Longest first so "multi-colored" wins over a shorter overlapping word.
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


def _build_patterns() -> tuple[re.Pattern, re.Pattern]:
    colour = f"(?:{_alternation(COLOUR_WORDS)})"
    shade = f"(?:{_alternation(SHADE_WORDS)})"
    suffix = f"(?:[ -](?:{_alternation(_COLOUR_SUFFIXES)}))"
    # "light-grey", "dark navy blue", "blue-green": shades/colours that end in a colour.
    term = rf"(?:half[ -])?(?:(?:{shade}|{colour})[ -])*{colour}{suffix}?"
    joiner = r"(?:\s*,?\s+(?:and|or|&)\s+|-and-|-or-)"
    # "black and white", "red, white and blue", "half-black and half-white".
    phrase = rf"{term}(?:(?:\s*,\s*{term})*{joiner}{term})?"
    # Outer guards: no letter, digit or hyphen on either side, so "whitewashed" and
    # "white-collar" are not touched.
    guarded = rf"(?<![\w-]){phrase}(?![\w-])"
    after_noun = rf"(?=\s*(?:[,.;:!?)]|$|\b(?:{_alternation(_AFTER_NOUN_COLOUR)})\b))"
    noun_use = rf"\b(?:in|of)\s+(?:all[ -])?{phrase}(?![\w-]){after_noun}"
    return (re.compile(noun_use, re.IGNORECASE), re.compile(guarded, re.IGNORECASE))


_NOUN_USE, _COLOUR_PHRASE = _build_patterns()


def _mark(match: re.Match) -> str:
    return _CAPITAL_MARK if match.group(0)[:1].isupper() else _ARTICLE_MARK


_VOWEL_LETTER_CONSONANT_SOUND = ("uni", "use", "usu", "eu", "one", "once")
_SILENT_H = ("hour", "honest", "honour", "honor", "heir")


def _starts_with_vowel_sound(word: str) -> bool:
    # Spelling rule plus the exceptions likely in person descriptions ("a uniform", "an hour").
    w = word.lower()
    if w.startswith(_VOWEL_LETTER_CONSONANT_SOUND):
        return False
    return w[:1] in "aeiou" or w.startswith(_SILENT_H)


def _fix_article(match: re.Match) -> str:
    article, marks, word = match.group(1), match.group(2), match.group(3)
    fixed = "an" if _starts_with_vowel_sound(word) else "a"
    if article[0].isupper():
        fixed = fixed.capitalize()
    return f"{fixed}{marks} {word}"


def _tidy(text: str) -> str:
    marks = f"[{_ARTICLE_MARK}{_CAPITAL_MARK}]"
    # An article with nothing left to qualify: "wearing a <removed>." -> "wearing."
    text = re.sub(rf"\b(?:a|an|the)\s+((?:{marks}\s*)+)(?=[,.;:!?)]|$)", r"\1", text,
                  flags=re.IGNORECASE)
    # "an <removed> bag" -> "a bag".
    text = re.sub(rf"\b(an?|An?)\s+((?:{marks}\s*)+)(\w+)", _fix_article, text)
    # "Black pants." -> "Pants.": carry the sentence-initial capital to the next word.
    text = re.sub(
        rf"(^|[.!?]\s+|\"\s*)((?:{marks}\s*)*{_CAPITAL_MARK}(?:\s*{marks})*)\s*([a-z])",
        lambda m: m.group(1) + m.group(3).upper(), text)
    text = re.sub(marks, " ", text)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\(\s*\)|\[\s*\]", "", text)
    text = re.sub(r"\s+([,.;:!?)])", r"\1", text)
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r",(?:\s*,)+", ",", text)
    text = re.sub(r",\s*([.;:!?])", r"\1", text)
    text = re.sub(r"^\s*[,;:]\s*", "", text)
    text = re.sub(r"([.!?])\s*[,;:]\s*", r"\1 ", text)
    text = re.sub(r"[ \t]+", " ", text)
    return text.strip()


def remove_colours(text: str) -> str:
    """Returns ``text`` without colour words and phrases (see the module docstring).

    Text with no colour vocabulary is returned unchanged.
    """
    if not isinstance(text, str):
        raise TypeError(f"remove_colours expects a str, got {type(text).__name__}")
    marked = _NOUN_USE.sub(_mark, text)
    marked = _COLOUR_PHRASE.sub(_mark, marked)
    if marked == text:
        return text
    return _tidy(marked)


def contains_colour(text: str) -> bool:
    """True when ``remove_colours`` would change ``text``."""
    return bool(_NOUN_USE.search(text) or _COLOUR_PHRASE.search(text))
