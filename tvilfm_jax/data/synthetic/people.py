"""Who the synthetic people are: attribute vocabularies, colours and identity sampling.

An identity is a `Shape` (everything an infrared camera can see: gender, hair length, garment
types, bag, build) plus a set of colours (what only a visible-light camera sees). Identities are
sampled in groups that share one Shape and differ only in colours, so that infrared images alone
cannot tell the members of a group apart while RGB images and colour captions can.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# name -> sRGB. Names are the words captions use.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 32),
    "white": (235, 235, 228),
    "grey": (128, 128, 130),
    "red": (200, 32, 38),
    "blue": (40, 72, 190),
    "green": (42, 140, 64),
    "yellow": (236, 204, 44),
    "pink": (236, 132, 172),
    "purple": (122, 52, 150),
    "orange": (240, 130, 32),
    "brown": (116, 72, 42),
}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (22, 18, 18),
    "brown": (96, 60, 34),
    "blonde": (214, 184, 110),
    "grey": (162, 160, 158),
}

GENDERS = ("man", "woman")
HAIR_LENGTHS = ("short", "long")
# top type -> sleeve lengths it comes in.
TOP_SLEEVES: dict[str, tuple[str, ...]] = {
    "t-shirt": ("short",),
    "shirt": ("short", "long"),
    "sweater": ("long",),
    "hoodie": ("long",),
    "jacket": ("long",),
}
TOP_TYPES = tuple(TOP_SLEEVES)
BOTTOM_TYPES = ("jeans", "trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "handbag")

# Colours each garment plausibly comes in (real jeans are rarely yellow).
TOP_COLOURS = tuple(COLOURS)
BOTTOM_COLOURS: dict[str, tuple[str, ...]] = {
    "jeans": ("blue", "black", "grey", "white"),
    "trousers": ("black", "grey", "brown", "blue", "white", "green"),
    "shorts": ("black", "grey", "blue", "white", "brown", "red", "green"),
    "skirt": ("black", "red", "blue", "pink", "white", "grey", "purple", "yellow"),
}
SHOE_COLOURS = ("black", "white", "brown", "grey", "red")
BAG_COLOURS = ("black", "brown", "red", "blue", "grey", "pink")

# Identities per shared Shape: members of a group look alike in infrared.
IDS_PER_SHAPE = 3


@dataclasses.dataclass(frozen=True)
class Shape:
    """What survives in infrared. `width` and `height` scale the body (about 0.9-1.1)."""

    gender: str
    hair_length: str
    top_type: str
    sleeve: str
    bottom_type: str
    bag: str
    width: float
    height: float

    def categorical(self) -> tuple[str, ...]:
        return (self.gender, self.hair_length, self.top_type, self.sleeve, self.bottom_type,
                self.bag)


@dataclasses.dataclass(frozen=True)
class Person:
    """One identity. `bag_colour` is None when `shape.bag == "none"`."""

    pid: int
    shape: Shape
    hair_colour: str
    top_colour: str
    bottom_colour: str
    shoe_colour: str
    bag_colour: str | None

    def colours(self) -> tuple[str | None, ...]:
        return (self.hair_colour, self.top_colour, self.bottom_colour, self.shoe_colour,
                self.bag_colour)


def luminance(rgb: tuple[int, int, int]) -> float:
    """Rec. 601 luma in [0, 1]."""
    r, g, b = rgb
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255.0


def reflectance_level(rgb: tuple[int, int, int]) -> int:
    """Coarse lightness class 0 (dark), 1 (mid), 2 (light): all infrared keeps of a colour.

    Red, green, purple, orange, brown and grey all fall in class 1, blue and black in 0,
    white, yellow and pink in 2, which is why colour cannot be read back from infrared.
    """
    y = luminance(rgb)
    return 0 if y < 0.30 else (1 if y < 0.62 else 2)


def _choice(rng: np.random.Generator, options, p=None):
    return options[int(rng.choice(len(options), p=p))]


def sample_shape(rng: np.random.Generator) -> Shape:
    gender = _choice(rng, GENDERS)
    long_hair_p = 0.75 if gender == "woman" else 0.08
    hair_length = "long" if rng.random() < long_hair_p else "short"
    top_type = _choice(rng, TOP_TYPES, p=[0.3, 0.22, 0.16, 0.14, 0.18])
    sleeve = _choice(rng, TOP_SLEEVES[top_type])
    if gender == "man":
        bottom_type = _choice(rng, BOTTOM_TYPES[:3], p=[0.45, 0.4, 0.15])
    else:
        bottom_type = _choice(rng, BOTTOM_TYPES, p=[0.35, 0.25, 0.1, 0.3])
    bag = _choice(rng, BAGS, p=[0.45, 0.35, 0.2])
    return Shape(
        gender=gender, hair_length=hair_length, top_type=top_type, sleeve=sleeve,
        bottom_type=bottom_type, bag=bag,
        width=round(float(rng.uniform(0.9, 1.1)), 3),
        height=round(float(rng.uniform(0.92, 1.04)), 3),
    )


def sample_colours(rng: np.random.Generator, shape: Shape) -> tuple[str, str, str, str, str | None]:
    """(hair, top, bottom, shoes, bag) colour names valid for `shape`."""
    return (
        _choice(rng, tuple(HAIR_COLOURS), p=[0.5, 0.28, 0.14, 0.08]),
        _choice(rng, TOP_COLOURS),
        _choice(rng, BOTTOM_COLOURS[shape.bottom_type]),
        _choice(rng, SHOE_COLOURS),
        None if shape.bag == "none" else _choice(rng, BAG_COLOURS),
    )


def sample_people(pids: list[int], rng: np.random.Generator) -> dict[int, Person]:
    """One Person per pid; groups of `IDS_PER_SHAPE` consecutive-in-shuffle pids share a Shape.

    Within a group the (top, bottom) colour pair differs between members, and no two
    identities in the whole set have the same colours and the same Shape.
    """
    pids = [int(p) for p in pids]
    if len(set(pids)) != len(pids):
        raise ValueError(f"pids must be unique, got {pids}")
    num_shapes = max(1, math.ceil(len(pids) / IDS_PER_SHAPE))
    shapes: list[Shape] = []
    seen: set[tuple[str, ...]] = set()
    for _ in range(100 * num_shapes):
        if len(shapes) == num_shapes:
            break
        shape = sample_shape(rng)
        # Distinct categorical shapes keep groups apart in infrared; past ~250 groups the
        # vocabulary runs out and repeats are allowed (builds still differ).
        if shape.categorical() not in seen or len(seen) > 200:
            seen.add(shape.categorical())
            shapes.append(shape)
    order = rng.permutation(len(pids))
    people: dict[int, Person] = {}
    for rank, idx in enumerate(order):
        shape = shapes[rank // IDS_PER_SHAPE]
        group = [p for p in people.values() if p.shape == shape]
        for _ in range(1000):
            colours = sample_colours(rng, shape)
            if all((colours[1], colours[2]) != (p.top_colour, p.bottom_colour) for p in group):
                break
        else:
            raise RuntimeError(f"could not find distinct colours for a group of shape {shape}")
        pid = pids[idx]
        people[pid] = Person(pid, shape, *colours)
    return {pid: people[pid] for pid in sorted(people)}
