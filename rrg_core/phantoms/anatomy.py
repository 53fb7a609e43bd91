"""Normal chest anatomy for the phantoms, frontal (PA) and lateral, as a density map (bright = dense).

The views themselves are drawn by :mod:`.frontal` and :mod:`.lateral` (both import this module,
so :func:`.generate.render`, above them, picks one); this module holds what they share (the
body, the scene, the spine) and the exposure. Coordinates follow :mod:`.draw`.
In the frontal view ``u > 0`` is the image's right, i.e. the
patient's LEFT (radiographs are viewed as if facing the patient); in the lateral view ``u < 0`` is
anterior (the patient faces the image's left), spine on the right. Findings that change anatomy
itself (cardiomegaly, a wide mediastinum, hyperinflation, scoliosis, a tortuous aorta) are
:class:`Body` parameters here; the ones laid over it live in :mod:`.findings`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from rrg_core.phantoms.draw import F32, Grid, Patch, clip, soft, soft_

FRONTAL, LATERAL = "frontal", "lateral"
VIEWS: tuple[str, ...] = (FRONTAL, LATERAL)

# Densities (arbitrary units, the exposure maps them to grey): soft tissue is the reference.
SOFT_TISSUE = 0.52
LUNG_AIR = -0.34
BONE = 0.16


@dataclass(frozen=True)
class Body:
    """Patient, positioning and exposure of one study (shared by both views)."""

    shift: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    scale: float = 1.0
    width: float = 1.0  # chest width factor
    inspiration: float = 1.0  # lung height factor (poor inspiration < 1)
    ctr: float = 0.44  # cardiothoracic ratio (cardiomegaly: > 0.5)
    mediastinum: float = 1.0  # mediastinal width factor (enlarged: > 1.3)
    hyperinflation: float = 0.0  # 0..1: larger, darker lungs, flat domes
    scoliosis: float = 0.0  # lateral spine curve amplitude (patient units; sign = direction)
    aorta: float = 0.0  # 0..1: tortuous / unfolded aortic knob
    aorta_calcified: bool = False
    osteophytes: float = 0.0  # 0..1: degenerative spine
    gain: float = 1.0
    gamma: float = 1.0
    noise: float = 0.012
    marking_phase: tuple[float, float] = (0.0, 1.0)
    detail: int = 0  # seed of the small anatomic variations (rib spacing, heart borders)


def sample_body(rng: np.random.Generator) -> Body:
    """A random normal patient, positioning and exposure."""
    return Body(
        shift=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.025, 0.03))),
        angle=float(rng.uniform(-0.05, 0.05)),
        scale=float(rng.uniform(0.93, 1.04)),
        width=float(rng.uniform(0.92, 1.06)),
        inspiration=float(rng.uniform(0.9, 1.06)),
        ctr=float(rng.uniform(0.39, 0.47)),
        gain=float(rng.uniform(0.88, 1.12)),
        gamma=float(rng.uniform(0.85, 1.2)),
        noise=float(rng.uniform(0.006, 0.018)),
        marking_phase=(float(rng.uniform(0, 6.283)), float(rng.uniform(0, 6.283))),
        detail=int(rng.integers(2**31)),
    )


@dataclass
class Scene:
    """One rendered view: the density map, the regions findings need, and the geometry."""

    view: str
    grid: Grid
    body: Body
    density: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # float coverage [0, 1], full size
    geometry: dict[str, float] = field(default_factory=dict)
    ribs: dict[str, Any] = field(default_factory=dict)  # frontal: side -> frontal.RibCage
    cache: dict[str, np.ndarray] = field(default_factory=dict)  # regions findings derive, once

    @property
    def body_mask(self) -> np.ndarray:
        """Boolean body outline: every finding's mask lies inside it."""
        return self.masks["body"] > 0.5


def grid_for(size: int, body: Body, view: str) -> Grid:
    """The pixel -> patient map; the lateral view gets half the rotation (it is less variable)."""
    angle = body.angle if view == FRONTAL else body.angle * 0.5
    return Grid(size, angle, body.shift, body.scale)


def dome(u: np.ndarray, base: float, centre: float, half_width: float, height: float) -> np.ndarray:
    """A hemidiaphragm: v of the dome's top edge at ``u`` (a parabola, flat beyond its half-width)."""
    t = clip((u - F32(centre)) * F32(1 / half_width), -1.0, 1.0)
    return F32(base) - F32(height) * (F32(1) - t * t)


def spine_centre(v: np.ndarray, b: Body, view: str) -> np.ndarray:
    """The spine's centre line u(v): straight, or with scoliosis a long thoracic curve (apex in the
    upper chest, towards the side of ``b.scoliosis``'s sign) and a thoracolumbar counter-curve."""
    if view == LATERAL:
        return F32(0.27) + F32(0.03) * np.sin(F32(math.pi) * v)
    return F32(b.scoliosis) * np.sin(F32(math.pi / 0.62) * (v - F32(0.05)))


def spine(g: Grid, b: Body, view: str) -> np.ndarray:
    """Vertebral column: bodies (periodic in v) with disc spaces; osteophytes widen the endplates.

    In the frontal view each vertebra shows its pedicles (two ovals near its upper corners) and its
    spinous process (a midline drop), so a curve of the column reads clearly.
    """
    frontal = view == FRONTAL
    half = 0.03 if frontal else 0.045
    out = np.zeros((g.size, g.size), F32)
    centre = 0.0 if frontal else 0.28
    reach = abs(b.scoliosis) + half + 0.05
    box = g.box(centre - reach, centre + reach, -0.1, 1.1)
    if box is None:
        return out
    u, v = g.coords(box)
    x = u - spine_centre(v, b, view)
    dist = np.abs(x)
    level = v * F32(1 / 0.048)
    along = level - np.floor(level) - F32(0.5)  # -0.5 at the top of a body, 0.5 at its bottom
    frac = np.abs(along)  # 0.5 at a disc space
    disc = soft(frac - F32(0.4), 0.04)
    spur = F32(b.osteophytes * 0.014) * soft(frac - F32(0.34), 0.03)
    col = soft_(F32(half) + spur - dist, 1.5 * g.px)
    col *= F32(0.75) - F32(0.35) * disc
    if frontal:
        q = ((dist - F32(0.68 * half)) * F32(1 / (0.26 * half))) ** 2 + (
            (along + F32(0.12)) * F32(1 / 0.2)
        ) ** 2
        col += F32(0.3) * soft_(F32(1) - q, 0.4)  # pedicles
        q = (x * F32(1 / (0.18 * half))) ** 2 + ((along - F32(0.22)) * F32(1 / 0.25)) ** 2
        col += F32(0.2) * soft_(F32(1) - q, 0.5)  # spinous process
    out[box] = col * F32(0.48 if frontal else 0.8)  # seen through the mediastinum in PA
    return out


_LUT_STEPS = 4096  # exposure curve table: finer than the quantum noise by a factor of 25 or more
_NOISE_STD = 104.5  # std of the sum of two uniform int8 values


def box_sum(d: np.ndarray, k: int) -> np.ndarray:
    """Sum over a k x k window (rows i-k+1..i, edges repeated): ``k*k`` times a box blur."""
    out = d.copy()
    for axis in (0, 1):
        src = out.copy() if axis else d
        for s in range(1, k):
            if axis == 0:
                out[s:] += src[:-s]
                out[:s] += src[:1]
            else:
                out[:, s:] += src[:, :-s]
                out[:, :s] += src[:, :1]
    return out


@lru_cache(maxsize=128)
def _exposure_curve(gamma: float) -> np.ndarray:
    return (np.linspace(0, 1, _LUT_STEPS + 1, dtype=np.float64) ** gamma).astype(F32)


def expose(scene: Scene, rng: np.random.Generator, extra: np.ndarray | None = None) -> np.ndarray:
    """Density -> film grey in [0, 1]: blur (focal spot), exposure curve and quantum noise.

    The curve (gain, offset, gamma) is a table lookup; the noise is the sum of two uniform random
    bytes a pixel (near-Gaussian, a tenth the cost of ``standard_normal``).
    """
    d = scene.density if extra is None else scene.density + extra
    k = max(2, scene.grid.size // 128)
    b = scene.body
    scale = 1.25 * b.gain * _LUT_STEPS
    x = box_sum(d, k)
    x *= F32(scale / (k * k))
    x += F32(0.08 * scale + 0.5)
    clip(x, F32(0), F32(_LUT_STEPS), out=x)
    img = np.take(_exposure_curve(round(b.gamma * 200) / 200), x.astype(np.intp))  # gamma to 0.005
    n = img.size
    noise = np.frombuffer(rng.bytes(2 * n), np.int8).astype(F32)
    noise[:n] += noise[n:]
    noise = noise[:n].reshape(img.shape)
    noise *= F32(b.noise / _NOISE_STD)
    img += noise
    return clip(img, F32(0), F32(1), out=img)


def patch_mask(p: Patch, size: int, threshold: float = 0.5) -> np.ndarray:
    """A patch as a full-size boolean mask."""
    return p.full(size) > threshold
