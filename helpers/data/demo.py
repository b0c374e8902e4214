"""Synthetic cartoon faces for the built-in demo dataset (no download needed).

An `Identity` fixes one person's geometry and colouring; `render_face` draws one "photo" of that
person under random nuisances (pose, yaw, light, expression, background, blur, noise, occlusion),
so an embedding network has to learn who it is and ignore everything else. Shapes are drawn as
PIL polygons at SUPERSAMPLE x the output size and box-filtered down, which anti-aliases them.
Face coordinates are in units of the face half-width, origin at the face centre, y pointing down.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from helpers.core.errors import UserError

SUPERSAMPLE = 2  # 2x already gives smooth edges; more costs time for no visible gain at 112 px
FACE_Y = -0.03  # face centre height in output widths; leaves room below the chin for neck and shoulders
HAIR_STYLES = ("bald", "short", "long", "fringe", "side_part", "curly")
BEARDS = ("none", "moustache", "goatee", "full")

Colour = tuple  # (r, g, b) floats in 0..255
SKIN_LIGHT, SKIN_DARK = (250, 218, 190), (88, 56, 38)
HAIR_COLOURS = ((28, 24, 22), (72, 48, 30), (125, 85, 50), (214, 178, 112), (150, 66, 34), (165, 160, 155))
IRIS_COLOURS = ((70, 40, 20), (112, 72, 36), (125, 110, 55), (72, 120, 70), (70, 120, 178), (118, 128, 140))
FRAME_COLOURS = ((20, 20, 20), (95, 60, 30), (185, 185, 195), (160, 30, 40), (30, 50, 130))
EYE_WHITE, LASH, MOUTH_INSIDE = (240, 238, 232), (35, 28, 28), (70, 22, 28)


@dataclass(frozen=True)
class Identity:
    """Fixed appearance of one synthetic person; lengths are in face half-widths unless noted."""

    face_w: float  # face half-width as a fraction of the output image width
    face_h: float  # forehead-to-centre height
    jaw_h: float  # centre-to-chin height
    jaw_square: float  # superellipse exponent of the jaw: 2 round, 4 square
    chin_taper: float  # narrows the jaw towards the chin
    ear_size: float
    eye_sep: float  # half the distance between the eye centres
    eye_y: float
    eye_w: float  # eye half-width
    eye_h: float  # eye half-height relative to eye_w
    eye_tilt: float  # radians, positive lifts the outer corners
    brow_gap: float  # brow height above the eye centre
    brow_thick: float
    brow_slope: float  # positive lowers the outer end
    brow_arch: float
    nose_len: float  # eye line to nose tip
    nose_w: float
    mouth_gap: float  # nose tip to mouth line
    mouth_w: float  # mouth half-width
    lip_thick: float
    mouth_curve: float  # resting smile (>0) or frown (<0)
    skin: Colour
    iris: Colour
    lips: Colour
    hair: Colour
    frame: Colour
    hair_style: str
    hair_volume: float
    hairline: float  # forehead height left bare, relative to face_h
    glasses: bool
    beard: str


@dataclass(frozen=True)
class _Shot:
    """Nuisances of one image; all are neutral at difficulty 0."""

    yaw: float
    roll: float
    scale: float
    shift: tuple  # in output widths
    light: tuple  # gain gradient along x and y
    brightness: float
    contrast: float
    smile: float
    mouth_open: float
    brow_raise: float
    eye_open: float
    gaze: float
    blur: float
    noise: float
    shirt: Colour
    occluder: tuple | None  # (cx, cy, half_w, half_h, angle, colour) in face units


def _mix(a, b, t: float) -> Colour:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))


def _shade(c, k: float) -> Colour:
    return tuple(v * k for v in c)


def _clamp(c) -> Colour:
    return tuple(min(255.0, max(0.0, float(v))) for v in c)


def _palette(rng: np.random.Generator, colours) -> Colour:
    # Blend two palette entries and vary brightness, so colours form a continuum, not classes.
    i, j = rng.integers(len(colours), size=2)
    return _clamp(_shade(_mix(colours[i], colours[j], rng.uniform(0.0, 0.4)), rng.uniform(0.85, 1.15)))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one person's fixed geometry and colouring."""
    u = rng.uniform
    # Skin runs from light to dark, with a small warm/cool shift that keeps the hue plausible.
    skin = _mix(SKIN_LIGHT, SKIN_DARK, u() ** 1.2)
    warmth = float(np.clip(rng.normal(0.0, 1.0), -2.0, 2.0))
    skin = _clamp(v * (1 + warmth * k) for v, k in zip(skin, (0.03, -0.01, -0.05)))
    return Identity(
        face_w=u(0.23, 0.28), face_h=u(1.15, 1.45), jaw_h=u(1.05, 1.4), jaw_square=u(2.0, 4.0),
        chin_taper=u(0.0, 0.3), ear_size=u(0.75, 1.25),
        eye_sep=u(0.37, 0.48), eye_y=u(-0.12, 0.05), eye_w=u(0.17, 0.25), eye_h=u(0.35, 0.6),
        eye_tilt=u(-0.15, 0.2),
        brow_gap=u(0.22, 0.34), brow_thick=u(0.05, 0.12), brow_slope=u(-0.35, 0.35), brow_arch=u(0.0, 0.08),
        nose_len=u(0.42, 0.62), nose_w=u(0.15, 0.27),
        mouth_gap=u(0.22, 0.34), mouth_w=u(0.24, 0.42), lip_thick=u(0.04, 0.09), mouth_curve=u(-0.3, 0.4),
        skin=skin, iris=_palette(rng, IRIS_COLOURS), lips=_mix(skin, (175, 65, 75), u(0.3, 0.7)),
        hair=_palette(rng, HAIR_COLOURS), frame=_palette(rng, FRAME_COLOURS),
        hair_style=HAIR_STYLES[rng.choice(len(HAIR_STYLES), p=(0.1, 0.28, 0.2, 0.16, 0.16, 0.1))],
        hair_volume=u(0.05, 0.3), hairline=u(0.45, 0.8), glasses=bool(u() < 0.2),
        beard=BEARDS[rng.choice(len(BEARDS), p=(0.7, 0.1, 0.08, 0.12))],
    )


def _sample_shot(rng: np.random.Generator, d: float) -> _Shot:
    # Draw a fixed number of values whatever `d` is, so the same rng state gives the same
    # "direction" of every nuisance at every difficulty; `d` only scales them.
    n, u = rng.standard_normal(14), rng.random(8)
    shirt, occluder_colour = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    occluder = (u[1] * 1.6 - 0.8, u[2] * 1.8 - 0.6, 0.2 + 0.6 * u[3], 0.1 + 0.3 * u[4], u[5] * math.pi,
                _clamp(occluder_colour))
    return _Shot(
        yaw=float(np.clip(0.15 * d * n[0], -0.45, 0.45)), roll=float(np.clip(0.08 * d * n[1], -0.4, 0.4)),
        scale=float(np.clip(math.exp(0.06 * d * n[2]), 0.8, 1.25)),
        shift=tuple(np.clip(0.03 * d * n[3:5], -0.1, 0.1).tolist()),
        light=(0.2 * d * n[5], 0.2 * d * n[6]), brightness=float(15.0 * d * n[7]),
        contrast=float(np.clip(1.0 + 0.12 * d * n[8], 0.6, 1.4)),
        smile=float(0.5 * d * n[9]), mouth_open=float(np.clip(0.06 * d * n[10], 0.0, 0.16)),
        brow_raise=float(0.04 * d * n[11]), eye_open=float(np.clip(1.0 - 0.25 * d * abs(n[12]), 0.15, 1.0)),
        gaze=float(np.clip(0.35 * d * n[13], -0.6, 0.6)),
        blur=float(0.9 * d * u[6] ** 2), noise=float(5.0 * d * u[7]),
        shirt=_mix((110, 110, 120), shirt, min(d, 1.0)), occluder=occluder if u[0] < min(0.3 * d, 0.7) else None,
    )


class _Pen:
    """Collects shapes in face units, then draws them all at once.

    Transforming every shape on its own would make numpy's per-call overhead the main cost of a
    render, so points are gathered and mapped to pixels in a single pass.
    """

    def __init__(self, yaw: float):
        self.yaw = yaw
        self.shapes = []  # (points, depths, turns with yaw, colour, line width or 0 for a polygon)

    def poly(self, pts, colour, z=0.0, flat=False):
        self._add(pts, colour, z, flat, 0.0)

    def line(self, pts, colour, width: float, z=0.0, flat=False):
        self._add(pts, colour, z, flat, width)

    def _add(self, pts, colour, z, flat, width):
        pts = np.asarray(pts, dtype=np.float64)
        # Colours arrive within 0..255 (clamped when sampled), so int() suffices.
        self.shapes.append((pts, np.zeros(len(pts)) + z, not flat, tuple(map(int, colour)), width))

    def render(self, draw: ImageDraw.ImageDraw, unit: float, roll: float, origin: tuple):
        """Draw everything: yaw on inner features, then roll, scale (`unit` px per face unit), shift."""
        points, depths, turns = list(zip(*self.shapes))[:3]
        pts, depth = np.concatenate(points), np.concatenate(depths)
        turns = np.repeat(turns, [len(p) for p in points])
        # Project inner features from a cylinder turned by `yaw`: far-side features squeeze,
        # near-side ones spread, and protruding ones (depth z) swing further.
        x = pts[:, 0]
        turned = np.sin(np.arcsin(np.clip(x, -1.0, 1.0)) + self.yaw) + depth * math.sin(self.yaw)
        pts[:, 0] = np.where(turns, turned, x)
        c, s = math.cos(roll) * unit, math.sin(roll) * unit
        xy = (pts @ np.array([[c, s], [-s, c]]) + origin).ravel().tolist()
        start = 0
        for shape, _, _, colour, width in self.shapes:
            coords, start = xy[start:start + 2 * len(shape)], start + 2 * len(shape)
            if width:
                draw.line(coords, fill=colour, width=max(1, round(width * unit)), joint="curve")
            else:
                draw.polygon(coords, fill=colour)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # cached arrays are shared between calls
    return array


@functools.lru_cache(maxsize=None)
def _ramp(start: float, stop: float, n: int, endpoint: bool = True) -> np.ndarray:
    return _frozen(np.linspace(start, stop, n, endpoint=endpoint))  # cached: linspace is slow for tiny arrays


@functools.lru_cache(maxsize=None)
def _circle(n: int) -> np.ndarray:
    t = _ramp(0.0, 2 * math.pi, n, endpoint=False)
    return _frozen(np.column_stack([np.cos(t), np.sin(t)]))


def _ellipse(cx, cy, rx, ry, n=20, bumps=0) -> np.ndarray:
    pts = _circle(n) * (rx, ry)
    if bumps:  # a wavy contour, e.g. for curls
        pts = pts * (1 + 0.06 * np.cos(bumps * _ramp(0.0, 2 * math.pi, n, endpoint=False)))[:, None]
    return pts + (cx, cy)


def _face_outline(idt: Identity) -> np.ndarray:
    c, s = _circle(48).T
    p = 2.0 / idt.jaw_square  # superellipse: smaller p squares off the jaw
    chin = s > 0
    x = np.where(chin, np.sign(c) * np.abs(c) ** p * (1 - idt.chin_taper * s**2), c)
    y = np.where(chin, idt.jaw_h * np.abs(s) ** p, idt.face_h * s)
    return np.column_stack([x, y])


def _hair_back(pen: _Pen, idt: Identity):
    v, fh = idt.hair_volume, idt.face_h
    if idt.hair_style == "bald":  # a horseshoe of hair above the ears
        for side in (-1, 1):
            pen.poly(_ellipse(side * 0.97, -0.2, 0.12, 0.35), idt.hair, flat=True)
        return
    if idt.hair_style == "curly":
        v += 0.35
    rx, top = 1.06 + 0.5 * v, -fh * (1.0 + 0.4 * v)
    if idt.hair_style == "long":
        bottom = idt.jaw_h + 0.5 + v
        pen.poly([(-rx, -0.3 * fh), (rx, -0.3 * fh), (0.95 * rx, bottom), (0, bottom + 0.15),
                  (-0.95 * rx, bottom)], idt.hair, flat=True)
    bumps = 14 if idt.hair_style == "curly" else 0
    pen.poly(_ellipse(0, (top - 0.1) / 2, rx, (-0.1 - top) / 2 + 0.3, n=56, bumps=bumps), idt.hair, flat=True)


def _hair_front(pen: _Pen, idt: Identity):
    if idt.hair_style == "bald":
        return
    fh, e = idt.face_h, 0.25  # the hair meets the face contour at y = -e * face_h
    t = _ramp(math.pi + math.asin(e), 2 * math.pi - math.asin(e), 16)
    arc = np.column_stack([1.02 * np.cos(t), 1.02 * fh * np.sin(t)])
    xe = math.sqrt(1 - e * e)
    x = _ramp(1.0, -1.0, 15)  # along the hairline, in units of xe
    top, power, tilt = -idt.hairline * fh, 0.5, 0.0
    if idt.hair_style == "fringe":  # a flat fringe down to just above the brows
        top, power = idt.eye_y - idt.brow_gap - 0.15, 0.15
    elif idt.hair_style == "side_part":  # the hair sweeps down from a parting on the left
        tilt = 0.25
    y = -e * fh + (top + e * fh) * (1 - x**2) ** power + tilt * (x - 1) * (1 - x**2)
    pen.poly(np.concatenate([arc, np.column_stack([xe * x, y])]), idt.hair, flat=True)


def _ears(pen: _Pen, idt: Identity):
    k, y = idt.ear_size, idt.eye_y + 0.15
    for side in (-1, 1):
        pen.poly(_ellipse(side * 0.98, y, 0.14 * k, 0.26 * k), _shade(idt.skin, 0.93), flat=True)
        pen.poly(_ellipse(side * 1.0, y, 0.06 * k, 0.15 * k), _shade(idt.skin, 0.75), flat=True)


def _beard(pen: _Pen, idt: Identity):
    colour, under_nose = _shade(idt.hair, 0.85), idt.eye_y + idt.nose_len + 0.08
    mouth_y = under_nose - 0.08 + idt.mouth_gap
    if idt.beard == "full":
        outline = _face_outline(idt)
        pen.poly(outline[outline[:, 1] > under_nose], colour, flat=True)
    if idt.beard == "goatee":
        h = (idt.jaw_h - mouth_y) / 2
        pen.poly(_ellipse(0, mouth_y + h, idt.mouth_w * 0.7, h), colour)
    if idt.beard != "none":  # every beard style comes with a moustache
        w = idt.mouth_w * 1.1
        pen.poly([(-w, under_nose + 0.12), (-0.8 * w, under_nose), (0.8 * w, under_nose), (w, under_nose + 0.12),
                  (0.7 * w, under_nose + 0.07), (-0.7 * w, under_nose + 0.07)], colour)


def _eye(pen: _Pen, idt: Identity, side: int, shot: _Shot):
    w, h = idt.eye_w, idt.eye_w * idt.eye_h
    a = -side * idt.eye_tilt
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    centre = np.array([side * idt.eye_sep, idt.eye_y])
    xs = w * _ramp(-1.0, 1.0, 13)
    upper, lower = -h * shot.eye_open * (1 - (xs / w) ** 2), 0.75 * h * (1 - (xs / w) ** 2)

    def place(x, y):  # eye-local coordinates -> tilted face coordinates
        return np.column_stack([x, y]) @ rot + centre

    pen.poly(place(np.concatenate([xs, xs[::-1]]), np.concatenate([upper, lower[::-1]])), EYE_WHITE)
    for radius, colour in ((0.9 * h, idt.iris), (0.4 * h, LASH)):
        # Clip the iris and pupil to the eyelids so a half-closed eye covers them.
        disc = _ellipse(shot.gaze * 0.4 * w, 0.1 * h, radius, radius, n=16)
        x = np.clip(disc[:, 0], -w, w)
        y = np.clip(disc[:, 1], np.interp(x, xs, upper), np.interp(x, xs, lower))
        pen.poly(place(x, y), colour)
    pen.line(place(xs, upper), LASH, 0.035)


def _brow(pen: _Pen, idt: Identity, side: int, raise_: float):
    t = _ramp(0.0, 1.0, 8)  # from the inner end to the outer end
    x = idt.eye_sep - 0.95 * idt.eye_w + 2.1 * idt.eye_w * t
    y = idt.eye_y - idt.brow_gap - raise_ + idt.brow_slope * (x - idt.eye_sep) - idt.brow_arch * np.sin(math.pi * t)
    half = idt.brow_thick * (0.6 - 0.35 * t)  # taper towards the outer end
    pts = np.column_stack([side * np.concatenate([x, x[::-1]]), np.concatenate([y - half, (y + half)[::-1]])])
    pen.poly(pts, _shade(idt.hair, 0.8))


def _nose(pen: _Pen, idt: Identity):
    tip, w = idt.eye_y + idt.nose_len, idt.nose_w
    pen.line([(-0.06, idt.eye_y + 0.1), (-0.08, tip - 0.15), (-0.5 * w, tip - 0.02)],
             _shade(idt.skin, 0.84), 0.035, z=np.array([0.05, 0.2, 0.25]))
    pen.poly(_ellipse(0, tip - 0.02, 0.45 * w, 0.3 * w), _shade(idt.skin, 0.95), z=0.3)
    for side in (-1, 1):
        pen.poly(_ellipse(side * 0.42 * w, tip + 0.03, 0.2 * w, 0.1 * w, n=12), _shade(idt.skin, 0.55), z=0.2)


def _mouth(pen: _Pen, idt: Identity, shot: _Shot):
    smile = idt.mouth_curve + shot.smile
    u = _ramp(-1.0, 1.0, 15)
    x, bulge = idt.mouth_w * (1 + 0.1 * smile) * u, np.sqrt(1 - u**2)
    mid = idt.eye_y + idt.nose_len + idt.mouth_gap - 0.08 * smile * u**2  # y points down: corners rise
    gap = shot.mouth_open * bulge
    top = mid - idt.lip_thick * bulge * (1 - 0.3 * np.exp(-((4 * u) ** 2)))  # dip of the cupid's bow
    bottom = mid + gap + 1.3 * idt.lip_thick * bulge

    def band(y0, y1):
        return np.column_stack([np.concatenate([x, x[::-1]]), np.concatenate([y0, y1[::-1]])])

    pen.poly(band(top, bottom), idt.lips)
    if shot.mouth_open > 0.01:
        pen.poly(band(mid, mid + gap), MOUTH_INSIDE)
        pen.poly(band(mid, mid + 0.35 * gap)[2:-2], EYE_WHITE)  # upper teeth, short of the corners
    pen.line(np.column_stack([x, mid]), _shade(idt.lips, 0.6), 0.02)


def _glasses(pen: _Pen, idt: Identity):
    rx, ry, y = 1.45 * idt.eye_w, 1.15 * idt.eye_w, idt.eye_y + 0.02
    for side in (-1, 1):
        ring = _ellipse(side * idt.eye_sep, y, rx, ry)
        pen.line(np.concatenate([ring, ring[:1]]), idt.frame, 0.04)
        pen.line([(side * (idt.eye_sep + rx), y - 0.03), (side * 0.99, y - 0.07)], idt.frame, 0.04)
    inner = idt.eye_sep - rx
    pen.line([(-inner, y - 0.02), (0, y - 0.06), (inner, y - 0.02)], idt.frame, 0.04)


def _occluder(pen: _Pen, cx, cy, half_w, half_h, angle, colour):
    c, s = math.cos(angle), math.sin(angle)
    corners = np.array([(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)])
    pen.poly(corners @ np.array([[c, s], [-s, c]]) + (cx, cy), colour, flat=True)


def _draw_person(pen: _Pen, idt: Identity, shot: _Shot):
    pen.poly(_ellipse(0, idt.jaw_h + 1.05, 3.0, 0.8, n=32), shot.shirt, flat=True)
    _hair_back(pen, idt)
    neck = [(-0.42, 0.3), (0.42, 0.3), (0.46, idt.jaw_h + 0.6), (-0.46, idt.jaw_h + 0.6)]
    pen.poly(neck, _shade(idt.skin, 0.8), flat=True)
    if idt.hair_style not in ("long", "curly"):  # otherwise the hair covers the ears
        _ears(pen, idt)
    pen.poly(_face_outline(idt), idt.skin, flat=True)
    _beard(pen, idt)
    _hair_front(pen, idt)
    for side in (-1, 1):
        _eye(pen, idt, side, shot)
        _brow(pen, idt, side, shot.brow_raise)
    _nose(pen, idt)
    _mouth(pen, idt, shot)
    if idt.glasses:
        _glasses(pen, idt)
    if shot.occluder is not None:
        _occluder(pen, *shot.occluder)


def _background(rng: np.random.Generator, n: int, d: float) -> Image.Image:
    # A 2x2 colour image upscaled bilinearly is a cheap smooth gradient. It is made at output
    # size and enlarged by pixel repetition, which the final box downsampling exactly undoes.
    corners = _mix(np.full(12, 128.0), rng.uniform(0, 255, 12), 0.7 * min(d, 1.0))
    img = Image.fromarray(np.reshape(corners, (2, 2, 3)).astype(np.uint8))
    img = img.resize((n // SUPERSAMPLE,) * 2, Image.BILINEAR).resize((n, n), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.poisson(3 * d)):
        x, y, r = rng.uniform(0, n, 2), rng.uniform(0, n, 2), rng.uniform(0.05, 0.3) * n
        box = [x.min(), y.min(), x.max() + r, y.max() + r]
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape(box, fill=tuple(map(int, _clamp(np.add(corners[:3], rng.normal(0, 40, 3))))))
    return img


@functools.lru_cache(maxsize=8)
def _light_grid(size: int) -> tuple:
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    return _frozen(ramp[None, :, None]), _frozen(ramp[:, None, None])


@functools.lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    # Fresh Gaussian noise per image costs more than the rest of the rendering, so images take
    # random crops of one fixed noise field instead.
    return _frozen(np.random.default_rng(0).standard_normal((2 * size, 2 * size, 3), dtype=np.float32))


def _photometric(img: Image.Image, rng: np.random.Generator, shot: _Shot) -> Image.Image:
    a = np.array(img, dtype=np.float32)
    size = a.shape[0]
    gx, gy = _light_grid(size)
    a *= shot.contrast * (1.0 + shot.light[0] * gx + shot.light[1] * gy)  # directional light
    y, x = rng.integers(0, size, 2)
    a += _noise_bank(size)[y:y + size, x:x + size] * shot.noise + (128.0 * (1.0 - shot.contrast) + shot.brightness)
    return Image.fromarray(np.clip(a, 0, 255, out=a).astype(np.uint8))


def render_face(identity: Identity, rng: np.random.Generator, size: int = 112, difficulty: float = 1.0) -> Image.Image:
    """Render one RGB image (size x size) of `identity`, varying the nuisances with `rng`."""
    d = max(0.0, float(difficulty))
    shot = _sample_shot(rng, d)
    out = size * SUPERSAMPLE
    canvas = _background(rng, out, d)
    pen = _Pen(shot.yaw)
    _draw_person(pen, identity, shot)
    # Roll, scale and shift go into the drawing itself, so no resampling of the image is needed.
    origin = (out * (0.5 + shot.shift[0]), out * (0.5 + FACE_Y + shot.shift[1]))
    pen.render(ImageDraw.Draw(canvas), identity.face_w * out * shot.scale, shot.roll, origin)
    img = canvas.reduce(SUPERSAMPLE)
    if shot.blur > 0.25:  # smaller radii barely show at this size; skipping them saves time
        img = img.filter(ImageFilter.GaussianBlur(shot.blur))
    return _photometric(img, rng, shot)


def make_demo_data(out, identities: int = 200, images_per_identity: int = 12, verification_identities: int = 60,
                   layout: str = "f25", seed: int = 0, size: int = 112, difficulty: float = 1.0,
                   val_pairs: int = 1000, test_pairs: int = 1000, overwrite: bool = False):
    """Write the built-in demo dataset: synthetic people in the official HW2P2 layout.

    ``identities`` people are for training (one image in ten of each goes to
    dev), ``verification_identities`` other people make the balanced val and
    test pairs. Each image has its own seed derived from (seed, person, image),
    so the same arguments write the same bytes.
    """
    from helpers.data.prepare import write_layout

    if images_per_identity < 2:
        raise UserError("--images-per-identity must be at least 2: same-person pairs need two images")
    people = [sample_identity(rng) for rng in
              (np.random.default_rng([seed, 1, i]) for i in range(identities + verification_identities))]

    def photos(index: int) -> list:
        def render(k: int):
            return lambda: render_face(people[index], np.random.default_rng([seed, 2, index, k]), size, difficulty)
        return [render(k) for k in range(images_per_identity)]

    train = {f"n{i:06d}": photos(i) for i in range(identities)}
    verification = {f"v{i:06d}": photos(identities + i) for i in range(verification_identities)}
    return write_layout(out, train, verification, layout=layout, seed=seed, size=size, dev_fraction=0.1,
                        val_pairs=val_pairs, test_pairs=test_pairs, overwrite=overwrite)
