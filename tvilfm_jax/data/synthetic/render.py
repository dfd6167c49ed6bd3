"""Drawing a Person seen by a visible or an infrared camera.

A shot is drawn once as a label map (which body part covers each pixel) and then coloured:
RGB colours each part with the person's colours; infrared gives each part a thermal intensity
set by material and body heat (bare skin brightest, thin clothes warmer than thick ones, bags
and shoes coldest) plus only a coarse lightness class of its colour, so garments of different
colours but equal lightness class look the same. Geometry is in "body units": y runs from 0
(top of the head) to 1 (soles), x from the body axis, both as fractions of the person's height.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from .cameras import Scene, View
from .people import COLOURS, HAIR_COLOURS, Person, reflectance_level

MODALITIES = ("rgb", "ir")

# Label ids of the label map.
BACKGROUND, SKIN, HAIR, TOP, TOP_SHADE, BOTTOM, SHOES, BAG = range(8)
NUM_LABELS = 8

SKIN_RGB = (222, 178, 148)

# Infrared intensity (0..1) of each garment before its lightness class is added: thin, tight
# clothes pass more body heat than thick or loose ones.
IR_TOP = {"t-shirt": 0.64, "shirt": 0.6, "sweater": 0.53, "hoodie": 0.5, "jacket": 0.45}
IR_BOTTOM = {"jeans": 0.5, "trousers": 0.53, "shorts": 0.57, "skirt": 0.58}
IR_SKIN, IR_HAIR, IR_SHOES, IR_BAG = 0.9, 0.4, 0.3, 0.26
# How much of a colour's lightness class reaches infrared, per class step.
IR_LIGHTNESS_STEP = 0.04

# Body-unit geometry shared by the views.
HIP_Y, CROTCH_Y, ANKLE_Y, SHOULDER_Y, HAND_Y = 0.47, 0.56, 0.935, 0.16, 0.46
SLEEVE_END = {"short": 0.27, "long": 0.45}


class _Canvas:
    """Maps body units to pixels for one shot and draws labels."""

    def __init__(self, person: Person, view: View, size: tuple[int, int]):
        h, w = size
        self.image = Image.new("P", (w, h), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.hp = min(view.scale * person.shape.height, 0.98) * h
        self.top = view.top * (h - self.hp)
        self.cx = view.cx * w
        # Back views mirror the body so that a bag on the person's right shows on the right.
        mirror = -1.0 if view.facing == "back" else float(view.direction if view.facing == "side" else 1)
        self.sx = mirror * person.shape.width

    def pt(self, x: float, y: float) -> tuple[float, float]:
        return self.cx + self.sx * x * self.hp, self.top + y * self.hp

    def poly(self, points, label: int) -> None:
        self.draw.polygon([self.pt(x, y) for x, y in points], fill=label)

    def ellipse(self, x: float, y: float, rx: float, ry: float, label: int) -> None:
        (xa, ya), (xb, yb) = self.pt(x - rx, y - ry), self.pt(x + rx, y + ry)
        self.draw.ellipse([min(xa, xb), ya, max(xa, xb), yb], fill=label)

    def box(self, x0: float, y0: float, x1: float, y1: float, label: int, round_: float = 0.0) -> None:
        (xa, ya), (xb, yb) = self.pt(x0, y0), self.pt(x1, y1)
        rect = [min(xa, xb), ya, max(xa, xb), yb]
        if round_ > 0:
            self.draw.rounded_rectangle(rect, radius=round_ * self.hp, fill=label)
        else:
            self.draw.rectangle(rect, fill=label)


def _limb(top: tuple[float, float], bottom: tuple[float, float], y_top: float, y_bottom: float,
          y0: float, y1: float):
    """Quad of a tapered limb between heights y0 and y1.

    top/bottom: (outer x, inner x) at heights y_top/y_bottom.
    """
    def at(y):
        t = (y - y_top) / (y_bottom - y_top)
        return (top[0] + t * (bottom[0] - top[0]), top[1] + t * (bottom[1] - top[1]))
    (o0, i0), (o1, i1) = at(y0), at(y1)
    return [(o0, y0), (i0, y0), (i1, y1), (o1, y1)]


def _legs_front(c: _Canvas, person: Person, view: View) -> list[tuple[float, float]]:
    """Draws legs and bottoms in a front/back view; returns ankle centres."""
    s = person.shape
    hw = 0.1 if s.gender == "woman" else 0.095
    ankle_w = 0.05 if s.bottom_type == "jeans" else 0.062
    spread = view.stride * 0.5
    ankles = []
    legs = []
    for side in (-1, 1):
        out_ankle = side * (0.02 + ankle_w + spread)
        in_ankle = side * (0.02 + spread)
        legs.append(((side * hw, side * 0.005), (out_ankle, in_ankle)))
        ankles.append((side * (0.02 + ankle_w / 2 + spread), ANKLE_Y))
    bare_from = {"jeans": None, "trousers": None, "shorts": 0.66, "skirt": 0.66}[s.bottom_type]
    for top, bottom in legs:
        if bare_from is not None:
            if s.bottom_type == "skirt":
                # Bare legs under a skirt are slimmer than the trouser silhouette.
                mid_t = ((top[0] + top[1]) / 2, (bottom[0] + bottom[1]) / 2)
                top = (mid_t[0] + 0.02 * np.sign(top[0]), mid_t[0] - 0.02 * np.sign(top[0]))
                bottom = (mid_t[1] + 0.018 * np.sign(bottom[0]), mid_t[1] - 0.018 * np.sign(bottom[0]))
            c.poly(_limb(top, bottom, CROTCH_Y, ANKLE_Y, CROTCH_Y - 0.01, ANKLE_Y), SKIN)
        if s.bottom_type != "skirt":
            end = bare_from if bare_from is not None else ANKLE_Y
            c.poly(_limb(top, bottom, CROTCH_Y, ANKLE_Y, CROTCH_Y - 0.01, end), BOTTOM)
    if s.bottom_type == "skirt":
        c.poly([(-hw, HIP_Y - 0.01), (hw, HIP_Y - 0.01), (hw + 0.045, 0.7), (-hw - 0.045, 0.7)], BOTTOM)
    else:
        c.poly([(-hw, HIP_Y), (hw, HIP_Y), (hw, CROTCH_Y + 0.01), (-hw, CROTCH_Y + 0.01)], BOTTOM)
    return ankles


def _legs_side(c: _Canvas, person: Person, view: View) -> list[tuple[float, float]]:
    s = person.shape
    ankles = []
    bare_from = 0.66 if s.bottom_type in ("shorts", "skirt") else None
    for side in (-1, 1):  # back leg first, the front leg covers it
        ax = side * (0.015 + view.stride)
        top, bottom = (-0.045, 0.04), (ax - 0.028, ax + 0.026)
        if bare_from is not None:
            slim_top = (-0.025, 0.025) if s.bottom_type == "skirt" else top
            c.poly(_limb(slim_top, bottom, HIP_Y, ANKLE_Y, HIP_Y + 0.05, ANKLE_Y), SKIN)
        if s.bottom_type != "skirt":
            end = bare_from if bare_from is not None else ANKLE_Y
            c.poly(_limb(top, bottom, HIP_Y, ANKLE_Y, HIP_Y, end), BOTTOM)
        ankles.append((ax + 0.015, ANKLE_Y))
    if s.bottom_type == "skirt":
        c.poly([(-0.06, HIP_Y - 0.01), (0.06, HIP_Y - 0.01), (0.085, 0.7), (-0.085, 0.7)], BOTTOM)
    else:
        c.box(-0.055, HIP_Y, 0.052, HIP_Y + 0.06, BOTTOM)
    return ankles


def _hem(top_type: str) -> float:
    return {"jacket": 0.53, "hoodie": 0.51}.get(top_type, 0.49)


def _torso_front(c: _Canvas, person: Person, view: View) -> float:
    """Torso, top details, arms and straps of a front/back view; returns shoulder half-width."""
    s = person.shape
    sw, ww = (0.11, 0.085) if s.gender == "woman" else (0.125, 0.1)
    hem = _hem(s.top_type)
    front = view.facing == "front"
    c.box(-0.022, 0.115, 0.022, SHOULDER_Y + 0.01, SKIN)  # neck
    c.poly([(-sw, SHOULDER_Y), (sw, SHOULDER_Y), (ww, hem), (-ww, hem)], TOP)
    if s.top_type == "shirt" and front:
        c.poly([(-0.035, SHOULDER_Y), (0.0, 0.2), (0.0, SHOULDER_Y)], TOP_SHADE)
        c.poly([(0.035, SHOULDER_Y), (0.0, 0.2), (0.0, SHOULDER_Y)], TOP_SHADE)
        c.box(-0.003, 0.2, 0.003, hem, TOP_SHADE)
    elif s.top_type == "jacket" and front:
        c.box(-0.004, SHOULDER_Y, 0.004, hem, TOP_SHADE)
    elif s.top_type == "hoodie":
        if front:
            c.poly([(-0.06, 0.14), (0.06, 0.14), (0.04, 0.19), (-0.04, 0.19)], TOP_SHADE)
            c.box(-0.06, 0.37, 0.06, 0.45, TOP_SHADE)
        else:
            c.poly([(-0.07, 0.14), (0.07, 0.14), (0.05, 0.26), (-0.05, 0.26)], TOP_SHADE)
    elif s.top_type == "sweater":
        c.box(-ww, hem - 0.025, ww, hem, TOP_SHADE)
    if s.bag == "backpack":
        if front:
            for side in (-1, 1):
                c.poly([(side * 0.06, SHOULDER_Y), (side * 0.078, SHOULDER_Y),
                        (side * 0.082, 0.37), (side * 0.064, 0.37)], BAG)
        else:
            c.box(-0.085, 0.19, 0.085, 0.44, BAG, round_=0.02)
    sleeve_end = SLEEVE_END[s.sleeve]
    for side in (-1, 1):
        swing = side * view.swing
        top = (side * (sw + 0.04), side * (sw - 0.012))
        bottom = (side * (sw + 0.05) + swing, side * (sw - 0.002) + swing)
        c.poly(_limb(top, bottom, SHOULDER_Y + 0.01, HAND_Y, SHOULDER_Y + 0.005, sleeve_end), TOP)
        if sleeve_end < HAND_Y:
            c.poly(_limb(top, bottom, SHOULDER_Y + 0.01, HAND_Y, sleeve_end, HAND_Y), SKIN)
        c.ellipse((bottom[0] + bottom[1]) / 2, HAND_Y + 0.015, 0.022, 0.024, SKIN)
    if s.bag == "handbag":
        c.poly([(0.085, SHOULDER_Y), (0.1, SHOULDER_Y), (0.18, 0.405), (0.165, 0.405)], BAG)
        c.box(0.13, 0.4, 0.225, 0.52, BAG, round_=0.012)
    return sw


def _head_front(c: _Canvas, person: Person, view: View) -> None:
    long_hair = person.shape.hair_length == "long"
    if view.facing == "front":
        if long_hair:
            for side in (-1, 1):
                c.poly([(side * 0.03, 0.05), (side * 0.06, 0.05),
                        (side * 0.066, 0.25), (side * 0.036, 0.25)], HAIR)
        c.ellipse(0.0, 0.058, 0.051, 0.057, HAIR)
        c.ellipse(0.0, 0.08, 0.041, 0.05, SKIN)
    else:
        c.ellipse(0.0, 0.068, 0.046, 0.062, SKIN)
        if long_hair:
            c.poly([(-0.055, 0.05), (0.055, 0.05), (0.068, 0.29), (-0.068, 0.29)], HAIR)
        c.ellipse(0.0, 0.06, 0.05, 0.062 if long_hair else 0.056, HAIR)


def _body_side(c: _Canvas, person: Person, view: View) -> None:
    s = person.shape
    hem = _hem(s.top_type)
    if s.bag == "backpack":
        c.box(-0.105, 0.19, -0.03, 0.43, BAG, round_=0.015)
    c.box(-0.018, 0.115, 0.018, SHOULDER_Y + 0.01, SKIN)
    c.poly([(-0.055, SHOULDER_Y), (0.05, SHOULDER_Y), (0.048, hem), (-0.052, hem)], TOP)
    if s.top_type == "jacket":
        c.box(0.04, SHOULDER_Y, 0.048, hem, TOP_SHADE)
    elif s.top_type == "hoodie":
        c.poly([(-0.065, 0.13), (-0.01, 0.13), (-0.02, 0.22), (-0.06, 0.22)], TOP_SHADE)
    elif s.top_type == "sweater":
        c.box(-0.052, hem - 0.025, 0.048, hem, TOP_SHADE)
    elif s.top_type == "shirt":
        c.poly([(0.0, SHOULDER_Y - 0.005), (0.03, SHOULDER_Y - 0.005), (0.02, 0.19)], TOP_SHADE)
    sleeve_end = SLEEVE_END[s.sleeve]
    top, bottom = (-0.024, 0.024), (view.swing - 0.02, view.swing + 0.022)
    c.poly(_limb(top, bottom, SHOULDER_Y + 0.01, HAND_Y, SHOULDER_Y + 0.005, sleeve_end), TOP)
    if sleeve_end < HAND_Y:
        c.poly(_limb(top, bottom, SHOULDER_Y + 0.01, HAND_Y, sleeve_end, HAND_Y), SKIN)
    c.ellipse(view.swing, HAND_Y + 0.015, 0.021, 0.024, SKIN)
    if s.bag == "handbag":
        c.poly([(-0.006, SHOULDER_Y), (0.006, SHOULDER_Y), (0.02, 0.405), (0.008, 0.405)], BAG)
        c.box(-0.03, 0.4, 0.06, 0.52, BAG, round_=0.012)
    c.ellipse(0.005, 0.068, 0.043, 0.062, SKIN)
    if s.hair_length == "long":
        c.poly([(-0.05, 0.05), (0.0, 0.05), (-0.012, 0.27), (-0.062, 0.27)], HAIR)
    c.ellipse(-0.008, 0.055, 0.046, 0.053, HAIR)
    c.ellipse(0.02, 0.082, 0.028, 0.046, SKIN)


def draw_labels(person: Person, view: View, size: tuple[int, int]) -> np.ndarray:
    """Label map uint8 [H, W] of `person` in `view` (BACKGROUND, SKIN, ... as above)."""
    return np.asarray(_draw(person, view, size))


def _draw(person: Person, view: View, size: tuple[int, int]) -> Image.Image:
    """The label map as a palette image, so colouring it is one palette lookup."""
    c = _Canvas(person, view, size)
    if view.facing == "side":
        ankles = _legs_side(c, person, view)
        shoe_rx, shoe_dx = 0.045, 0.018
    else:
        ankles = _legs_front(c, person, view)
        shoe_rx, shoe_dx = 0.036, 0.0
    for x, y in ankles:
        c.ellipse(x + shoe_dx, y + 0.022, shoe_rx, 0.027, SHOES)
    if view.facing == "side":
        _body_side(c, person, view)
    else:
        _torso_front(c, person, view)
        _head_front(c, person, view)
    return c.image


def part_colours(person: Person, modality: str) -> np.ndarray:
    """uint8 [NUM_LABELS, 3]: the colour of each label (row BACKGROUND unused).

    Infrared rows have three equal channels.
    """
    s = person.shape
    names = {HAIR: HAIR_COLOURS[person.hair_colour], TOP: COLOURS[person.top_colour],
             BOTTOM: COLOURS[person.bottom_colour], SHOES: COLOURS[person.shoe_colour],
             BAG: COLOURS[person.bag_colour or "black"]}
    lut = np.zeros((NUM_LABELS, 3), np.float32)
    if modality == "rgb":
        lut[SKIN] = SKIN_RGB
        for label, rgb in names.items():
            lut[label] = rgb
        lut[TOP_SHADE] = lut[TOP] * 0.72
    else:
        base = {SKIN: IR_SKIN, HAIR: IR_HAIR, TOP: IR_TOP[s.top_type],
                BOTTOM: IR_BOTTOM[s.bottom_type], SHOES: IR_SHOES, BAG: IR_BAG}
        for label, value in base.items():
            if label in names:
                value += IR_LIGHTNESS_STEP * reflectance_level(names[label])
            lut[label] = 255.0 * value
        lut[TOP_SHADE] = lut[TOP] * 0.88
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def _background(scene: Scene, view: View, size: tuple[int, int], modality: str) -> Image.Image:
    """The scene behind the person: an RGB image, or an L image for infrared."""
    h, w = size
    canvas = Image.new("RGB", (w, h), scene.wall)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, scene.horizon * h, w, h], fill=scene.floor)
    for x0, y0, x1, y1, rgb in scene.props:
        draw.rectangle([(x0 + view.shift) * w, y0 * h, (x1 + view.shift) * w, y1 * h], fill=rgb)
    if modality == "ir":
        # Walls and props are cold; only their lightness leaks through, compressed.
        return canvas.convert("L").point(_gain_lut(0.2, offset=255.0 * scene.ir_level))
    return canvas


@functools.lru_cache(maxsize=8)
def _noise_bank(h: int, w: int) -> np.ndarray:
    """float32 [2H, 2W, 3] unit Gaussian field; each shot reads a window at its own offset.

    Drawing fresh Gaussian noise per image costs more than drawing the person; a fixed field
    read at random offsets gives per-image noise at the cost of a slice.
    """
    return np.random.default_rng(0x5EED).standard_normal((2 * h, 2 * w, 3), dtype=np.float32)


def _gain_lut(gain: float, offset: float = 0.0) -> list[int]:
    """PIL point table of v -> clip(offset + gain * v)."""
    return np.clip(np.rint(offset + gain * np.arange(256.0)), 0, 255).astype(np.uint8).tolist()


def render(person: Person, scene: Scene, view: View, modality: str,
           size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] image of `person` in `scene`/`view`; infrared has 3 equal channels."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    h, w = size
    rgb = modality == "rgb"
    mode = "RGB" if rgb else "L"
    canvas = _draw(person, view, size)
    mask = Image.fromarray((np.asarray(canvas) > 0).view(np.uint8) * np.uint8(255))
    canvas.putpalette(part_colours(person, modality).tobytes())
    figure = canvas.convert(mode)
    # Cylindrical shading across the body so parts are not flat cut-outs.
    half = 0.14 * view.scale * h * person.shape.width
    x = (np.arange(w, dtype=np.float32) - view.cx * w) / half
    shade = np.rint(255.0 * (1.0 - 0.22 * np.minimum(x * x, 1.0))).astype(np.uint8)
    shade_img = Image.fromarray(shade[None, :]).resize((w, h), Image.Resampling.NEAREST)
    figure = ImageChops.multiply(figure, shade_img.convert(mode))
    image = Image.composite(figure, _background(scene, view, size, modality), mask)
    if rgb:
        image = image.point([v for t in view.tint for v in _gain_lut(view.light * t)])
    else:
        image = image.point(_gain_lut(0.85 + 0.15 * view.light))
        # Thermal optics are softer than visible ones.
        image = image.filter(ImageFilter.BoxBlur(max(1, round(h / 288))))
    oy, ox = view.noise_seed % h, (view.noise_seed // h) % w
    noise = _noise_bank(h, w)[oy:oy + h, ox:ox + w, 0 if not rgb else slice(None)]
    out = np.clip(np.asarray(image) + (view.noise * noise + 0.5), 0, 255).astype(np.uint8)
    return out if rgb else np.repeat(out[..., None], 3, axis=-1)
