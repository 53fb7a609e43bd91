"""Vectorised drawing primitives in patient coordinates, evaluated only inside each shape's bounding box.

A :class:`Grid` maps pixels to patient coordinates ``(u, v)``: ``u`` is horizontal, 0 on the
patient's midline; ``v`` is vertical, 0 at the top of the field and 1 at the bottom. Positioning
(shift, rotation, magnification) is folded into that map, so every structure drawn through it moves
together and nothing is resampled. Shapes have soft edges about a pixel and a half wide (analytic
anti-aliasing), which keeps blurring to one cheap pass per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

import numpy as np

Box = tuple[slice, slice]
F32 = np.float32
# The clip ufunc itself: ``np.clip`` reaches it through three Python layers (~10 us a call, and
# a study clips a few hundred small arrays).
clip = getattr(getattr(np, "_core", np), "umath", np).clip if hasattr(np, "_core") else np.clip


@dataclass(frozen=True)
class Grid:
    """Pixel -> patient coordinate map of one image (square, ``size`` pixels a side)."""

    size: int
    angle: float = 0.0  # radians, patient rotation in the image plane
    shift: tuple[float, float] = (0.0, 0.0)  # image fractions, x then y
    scale: float = 1.0  # magnification: > 1 shows the patient larger

    @property
    def px(self) -> float:
        """One pixel in patient units."""
        return 1.0 / (self.size * self.scale)

    def coords(self, box: Box | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(u, v)`` float32 arrays over ``box`` (rows, cols), the whole image by default.

        Read-only views of the whole image's coordinates, computed once per grid (a study draws
        through the same grid some forty times).
        """
        u, v = _full_coords(self)
        if box is None:
            return u, v
        return u[box], v[box]

    def box(self, u0: float, u1: float, v0: float, v1: float) -> Box | None:
        """The pixel box covering the patient box ``[u0, u1] x [v0, v1]`` (plus a margin); None if empty."""
        c, s = math.cos(self.angle) * self.scale, math.sin(self.angle) * self.scale
        xs, ys = [], []
        for u in (u0, u1):
            for v in (v0, v1):
                vv = v - 0.5
                xs.append((c * u - s * vv + 0.5 + self.shift[0]) * self.size)
                ys.append((s * u + c * vv + 0.5 + self.shift[1]) * self.size)
        r0, r1 = max(0, math.floor(min(ys)) - 2), min(self.size, math.ceil(max(ys)) + 2)
        c0, c1 = max(0, math.floor(min(xs)) - 2), min(self.size, math.ceil(max(xs)) + 2)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def full(self) -> Box:
        """The whole image as a box."""
        return slice(0, self.size), slice(0, self.size)


@lru_cache(maxsize=8)
def _full_coords(g: Grid) -> tuple[np.ndarray, np.ndarray]:
    y = (np.arange(g.size, dtype=F32)[:, None] + F32(0.5)) * F32(1 / g.size) - F32(0.5 + g.shift[1])
    x = (np.arange(g.size, dtype=F32)[None, :] + F32(0.5)) * F32(1 / g.size) - F32(0.5 + g.shift[0])
    c, s = F32(math.cos(g.angle) / g.scale), F32(math.sin(g.angle) / g.scale)
    u, v = c * x + s * y, -s * x + c * y + F32(0.5)
    u.flags.writeable = v.flags.writeable = False
    return u, v


@dataclass
class Patch:
    """Values of a shape inside its pixel box; ``values`` in [0, 1] (coverage) unless stated."""

    box: Box | None
    values: np.ndarray

    def add_to(self, image: np.ndarray, weight: float) -> None:
        """``image[box] += weight * values``."""
        if self.box is not None:
            image[self.box] += F32(weight) * self.values

    def full(self, size: int) -> np.ndarray:
        """The patch as a full-size float32 image."""
        out = np.zeros((size, size), F32)
        if self.box is not None:
            out[self.box] = self.values
        return out

    def scaled(self, factor: float) -> Patch:
        """A copy with values multiplied by ``factor``."""
        return Patch(self.box, self.values * F32(factor))


EMPTY = Patch(None, np.zeros((0, 0), F32))


def soft(signed: np.ndarray, width: float) -> np.ndarray:
    """Coverage from a signed distance (positive inside), ramping over ``width``."""
    out = signed * F32(1.0 / width)
    out += F32(0.5)
    return clip(out, F32(0), F32(1), out=out)


def soft_(signed: np.ndarray, width: float) -> np.ndarray:
    """:func:`soft` in place: ``signed`` (a float32 temporary) becomes the coverage."""
    signed *= F32(1.0 / width)
    signed += F32(0.5)
    return clip(signed, F32(0), F32(1), out=signed)


def ellipse(
    g: Grid, cu: float, cv: float, ru: float, rv: float, angle: float = 0.0, edge: float = 1.5
) -> Patch:
    """A filled ellipse centred at (cu, cv) with radii (ru, rv), rotated by ``angle`` radians.

    ``edge`` is the soft-edge width in pixels; a large value gives a hazy, blob-like edge.
    """
    reach = max(ru, rv) + edge * g.px
    box = g.box(cu - reach, cu + reach, cv - reach, cv + reach)
    if box is None:
        return EMPTY
    u, v = g.coords(box)
    du, dv = u - F32(cu), v - F32(cv)
    if angle:
        c, s = F32(math.cos(angle)), F32(math.sin(angle))
        du, dv = c * du + s * dv, -s * du + c * dv
    du *= F32(1 / ru)
    dv *= F32(1 / rv)
    du *= du
    dv *= dv
    du += dv
    r = np.sqrt(du, out=du)
    # (1 - r) * min radius approximates the distance to the border near it.
    k = min(ru, rv) / (edge * g.px)
    r *= F32(-k)
    r += F32(k + 0.5)
    return Patch(box, clip(r, F32(0), F32(1), out=r))


def segment(
    g: Grid, p0: tuple[float, float], p1: tuple[float, float], half_width: float, edge: float = 1.5
) -> Patch:
    """A thick line segment (capsule) from ``p0`` to ``p1`` (each (u, v))."""
    reach = half_width + edge * g.px
    box = g.box(
        min(p0[0], p1[0]) - reach,
        max(p0[0], p1[0]) + reach,
        min(p0[1], p1[1]) - reach,
        max(p0[1], p1[1]) + reach,
    )
    if box is None:
        return EMPTY
    u, v = g.coords(box)
    du, dv = p1[0] - p0[0], p1[1] - p0[1]
    length2 = max(du * du + dv * dv, 1e-12)
    pu, pv = u - F32(p0[0]), v - F32(p0[1])
    t = pu * F32(du / length2)
    t += pv * F32(dv / length2)
    clip(t, F32(0), F32(1), out=t)
    pu -= t * F32(du)
    pv -= t * F32(dv)
    pu *= pu
    pv *= pv
    pu += pv
    dist = np.sqrt(pu, out=pu)
    np.subtract(F32(half_width), dist, out=dist)
    return Patch(box, soft_(dist, edge * g.px))


def polyline(g: Grid, points: list[tuple[float, float]], half_width: float, edge: float = 1.5) -> Patch:
    """Segments through ``points``, merged with max (a tube, a lead, a wire)."""
    reach = half_width + edge * g.px
    us, vs = [p[0] for p in points], [p[1] for p in points]
    box = g.box(min(us) - reach, max(us) + reach, min(vs) - reach, max(vs) + reach)
    if box is None:
        return EMPTY
    out = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), F32)
    for p0, p1 in pairwise(points):
        piece = segment(g, p0, p1, half_width, edge)
        if piece.box is not None:
            sub = (
                slice(piece.box[0].start - box[0].start, piece.box[0].stop - box[0].start),
                slice(piece.box[1].start - box[1].start, piece.box[1].stop - box[1].start),
            )
            np.maximum(out[sub], piece.values, out=out[sub])
    return Patch(box, out)


def curve(
    g: Grid,
    u0: float,
    u1: float,
    v_of_u: np.poly1d | None,
    half_width: float,
    vmin: float,
    vmax: float,
    edge: float = 1.5,
) -> Patch:
    """A band of ``half_width`` around the curve v = poly(u) for u in [u0, u1] (vertical distance)."""
    box = g.box(u0, u1, vmin - half_width, vmax + half_width)
    if box is None or v_of_u is None:
        return EMPTY
    u, v = g.coords(box)
    dist = np.abs(v - v_of_u(u).astype(F32))
    inside = soft(F32(half_width) - dist, edge * g.px)
    inside *= soft(np.minimum(u - F32(u0), F32(u1) - u), edge * g.px)
    return Patch(box, inside)


def rows_between(v: np.ndarray, v0: float, v1: float) -> slice:
    """The rows of a box whose ``v`` range meets ``[v0, v1]`` (rotation is small: v ~ constant
    along a row), as a slice (empty if none)."""
    first, last = v[:, 0], v[:, -1]
    hit = np.flatnonzero((np.maximum(first, last) >= v0) & (np.minimum(first, last) <= v1))
    if hit.size == 0:
        return slice(0, 0)
    return slice(int(hit[0]), int(hit[-1]) + 1)


def union(size: int, patches: list[Patch]) -> np.ndarray:
    """The max of several patches as a full-size float32 image."""
    out = np.zeros((size, size), F32)
    for p in patches:
        if p.box is not None:
            np.maximum(out[p.box], p.values, out=out[p.box])
    return out


class Border:
    """A smooth curve ``u = B(v)`` through knots ``(v, u)`` (a heart or mediastinal border), tabulated.

    The polyline through the knots is smoothed by two passes of a moving average ``smooth`` wide
    (rounded corners, no overshoot: what is monotone stays monotone), constant beyond the end
    knots. :meth:`offset` gives the signed distance of points to it along its normal (positive
    where ``u > B(v)``) by table lookup: a few passes over the box, whatever the curve.
    """

    STEPS = 1024

    def __init__(self, knots: list[tuple[float, float]], smooth: float = 0.05) -> None:
        vs = np.array([k[0] for k in knots], np.float64)
        us = np.array([k[1] for k in knots], np.float64)
        self.v0, self.v1 = float(vs[0]), float(vs[-1])
        self.step = (self.v1 - self.v0) / (self.STEPS - 1)
        width = max(1, round(smooth / self.step))
        fine = self.v0 + self.step * np.arange(-width - 1, self.STEPS + width - 1)
        table = np.interp(fine, vs, us)
        for _ in range(2):  # moving averages by cumulative sums: each pass is width - 1 shorter
            total = np.cumsum(table)
            table = (total[width:] - total[:-width]) / width
        slope = np.diff(table, append=table[-1]) / self.step
        self.table = table.astype(F32)
        self.norm = (1.0 / np.sqrt(1.0 + slope * slope)).astype(F32)

    def __call__(self, v: float) -> float:
        """``B(v)``."""
        return float(self.table[round(min(max((v - self.v0) / self.step, 0), self.STEPS - 1))])

    def extent(self) -> tuple[float, float]:
        """The smallest and largest ``u`` of the curve."""
        return float(self.table.min()), float(self.table.max())

    def offset(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Signed normal distance of ``(u, v)`` from the curve (float32, a new array)."""
        idx = v - F32(self.v0)
        idx *= F32(1 / self.step)
        idx += F32(0.5)
        clip(idx, F32(0), F32(self.STEPS - 1), out=idx)
        i = idx.astype(np.intp)
        out = u - np.take(self.table, i)
        out *= np.take(self.norm, i)
        return out
