"""Captions of synthetic shots, in the style of the released Text/ data (docs/original.md §8, §9).

- `blip_caption`: what the fine-tuned BLIP captioners produce: one lower-case clause. The RGB
  captioner names colours, the IR captioner never does. Both only mention what the shot shows
  (a backpack is not visible from the front) and drop or reorder parts from shot to shot.
- `llm_rephrase`: what the Vicuna rephraser produced from a caption: one to three sentences with
  synonyms, occasional preambles, and, for IR captions, occasional hallucinated colours that
  the project's colour filter (`tvilfm_jax.data.text.colour_filter`) then strips, as the
  released colour filter did.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from tvilfm_jax.data.text.colour_filter import remove_colours

from .people import BAGS, Person

_TOP_NOUN = {"t-shirt": "t-shirt", "shirt": "shirt", "sweater": "sweater", "hoodie": "hoodie",
             "jacket": "jacket"}
_BOTTOM_NOUN = {"jeans": "jeans", "trousers": "pants", "shorts": "shorts", "skirt": "skirt"}
_PLURAL_BOTTOMS = ("jeans", "trousers", "shorts")

_TOP_SYNONYMS = {
    "t-shirt": ("t-shirt", "tee", "T-shirt"),
    "shirt": ("shirt", "button-up shirt", "collared shirt"),
    "sweater": ("sweater", "jumper", "knit sweater"),
    "hoodie": ("hoodie", "hooded sweatshirt"),
    "jacket": ("jacket", "zip-up jacket"),
}
_BOTTOM_SYNONYMS = {
    "jeans": ("jeans", "denim jeans", "a pair of jeans"),
    "trousers": ("pants", "trousers", "slacks"),
    "shorts": ("shorts", "a pair of shorts"),
    "skirt": ("skirt",),
}


@dataclasses.dataclass(frozen=True)
class Mentions:
    """Which parts of a person one caption mentions, and whether it names colours."""

    person: Person
    facing: str
    colours: bool
    hair: bool
    shoes: bool
    bag: bool
    sleeve: bool


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def bag_visible(person: Person, facing: str) -> bool:
    """A backpack shows only its straps from the front; a handbag is visible from anywhere."""
    bag = person.shape.bag
    if bag not in BAGS:
        raise ValueError(f"unknown bag {bag!r}")
    return bag == "handbag" or (bag == "backpack" and facing != "front")


def choose_mentions(person: Person, facing: str, modality: str,
                    rng: np.random.Generator) -> Mentions:
    """Per-shot omissions: captioners skip hair or shoes now and then and never see hidden bags."""
    return Mentions(
        person=person, facing=facing, colours=modality == "rgb",
        hair=bool(rng.random() < 0.75),
        shoes=bool(rng.random() < 0.6),
        bag=bag_visible(person, facing) and bool(rng.random() < 0.9),
        sleeve=bool(rng.random() < 0.7),
    )


def _colour(m: Mentions, name: str | None, spelling: dict[str, str] | None = None) -> str:
    if not m.colours or name is None:
        return ""
    return (spelling or {}).get(name, name) + " "


def _top(m: Mentions, noun: str | None = None, spelling=None) -> str:
    s, p = m.person.shape, m.person
    noun = noun or _TOP_NOUN[s.top_type]
    sleeve = f"{s.sleeve}-sleeved " if (s.top_type == "shirt" and m.sleeve) else ""
    return _article(_colour(m, p.top_colour, spelling) + sleeve + noun)


def _bottom(m: Mentions, noun: str | None = None, spelling=None) -> str:
    s, p = m.person.shape, m.person
    noun = noun or _BOTTOM_NOUN[s.bottom_type]
    if noun.startswith("a pair of "):
        return "a pair of " + _colour(m, p.bottom_colour, spelling) + noun[len("a pair of "):]
    phrase = _colour(m, p.bottom_colour, spelling) + noun
    return phrase if s.bottom_type in _PLURAL_BOTTOMS else _article(phrase)


def _hair(m: Mentions, spelling=None) -> str:
    return f"{m.person.shape.hair_length} " + _colour(m, m.person.hair_colour, spelling) + "hair"


def _bag(m: Mentions, spelling=None) -> str:
    noun = m.person.shape.bag
    return _article(_colour(m, m.person.bag_colour, spelling) + noun)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def blip_caption(m: Mentions, rng: np.random.Generator) -> str:
    """One BLIP-style caption, e.g. 'a woman with long black hair wearing a red t-shirt, blue
    jeans and white shoes, carrying a black handbag'."""
    subject = "a " + m.person.shape.gender
    hair = f" with {_hair(m)}" if m.hair else ""
    shoes = [_colour(m, m.person.shoe_colour) + "shoes"] if m.shoes else []
    bag = ""
    if m.bag:
        verbs = ("carrying", "with", "holding") if m.person.shape.bag == "handbag" else ("carrying", "with")
        bag = f"{_pick(rng, verbs)} {_bag(m)}"
    top, bottom = _top(m), _bottom(m)
    templates = ["wearing", "in", "swapped"]
    if m.facing == "back":
        templates.append("walking away")
    elif m.facing == "side":
        templates.append("walking")
    kind = _pick(rng, templates)
    if kind == "wearing":
        text = f"{subject}{hair} wearing {_join([top, bottom, *shoes])}"
        return text + (f", {bag}" if bag else "")
    if kind == "in":
        text = f"{subject}{hair} in {top} and {bottom}"
    elif kind == "swapped":
        text = f"{subject}{hair} wearing {_join([bottom, top, *shoes])}"
    elif kind == "walking away":
        text = f"{subject}{hair} walking away in {top} and {bottom}"
    else:
        text = f"{subject}{hair} walking in {top} and {bottom}"
    return text + (f" {bag}" if bag else "")


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def llm_rephrase(m: Mentions, rng: np.random.Generator) -> str:
    """A Vicuna-style paraphrase of the caption described by `m` (same facts, other words)."""
    s = m.person.shape
    man = s.gender == "man"
    subject = _pick(rng, ("a man", "a young man", "the man", "a gentleman") if man
                    else ("a woman", "a young woman", "the woman", "a lady"))
    pron, pos = ("he", "his") if man else ("she", "her")
    # The LLM prefers American spelling about half the time.
    spelling = {"grey": "gray"} if rng.random() < 0.5 else None
    top_noun = _pick(rng, _TOP_SYNONYMS[s.top_type])
    sleeve = ""
    if s.top_type == "shirt" and m.sleeve and rng.random() < 0.5:
        sleeve, m = f" with {s.sleeve} sleeves", dataclasses.replace(m, sleeve=False)
    top = _top(m, top_noun, spelling) + sleeve
    bottom = _bottom(m, _pick(rng, _BOTTOM_SYNONYMS[s.bottom_type]), spelling)
    shoes = (_colour(m, m.person.shoe_colour, spelling) + _pick(rng, ("shoes", "sneakers", "footwear"))
             if m.shoes else "")
    verb = _pick(rng, ("is wearing", "is dressed in", "has on", "sports"))
    paired = _pick(rng, ("paired with", "along with", "together with", "with"))
    sentences: list[str] = []
    kind = int(rng.integers(3))
    if kind == 0:
        lead = f"{subject} with {_hair(m, spelling)}" if m.hair else subject
        clothes = f"{top}, {paired} {bottom}" + (f" and {shoes}" if shoes else "")
        sentences.append(f"{lead} {verb} {clothes}")
    elif kind == 1:
        sentences.append(f"{subject} is seen in {top} and {bottom}")
        if m.hair:
            sentences.append(f"{pron} has {_hair(m, spelling)}")
        if shoes:
            sentences.append(f"{pron} also wears {shoes}")
    else:
        action = _pick(rng, ("walks by", "is walking", "stands in view"))
        sentences.append(f"wearing {top} and {bottom}, {subject} {action}")
        if m.hair:
            sentences.append(f"{pos} {_hair(m, spelling)} is visible")
        if shoes:
            sentences.append(f"{pron} completes the look with {shoes}")
    if m.bag:
        bag = _bag(m, spelling)
        sentences.append(_pick(rng, (
            f"{pron} is carrying {bag}",
            f"{pron} has {bag} with {pos}",
            f"{bag} hangs from {pos} shoulder" if s.bag == "handbag" else f"{bag} is on {pos} back",
        )))
    text = " ".join(_sentence(x) for x in sentences)
    if rng.random() < 0.03:
        text = f"The person's description can be rephrased as follows: \"{text}\""
    return text


def _hallucinate(text: str, rng: np.random.Generator) -> str:
    """The LLM sometimes adds a colour the IR caption never had (docs/original.md §8: 52 of 4120 in RegDB)."""
    nouns = ("shoes", "sneakers", "footwear", "jeans", "pants", "trousers", "shorts", "jacket",
             "hoodie", "sweater", "shirt")
    present = [n for n in nouns if re.search(rf"\b{n}\b", text)]
    if not present:
        return text
    noun = _pick(rng, present)
    colour = _pick(rng, ("dark", "black", "white", "blue", "gray", "light blue", "dark-colored"))
    return re.sub(rf"\b{noun}\b", f"{colour} {noun}", text, count=1)


def describe(person: Person, facing: str, modality: str,
             rng: np.random.Generator) -> tuple[str, str]:
    """(description, aug_description) of one shot; IR text is colour-free."""
    m = choose_mentions(person, facing, modality, rng)
    description = blip_caption(m, rng)
    rephrase = llm_rephrase(m, rng)
    if modality == "ir":
        if rng.random() < 0.25:
            rephrase = _hallucinate(rephrase, rng)
        rephrase = remove_colours(rephrase)
    return description, rephrase
