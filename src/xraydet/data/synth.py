"""Procedural X-ray-like baggage scans with pixel-exact YOLO labels.

Each bag is rendered as a dual-energy *transmission* image. Every object adds its attenuation
``mu * thickness`` at a low and a high photon energy to two attenuation maps; the detected intensity is
Beer-Lambert's ``I = I0 * exp(-sum mu_i t_i)``, so overlapping objects multiply their transmissions exactly as
X-rays compose. The ratio of low- to high-energy attenuation (a proxy for the effective atomic number) picks
the scanners' pseudo-colour: organic orange, mixed/inorganic green, metal blue; the high-energy transmission
sets the brightness (thick metal turns dark).

Threats (knife, scissors, gun) and a labelled non-threat (bottle) are polygons placed at any rotation, scale
and mirror, partly occluded by clutter. Their boxes come from the rendered mask of each object (after
rotation, clipped to the image), so the labels are exact to the pixel.

Generation is seeded: every image draws from its own generator keyed by ``(seed, split, index)``, so the same
config always gives identical files, and adding images does not change the earlier ones.

Example:
    >>> from pathlib import Path
    >>> generate(SynthConfig(n_train=8, n_val=4, imgsz=160), Path("/tmp/synth"))  # doctest: +SKIP
    PosixPath('/tmp/synth/data.yaml')
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, model_validator

from xraydet.data.dataset import write_data_yaml
from xraydet.data.formats.yolo import format_lines
from xraydet.io import atomic_directory
from xraydet.structures import Detections

log = logging.getLogger(__name__)

NAMES: tuple[str, ...] = ("knife", "scissors", "gun", "bottle")
THREATS: tuple[str, ...] = ("knife", "scissors", "gun")
_CLASS = {name: i for i, name in enumerate(NAMES)}

# Attenuation per unit thickness at (low, high) energy. The low/high ratio rises with
# the effective atomic number: ~1.25 organic, ~1.8 light inorganic (aluminium, glass), ~2.6 steel.
MATERIALS: dict[str, tuple[float, float]] = {
    "organic": (0.50, 0.40),
    "mixed": (0.90, 0.50),
    "metal": (2.60, 1.00),
}
# Pseudo-colour anchors along the low/high ratio: orange -> green -> blue.
_RATIO_ORGANIC, _RATIO_METAL = 1.25, 2.6
_PALETTE = np.array([[235.0, 145.0, 45.0], [80.0, 175.0, 70.0], [45.0, 85.0, 205.0]])
_BACKGROUND = np.array([250.0, 250.0, 246.0])


class SynthConfig(BaseModel):
    """Settings of a synthetic data set (all validated; unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")

    n_train: int = Field(default=200, ge=0, description="images in the train split")
    n_val: int = Field(default=50, ge=0, description="images in the val split")
    imgsz: int = Field(default=320, ge=64, le=4096, description="side of the square images in pixels")
    seed: int = Field(default=0, ge=0)
    threat_free_fraction: float = Field(
        default=0.2, ge=0.0, le=1.0, description="share of bags without any threat"
    )
    max_threats: int = Field(default=2, ge=1, description="threats per threat bag: 1..max_threats")
    bottle_probability: float = Field(
        default=0.4, ge=0.0, le=1.0, description="chance that a bag holds a bottle"
    )
    clutter: float = Field(
        default=1.0, ge=0.0, le=3.0, description="amount of clutter; 0 draws no bag and no clutter"
    )
    noise: float = Field(
        default=0.012, ge=0.0, le=0.2, description="relative detector noise on the transmission"
    )
    min_box_px: int = Field(
        default=4, ge=1, description="objects whose visible box is smaller are not labelled"
    )
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: int = Field(default=92, ge=50, le=100)

    @model_validator(mode="after")
    def _some_images(self) -> SynthConfig:
        if self.n_train + self.n_val == 0:
            raise ValueError("n_train + n_val must be at least 1")
        return self


@dataclass
class Part:
    """One piece of an object, in object-local coordinates (x along the object's length, object ~1 long).

    ``outline`` is a closed polygon, or a polyline when ``line_width`` > 0 (in local units). ``holes`` are
    cut out of the outline. ``profile="round"`` thins the part toward its edges across ``round_axis`` as a
    cylinder does (bottles, shoes); ``texture`` modulates thickness with low-frequency noise (clothes).
    """

    outline: np.ndarray
    material: str
    thickness: float
    holes: list[np.ndarray] = field(default_factory=list)
    line_width: float = 0.0
    profile: Literal["flat", "round"] = "flat"
    round_axis: tuple[float, float] = (0.0, 0.1)  # (centre y, half width) in local units
    texture: float = 0.0


@dataclass
class Placed:
    """An object with its pose: local -> image is ``R(angle) @ (scale * [x, y*mirror]) + centre``."""

    parts: list[Part]
    centre: tuple[float, float]
    scale: float
    angle: float
    mirror: bool = False
    class_name: str | None = None

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2) * self.scale
        if self.mirror:
            pts = pts * np.array([1.0, -1.0])
        c, s = np.cos(self.angle), np.sin(self.angle)
        rot = np.array([[c, -s], [s, c]])
        return pts @ rot.T + np.asarray(self.centre)

    def to_local(self, pts: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        rot = np.array([[c, -s], [s, c]])
        local = (np.asarray(pts, dtype=np.float64) - np.asarray(self.centre)) @ rot / self.scale
        if self.mirror:
            local = local * np.array([1.0, -1.0])
        return local


# --------------------------------------------------------------------------------------------- shapes
def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _rect(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def _blob(rng: np.random.Generator, n: int = 18, roughness: float = 0.3) -> np.ndarray:
    """An irregular closed outline of radius ~0.5 (folded clothes, bags of stuff)."""
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = 0.5 * (1 + roughness * rng.uniform(-1, 1, n))
    return np.stack([r * np.cos(t), 0.7 * r * np.sin(t)], axis=1)


def knife(rng: np.random.Generator) -> list[Part]:
    """A blade tapering to a tip with a handle of plastic (organic) or metal, ~1 long."""
    w = rng.uniform(0.06, 0.11)
    blade_len = rng.uniform(0.5, 0.62)
    x0, tip = -0.5 + (1 - blade_len), 0.5
    belly = rng.uniform(0.0, 0.5)
    xs = np.linspace(x0, tip, 8)
    frac = (xs - x0) / (tip - x0)
    edge = w * (1 - frac**2.5) + belly * w * np.sin(np.pi * frac) * 0.3
    spine = -w * 0.6 * (1 - frac ** rng.uniform(1.5, 4))
    blade = np.concatenate([np.stack([xs, spine], 1), np.stack([xs[::-1], edge[::-1]], 1)])
    handle_material = "organic" if rng.random() < 0.6 else "metal"
    hw = w * rng.uniform(0.7, 1.0)
    handle = _rect(-0.5, -hw * 0.8, x0 + 0.01, hw * 0.8)
    parts = [
        Part(blade, "metal", rng.uniform(0.9, 1.5)),
        Part(handle, handle_material, 1.8 if handle_material == "organic" else 0.8),
    ]
    if handle_material == "organic":  # a metal tang or rivets inside the handle
        parts.append(Part(_rect(-0.45, -hw * 0.2, x0, hw * 0.2), "metal", 0.5))
    return parts


def scissors(rng: np.random.Generator) -> list[Part]:
    """Two blades crossing at a pivot, opened by a random angle, with two ring handles."""
    opening = rng.uniform(0.02, 0.35)
    parts: list[Part] = []
    for sign in (-1.0, 1.0):
        a = sign * opening / 2
        c, s = np.cos(a), np.sin(a)
        rot = np.array([[c, -s], [s, c]])
        blade = np.array([[-0.05, -0.035], [0.5, -0.008], [0.5, 0.004], [-0.05, 0.035]]) @ rot.T
        ring_c = np.array([-0.3, sign * 0.11]) @ rot.T
        ring = _ellipse(ring_c[0], ring_c[1], 0.13, 0.09)
        hole = _ellipse(ring_c[0], ring_c[1], 0.085, 0.05)
        shank = np.array(
            [[-0.05, -0.03], [-0.05, 0.03], [-0.2, sign * 0.09 + 0.03], [-0.2, sign * 0.09 - 0.03]]
        )
        ring_material = "organic" if rng.random() < 0.5 else "metal"
        parts += [
            Part(blade, "metal", 1.0),
            Part(shank @ rot.T, "metal", 0.9),
            Part(ring, ring_material, 2.0 if ring_material == "organic" else 0.7, holes=[hole]),
        ]
    parts.append(Part(_ellipse(0.0, 0.0, 0.03, 0.03, 12), "metal", 1.5))
    return parts


def gun(rng: np.random.Generator) -> list[Part]:
    """A pistol outline: slide/barrel, a raked grip with a magazine, and a trigger guard."""
    rake = rng.uniform(0.15, 0.35)
    grip_len = rng.uniform(0.45, 0.6)
    slide = _rect(-0.5, -0.28, 0.5, -0.08)
    top = np.array([-0.42, -0.08])
    down = np.array([-np.sin(rake), np.cos(rake)]) * grip_len
    back = np.array([-0.12, 0.0])
    grip = np.array([top, top + np.array([0.2, 0.0]), top + np.array([0.2, 0.0]) + down, top + down + back])
    off = np.array([[0.06, 0.05], [0.14, 0.05], [0.14, 0.0], [0.06, 0.0]])
    mag = top + off + np.array([0.0, 0.0, 0.9, 0.9])[:, None] * down
    guard_c = (-0.1, 0.0)
    guard = _ellipse(guard_c[0], guard_c[1], 0.14, 0.1)
    guard_hole = _ellipse(guard_c[0], guard_c[1], 0.105, 0.07)
    return [
        Part(slide, "metal", 1.6),
        Part(_rect(0.1, -0.16, 0.5, -0.11), "metal", 1.0),  # barrel inside the slide
        Part(grip, "metal" if rng.random() < 0.5 else "mixed", 1.6),
        Part(mag, "metal", 1.2),
        Part(guard, "metal", 0.8, holes=[guard_hole]),
    ]


def bottle(rng: np.random.Generator) -> list[Part]:
    """A bottle of liquid (organic, or glass = mixed), thicker along its axis, with a cap."""
    r = rng.uniform(0.13, 0.2)
    neck = r * rng.uniform(0.3, 0.45)
    body = np.array(
        [
            [-0.5, -r],
            [0.18, -r],
            [0.32, -neck],
            [0.44, -neck],
            [0.44, neck],
            [0.32, neck],
            [0.18, r],
            [-0.5, r],
        ]
    )
    material = "organic" if rng.random() < 0.75 else "mixed"
    return [
        Part(body, material, 3.0 if material == "organic" else 1.4, profile="round", round_axis=(0.0, r)),
        Part(_rect(0.44, -neck * 1.1, 0.5, neck * 1.1), "organic" if rng.random() < 0.7 else "metal", 1.0),
    ]


THREAT_SHAPES: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "knife": knife,
    "scissors": scissors,
    "gun": gun,
}
# Object length as a fraction of the image side.
_SIZE = {"knife": (0.18, 0.36), "scissors": (0.16, 0.3), "gun": (0.2, 0.34), "bottle": (0.22, 0.4)}


def _clutter_item(rng: np.random.Generator) -> tuple[list[Part], tuple[float, float]]:
    """Unlabelled contents: clothes, shoes, electronics, cables, coins and keys (parts, size range)."""
    kind = rng.choice(["clothes", "clothes", "shoe", "electronics", "cable", "coins", "book"])
    if kind == "clothes":
        return [Part(_blob(rng), "organic", rng.uniform(0.25, 0.8), texture=0.7)], (0.3, 0.7)
    if kind == "shoe":
        sole = _ellipse(0, 0, 0.5, 0.18)
        return [Part(sole, "organic", 2.0, profile="round", round_axis=(0.0, 0.18), texture=0.3)], (0.2, 0.35)
    if kind == "electronics":
        board = _rect(-0.5, -0.3, 0.5, 0.3)
        parts = [Part(board, "mixed", rng.uniform(0.5, 1.0))]
        for _ in range(rng.integers(1, 4)):
            x, y = rng.uniform(-0.4, 0.25), rng.uniform(-0.25, 0.1)
            parts.append(
                Part(_rect(x, y, x + rng.uniform(0.05, 0.2), y + rng.uniform(0.03, 0.12)), "metal", 0.5)
            )
        if rng.random() < 0.6:  # a battery
            parts.append(Part(_rect(0.1, -0.2, 0.45, 0.2), "mixed", 1.5))
        return parts, (0.15, 0.35)
    if kind == "cable":
        pts = np.cumsum(rng.normal(0, 0.25, (rng.integers(4, 9), 2)), axis=0)
        pts = (pts - pts.mean(0)) / max(np.abs(pts).max(), 1e-6) * 0.5
        material = "metal" if rng.random() < 0.3 else "organic"
        return [Part(pts, material, 0.6 if material == "metal" else 1.5, line_width=0.02)], (0.3, 0.6)
    if kind == "coins":
        parts = []
        for _ in range(rng.integers(2, 6)):
            x, y = rng.uniform(-0.4, 0.4, 2)
            rad = rng.uniform(0.06, 0.1)
            parts.append(Part(_ellipse(x, y, rad, rad, 16), "metal", 0.4))
        return parts, (0.08, 0.16)
    # book / folder: a thick organic slab
    return [Part(_rect(-0.5, -0.35, 0.5, 0.35), "organic", rng.uniform(1.5, 2.5), texture=0.15)], (0.2, 0.35)


def _bag_frame(rng: np.random.Generator, size: int) -> tuple[list[Placed], tuple[float, float, float, float]]:
    """The suitcase: fabric shell, trolley rods along one side, a zipper line and wheels."""
    m = size * rng.uniform(0.03, 0.1)
    x1, y1 = m + rng.uniform(0, 0.05) * size, m + rng.uniform(0, 0.05) * size
    x2, y2 = size - m - rng.uniform(0, 0.05) * size, size - m - rng.uniform(0, 0.05) * size
    w, h = x2 - x1, y2 - y1
    shell = Part(_rect(-0.5, -0.5 * h / w, 0.5, 0.5 * h / w), "organic", 0.35, texture=0.3)
    objs = [Placed([shell], ((x1 + x2) / 2, (y1 + y2) / 2), w, 0.0)]
    rod_y = 0.5 * h / w - 0.04
    rods = [Part(_rect(-0.48, s * rod_y - 0.012, 0.48, s * rod_y + 0.012), "metal", 1.4) for s in (-1, 1)]
    zipper = Part(
        np.array(
            [
                [-0.49, -0.5 * h / w + 0.01],
                [0.49, -0.5 * h / w + 0.01],
                [0.49, 0.5 * h / w - 0.01],
                [-0.49, 0.5 * h / w - 0.01],
                [-0.49, -0.5 * h / w + 0.01],
            ]
        ),
        "metal",
        0.25,
        line_width=0.006,
    )
    if rng.random() < 0.8:
        objs.append(Placed(rods, ((x1 + x2) / 2, (y1 + y2) / 2), w, 0.0))
    objs.append(Placed([zipper], ((x1 + x2) / 2, (y1 + y2) / 2), w, 0.0))
    return objs, (x1, y1, x2, y2)


# ------------------------------------------------------------------------------------------- rendering
@dataclass
class _Canvas:
    size: int
    att_low: np.ndarray = field(init=False)
    att_high: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.att_low = np.zeros((self.size, self.size))
        self.att_high = np.zeros((self.size, self.size))


def _noise_field(rng: np.random.Generator, h: int, w: int, cell: int = 10) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    coarse = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.Resampling.BILINEAR))


def _draw_part(
    canvas: _Canvas, obj: Placed, part: Part, rng: np.random.Generator
) -> tuple[int, int, int, int] | None:
    """Add one part's attenuation; return its mask's pixel box ``(x1, y1, x2, y2)`` (x2/y2 exclusive)."""
    pts = obj.to_image(part.outline)
    pad = part.line_width * obj.scale + 2
    x0 = max(int(np.floor(pts[:, 0].min() - pad)), 0)
    y0 = max(int(np.floor(pts[:, 1].min() - pad)), 0)
    x1 = min(int(np.ceil(pts[:, 0].max() + pad)) + 1, canvas.size)
    y1 = min(int(np.ceil(pts[:, 1].max() + pad)) + 1, canvas.size)
    if x1 <= x0 or y1 <= y0:
        return None
    img = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(img)
    local = [tuple(p) for p in (pts - [x0, y0])]
    if part.line_width > 0:
        draw.line(local, fill=1, width=max(1, round(part.line_width * obj.scale)), joint="curve")
    else:
        draw.polygon(local, fill=1)
        for hole in part.holes:
            draw.polygon([tuple(p) for p in (obj.to_image(hole) - [x0, y0])], fill=0)
    mask = np.asarray(img, dtype=bool)
    if not mask.any():
        return None
    thick = np.full(mask.shape, part.thickness)
    if part.profile == "round":
        yy, xx = np.mgrid[y0:y1, x0:x1]
        loc = obj.to_local(np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1))
        yc, hw = part.round_axis
        across = ((loc[:, 1] - yc) / hw).reshape(mask.shape)
        thick = thick * np.sqrt(np.clip(1 - across**2, 0.08, 1.0))
    if part.texture > 0:
        thick = thick * (1 - part.texture + part.texture * 2 * _noise_field(rng, *mask.shape))
    mu_low, mu_high = MATERIALS[part.material]
    amount = np.where(mask, thick, 0.0)
    canvas.att_low[y0:y1, x0:x1] += mu_low * amount
    canvas.att_high[y0:y1, x0:x1] += mu_high * amount
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1


def _draw_object(canvas: _Canvas, obj: Placed, rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """Draw all parts; the object's box is the union of its parts' mask boxes (= the box of its mask)."""
    boxes = [b for b in (_draw_part(canvas, obj, p, rng) for p in obj.parts) if b is not None]
    if not boxes:
        return None
    arr = np.array(boxes)
    return int(arr[:, 0].min()), int(arr[:, 1].min()), int(arr[:, 2].max()), int(arr[:, 3].max())


def pseudo_colour(att_low: np.ndarray, att_high: np.ndarray) -> np.ndarray:
    """Map dual-energy attenuation (``-log(I/I0)`` at low and high energy) to the scanners' RGB palette.

    The low/high ratio picks the hue (organic orange, mixed green, metal blue); the high-energy attenuation
    sets how strongly the hue shows and how dark the pixel gets.
    """
    ratio = att_low / np.maximum(att_high, 1e-6)
    z = np.clip((ratio - _RATIO_ORGANIC) / (_RATIO_METAL - _RATIO_ORGANIC), 0.0, 1.0)[..., None]
    hue = np.where(
        z < 0.5,
        _PALETTE[0] + (_PALETTE[1] - _PALETTE[0]) * (z * 2),
        _PALETTE[1] + (_PALETTE[2] - _PALETTE[1]) * (z * 2 - 1),
    )
    strength = (1 - np.exp(-2.5 * np.maximum(att_high, 0)))[..., None]
    light = np.exp(-0.6 * np.maximum(att_high, 0) ** 1.3)[..., None]
    rgb = (_BACKGROUND * (1 - strength) + hue * strength) * np.clip(light, 0.04, 1.0)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _pose(
    rng: np.random.Generator,
    cls: str,
    size: int,
    region: tuple[float, float, float, float],
    near: tuple[float, float] | None = None,
) -> tuple[tuple[float, float], float, float, bool]:
    lo, hi = _SIZE[cls]
    scale = rng.uniform(lo, hi) * size
    x1, y1, x2, y2 = region
    if near is None:
        centre = (
            rng.uniform(x1 + 0.15 * scale, x2 - 0.15 * scale),
            rng.uniform(y1 + 0.15 * scale, y2 - 0.15 * scale),
        )
    else:
        centre = (near[0] + rng.normal(0, 0.1 * size), near[1] + rng.normal(0, 0.1 * size))
    return centre, scale, rng.uniform(0, 2 * np.pi), bool(rng.random() < 0.5)


def render_bag(
    rng: np.random.Generator, cfg: SynthConfig, with_threats: bool = True
) -> tuple[np.ndarray, Detections]:
    """Render one bag: an ``(imgsz, imgsz, 3)`` uint8 RGB scan and its labelled objects (pixel ``xyxy``).

    Example:
        >>> img, dets = render_bag(np.random.default_rng(0), SynthConfig(imgsz=160))
        >>> img.shape, dets.xyxy.shape[1]
        ((160, 160, 3), 4)
    """
    size = cfg.imgsz
    canvas = _Canvas(size)
    region: tuple[float, float, float, float] = (0.1 * size, 0.1 * size, 0.9 * size, 0.9 * size)
    scene: list[Placed] = []
    if cfg.clutter > 0:
        frame, region = _bag_frame(rng, size)
        scene += frame
    labelled: list[Placed] = []
    if with_threats:
        for _ in range(int(rng.integers(1, cfg.max_threats + 1))):
            cls = str(rng.choice(THREATS))
            centre, scale, angle, mirror = _pose(rng, cls, size, region)
            labelled.append(Placed(THREAT_SHAPES[cls](rng), centre, scale, angle, mirror, cls))
    if rng.random() < cfg.bottle_probability:
        centre, scale, angle, mirror = _pose(rng, "bottle", size, region)
        labelled.append(Placed(bottle(rng), centre, scale, angle, mirror, "bottle"))
    n_clutter = round(rng.integers(4, 11) * cfg.clutter)
    for i in range(n_clutter):
        parts, (lo, hi) = _clutter_item(rng)
        # Some clutter lands on the labelled objects, so they are partly occluded as in real bags.
        near = labelled[i % len(labelled)].centre if labelled and rng.random() < 0.35 else None
        x1, y1, x2, y2 = region
        scale = rng.uniform(lo, hi) * size
        inset = min(0.25 * scale, (x2 - x1) / 2 - 1, (y2 - y1) / 2 - 1)
        centre = (
            near
            if near is not None
            else (rng.uniform(x1 + inset, x2 - inset), rng.uniform(y1 + inset, y2 - inset))
        )
        if near is not None:
            centre = (centre[0] + rng.normal(0, 0.08 * size), centre[1] + rng.normal(0, 0.08 * size))
        scene.append(Placed(parts, centre, scale, rng.uniform(0, 2 * np.pi), bool(rng.random() < 0.5)))
    for obj in scene:
        _draw_object(canvas, obj, rng)
    boxes, classes = [], []
    for obj in labelled:
        box = _draw_object(canvas, obj, rng)
        if box is not None and min(box[2] - box[0], box[3] - box[1]) >= cfg.min_box_px:
            boxes.append(box)
            classes.append(_CLASS[str(obj.class_name)])
    att_low, att_high = canvas.att_low, canvas.att_high
    if cfg.noise > 0:
        i_low = np.exp(-att_low) * (1 + cfg.noise * rng.standard_normal(att_low.shape))
        i_high = np.exp(-att_high) * (1 + cfg.noise * rng.standard_normal(att_high.shape))
        att_low = -np.log(np.clip(i_low, 1e-4, 1.0))
        att_high = -np.log(np.clip(i_high, 1e-4, 1.0))
    image = pseudo_colour(att_low, att_high)
    dets = Detections(np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(classes, dtype=np.int64))
    return image, dets


def _encode(image: np.ndarray, cfg: SynthConfig) -> bytes:
    buf = io.BytesIO()
    if cfg.image_format == "png":
        Image.fromarray(image).save(buf, format="PNG", optimize=False)
    else:
        Image.fromarray(image).save(buf, format="JPEG", quality=cfg.jpeg_quality, subsampling=0)
    return buf.getvalue()


def _threat_free_indices(seed: int, split_index: int, n: int, fraction: float) -> set[int]:
    rng = np.random.default_rng([seed, split_index, 1_000_003])
    return {int(i) for i in rng.permutation(n)[: round(n * fraction)]}


def generate(
    cfg: SynthConfig,
    out: Path,
    *,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write a synthetic YOLO data set to ``out`` (atomically) and return ``out/data.yaml``.

    Layout: ``images/{train,val}/*.jpg``, ``labels/{train,val}/*.txt`` (threat-free bags get an empty label
    file), and ``data.yaml`` with ``names`` and ``threats``. ``progress`` is called with 1 after each image.
    """
    out = Path(out)
    splits = [("train", cfg.n_train), ("val", cfg.n_val)]
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for split_index, (split, n) in enumerate(splits):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            free = _threat_free_indices(cfg.seed, split_index, n, cfg.threat_free_fraction)
            for i in range(n):
                rng = np.random.default_rng([cfg.seed, split_index, i])
                image, dets = render_bag(rng, cfg, with_threats=i not in free)
                stem = f"synth_{split}_{i:05d}"
                (tmp / "images" / split / f"{stem}.{cfg.image_format}").write_bytes(_encode(image, cfg))
                (tmp / "labels" / split / f"{stem}.txt").write_text(
                    format_lines(dets, cfg.imgsz, cfg.imgsz), encoding="utf-8"
                )
                if progress is not None:
                    progress(1)
        write_data_yaml(
            tmp, list(NAMES), {split: f"images/{split}" for split, n in splits if n > 0}, list(THREATS)
        )
    log.info("wrote %d train + %d val synthetic scans to %s", cfg.n_train, cfg.n_val, out)
    return out / "data.yaml"
