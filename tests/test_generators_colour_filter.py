"""The colour filter applied to LLM-rephrased IR captions (docs/original.md §8.3): a table of inputs and
the exact outputs, the words that must stay, and the file mode of the CLI."""

from __future__ import annotations

import json

import pytest

from tvilfm_jax.data.text import colour_filter
from tvilfm_jax.generators.__main__ import main
from tvilfm_jax.data.text.colour_filter import contains_colour, remove_colours

REMOVED = [
    # multi-word and hyphenated colours go whole
    ("A man wearing a navy blue jacket and light-grey pants.", "A man wearing a jacket and pants."),
    ("A woman in a sky blue dress.", "A woman in a dress."),
    ("She has a light grey coat and dark navy blue shoes.", "She has a coat and shoes."),
    ("A young man in a blue-green T-shirt.", "A young man in a T-shirt."),
    # "X-colored" / "X coloured" / "X-haired"
    ("A black-colored backpack.", "A backpack."),
    ("A red coloured umbrella and a grey-haired man.", "An umbrella and a man."),
    # colour pairs and lists
    ("A black and white striped shirt.", "A striped shirt."),
    ("A black-and-white shirt.", "A shirt."),
    ("A red, white and blue flag on his bag.", "A flag on his bag."),
    ("A half-black and half-white dress.", "A dress."),
    # a colour used as a noun takes its preposition with it
    ("A man in black, carrying a bag.", "A man, carrying a bag."),
    ("A man in black and a woman in white.", "A man and a woman."),
    ("A man in black pants.", "A man in pants."),
    # sentence start, articles, punctuation
    ("Black pants and a white shirt.", "Pants and a shirt."),
    ("She carries an orange bag and an Orange hat.", "She carries a bag and a hat."),
    ("He wears a blue uniform, an ivory scarf.", "He wears a uniform, a scarf."),
    ("A person wearing a black.", "A person wearing."),
    ("A woman wearing a light grey coat (dark blue).", "A woman wearing a coat."),
    ("The person has dark hair, a colorful shirt and blonde hair.", "The person has hair, a shirt and hair."),
    ("A man with reddish hair , a gray bag.", "A man with hair, a bag."),
    ("BLUE jeans and Khaki shorts", "Jeans and shorts"),
]

KEPT = [
    "A woman walking past a whitewashed wall.",
    "He holds a bluetooth speaker.",
    "A redhead walking in the hall.",
    "A brunette with a backpack.",
    "A white-collar worker in a light jacket on a bright day.",
    "A man in a tank top, carrying a transparent bag.",
    "Her blackboard and the greenery.",
    "no colour  here , spacing kept",
]


@pytest.mark.parametrize("text, expected", REMOVED)
def test_colour_words_are_removed(text, expected):
    assert remove_colours(text) == expected
    assert contains_colour(text)
    assert remove_colours(expected) == expected  # idempotent


@pytest.mark.parametrize("text", KEPT)
def test_words_that_only_contain_a_colour_stay(text):
    assert not contains_colour(text)
    assert remove_colours(text) == text


def test_one_vocabulary_drives_the_filter():
    for word in colour_filter.COLOUR_WORDS:
        assert remove_colours(f"a {word} bag") == "a bag", word
    # shade words alone are not colours, in front of a colour they are
    for shade in colour_filter.SHADE_WORDS:
        assert remove_colours(f"a {shade} bag") == f"a {shade} bag", shade
        assert remove_colours(f"a {shade}-blue bag") == "a bag", shade
    with pytest.raises(TypeError, match="expects a str"):
        remove_colours(None)


def test_filter_cli_on_a_released_style_file(tmp_path):
    src, dst = tmp_path / "raw.json", tmp_path / "out" / "filtered.json"
    src.write_text(json.dumps({
        "/data/RegDB/Thermal/1/a.bmp": {"description": "a man walking", "aug_description": "A man in a navy blue coat."},
        "/data/RegDB/Thermal/1/b.bmp": {"description": "a man", "aug_description": "A man walking."},
        "7": ["a woman in a red dress", "a woman"],
        "plain": "dark-grey jeans",
    }))
    assert main(["filter", "--input", str(src), "--output", str(dst)]) == 0
    out = json.loads(dst.read_text())
    assert out["/data/RegDB/Thermal/1/a.bmp"] == {"description": "a man walking", "aug_description": "A man in a coat."}
    assert out["/data/RegDB/Thermal/1/b.bmp"]["aug_description"] == "A man walking."
    assert out["7"] == ["a woman in a dress", "a woman"]
    assert out["plain"] == "jeans"
    src.write_text(json.dumps({"k": {"description": "x"}}))
    with pytest.raises(ValueError, match=r"raw\.json: entry 'k': expected an 'aug_description' field"):
        main(["filter", "--input", str(src), "--output", str(dst)])
