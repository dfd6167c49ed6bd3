"""Cameras: the fixed scene a camera looks at and the per-shot view of a person in it.

A `Scene` belongs to a camera (its background, typical lighting, framing and the viewpoints it
tends to see); a `View` is one shot (which way the person faces, where and how large they stand,
lighting and noise of that frame). Visible and infrared cameras that share a location (RegDB's
co-registered pair, LLCM's day/night cameras) share one Scene.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FACINGS = ("front", "back", "side")


@dataclasses.dataclass(frozen=True)
class Scene:
    """A camera's fixed surroundings, all geometry as fractions of the image.

    props: rectangles (x0, y0, x1, y1, rgb) such as doors, pillars or parked things.
    facing_p: probabilities of FACINGS for people passing this camera.
    """

    indoor: bool
    wall: tuple[int, int, int]
    floor: tuple[int, int, int]
    horizon: float
    props: tuple[tuple[float, float, float, float, tuple[int, int, int]], ...]
    light: float
    tint: tuple[float, float, float]
    scale: tuple[float, float]
    facing_p: tuple[float, float, float]
    ir_level: float
    noise: float


@dataclasses.dataclass(frozen=True)
class View:
    """One shot. `direction` (+1 right, -1 left) matters for side views only.

    scale: person height / image height; cx, top: person centre x and head top as fractions of
    width and of the free vertical space; stride, swing: leg and arm offsets in body units.
    """

    facing: str
    direction: int
    scale: float
    cx: float
    top: float
    stride: float
    swing: float
    light: float
    tint: tuple[float, float, float]
    shift: float
    noise: float
    noise_seed: int


def _rgb(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    base = rng.integers(lo, hi)
    return tuple(int(np.clip(base + rng.integers(-25, 26), 0, 255)) for _ in range(3))


def sample_scene(rng: np.random.Generator, indoor: bool) -> Scene:
    """A random camera location; indoor scenes are brighter and more evenly lit."""
    if indoor:
        wall, floor = _rgb(rng, 150, 220), _rgb(rng, 90, 160)
        horizon = float(rng.uniform(0.55, 0.72))
    else:
        wall, floor = _rgb(rng, 90, 190), _rgb(rng, 60, 130)
        horizon = float(rng.uniform(0.35, 0.6))
    props = []
    for _ in range(int(rng.integers(1, 4))):
        x0 = float(rng.uniform(-0.1, 0.9))
        y0 = float(rng.uniform(0.0, horizon * 0.6))
        props.append((x0, y0, x0 + float(rng.uniform(0.08, 0.35)),
                      float(rng.uniform(horizon, 1.0)), _rgb(rng, 30, 230)))
    facing_p = rng.dirichlet([3.0, 3.0, 2.0])
    low = float(rng.uniform(0.7, 0.8))
    return Scene(
        indoor=indoor, wall=wall, floor=floor, horizon=horizon, props=tuple(props),
        light=float(rng.uniform(0.85, 1.05) if indoor else rng.uniform(0.75, 1.2)),
        tint=tuple(float(t) for t in rng.uniform(0.9, 1.1, size=3)),
        scale=(low, low + float(rng.uniform(0.1, 0.17))),
        facing_p=tuple(float(p) for p in facing_p),
        ir_level=float(rng.uniform(0.12, 0.22) if indoor else rng.uniform(0.05, 0.14)),
        noise=float(rng.uniform(3.0, 7.0)),
    )


def sample_view(rng: np.random.Generator, scene: Scene,
                facings: tuple[str, ...] = FACINGS) -> View:
    """One shot of a person in `scene`, facing one of `facings` (RegDB has no side views)."""
    p = np.array([scene.facing_p[FACINGS.index(f)] for f in facings])
    facing = facings[int(rng.choice(len(facings), p=p / p.sum()))]
    return View(
        facing=facing,
        direction=1 if rng.random() < 0.5 else -1,
        scale=float(rng.uniform(*scene.scale)),
        cx=float(rng.uniform(0.42, 0.58)),
        top=float(rng.uniform(0.2, 0.8)),
        stride=float(rng.uniform(0.0, 0.05)),
        swing=float(rng.uniform(-0.04, 0.04)),
        light=scene.light * float(rng.uniform(0.85, 1.15)),
        tint=tuple(float(t * rng.uniform(0.96, 1.04)) for t in scene.tint),
        shift=float(rng.uniform(-0.06, 0.06)),
        noise=scene.noise * float(rng.uniform(0.7, 1.3)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )
