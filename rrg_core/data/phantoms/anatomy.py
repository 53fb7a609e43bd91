"""Normal chest anatomy for the phantoms, frontal (PA) and lateral, as a density map (bright = dense).

Coordinates follow :mod:`.draw`. In the frontal view ``u > 0`` is the image's right, i.e. the
patient's LEFT (radiographs are viewed as if facing the patient); in the lateral view ``u < 0`` is
anterior (the patient faces the image's left), spine on the right. Findings that change anatomy
itself (cardiomegaly, a wide mediastinum, hyperinflation, scoliosis, a tortuous aorta) are
:class:`Body` parameters here; the ones laid over it live in :mod:`.findings`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rrg_core.data.phantoms.draw import F32, Grid, Patch, ellipse, segment, soft, union

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
    t = np.clip((u - F32(centre)) * F32(1 / half_width), -1.0, 1.0)
    return F32(base) - F32(height) * (F32(1) - t * t)


def frontal_geometry(b: Body) -> dict[str, float]:
    """Key positions of the frontal view (patient units) derived from the body."""
    w, insp = b.width, b.inspiration * (1 + 0.08 * b.hyperinflation)
    lung_ru = 0.165 * w * (1 + 0.05 * b.hyperinflation)
    lung_cu = 0.19 * w
    top = 0.13
    base = top + 0.6 * insp
    thorax = 2 * (lung_cu + lung_ru)
    heart_w = b.ctr * thorax
    return {
        "lung_cu": lung_cu,
        "lung_ru": lung_ru,
        "lung_top": top,
        "lung_rv": 0.37 * insp,
        "dome_base": base,
        "dome_height": 0.06 * (1 - 0.8 * b.hyperinflation),
        "thorax": thorax,
        "heart_w": heart_w,
        "heart_cu": 0.24 * heart_w,
        "heart_cv": base - 0.16,
        "heart_rv": 0.16 + 0.1 * (b.ctr - 0.44),
        "med_ru": 0.06 * w * b.mediastinum,
        "hilum_v": top + 0.3 * insp,
    }


def render_frontal(size: int, b: Body) -> Scene:
    """The PA view of a normal chest (plus the anatomic findings that :class:`Body` carries)."""
    g = grid_for(size, b, FRONTAL)
    geo = frontal_geometry(b)
    body = union(
        size,
        [
            ellipse(g, 0, 0.6, 0.5 * b.width, 0.62, edge=4),
            ellipse(g, 0, 0.2, 0.56 * b.width, 0.16, edge=4),
            segment(g, (0, -0.2), (0, 0.12), 0.1, edge=3),
        ],
    )
    lungs = {}
    for side, sign in (("right", -1.0), ("left", 1.0)):
        cu, ru = sign * geo["lung_cu"], geo["lung_ru"]
        box = g.box(cu - ru - 0.01, cu + ru + 0.01, geo["lung_top"] - 0.01, geo["dome_base"] + 0.02)
        lungs[side] = np.zeros((size, size), F32)
        if box is not None:
            lungs[side][box] = _lung(g, *g.coords(box), cu, geo, side)
    heart = ellipse(
        g, geo["heart_cu"], geo["heart_cv"], geo["heart_w"] / 2, geo["heart_rv"], angle=-0.45, edge=2
    ).full(size)
    med_ru = geo["med_ru"]
    knob = ellipse(g, 0.055 + 0.03 * b.aorta, 0.3 - 0.02 * b.aorta, 0.035 + 0.015 * b.aorta, 0.04, edge=2)
    mediastinum = union(size, [ellipse(g, 0.008, 0.36, med_ru, 0.3, edge=2), knob])
    solid = np.maximum(heart, mediastinum)
    lung = np.maximum(lungs["right"], lungs["left"]) * (F32(1) - solid)
    d = F32(SOFT_TISSUE) * body
    d += F32(LUNG_AIR * (1 + 0.15 * b.hyperinflation)) * lung
    markings = _markings(g, geo, b)
    d += F32(0.07) * lung * markings
    for sign in (-1.0, 1.0):  # hila: vessels and bronchi, denser than lung
        ellipse(g, sign * 0.095 * b.width, geo["hilum_v"], 0.035, 0.055, edge=5).add_to(d, 0.13)
    segment(g, (0.0, -0.05), (0.0, 0.34), 0.014, edge=2).add_to(d, -0.12)  # trachea
    for sign in (-1.0, 1.0):
        segment(g, (0.0, 0.34), (sign * 0.06, 0.4), 0.01, edge=2).add_to(d, -0.1)
    d += F32(0.04) * solid
    # Gastric bubble under the left hemidiaphragm: air in the fundus.
    ellipse(g, 0.17 * b.width, geo["dome_base"] + 0.06, 0.05, 0.025, edge=3).add_to(d, -0.18)
    spine = _spine(g, b, FRONTAL)
    # Ribs show mostly against the air of the lungs; over soft tissue they are faint.
    bones = _ribs(g, geo, b) * (F32(0.35) + F32(0.65) * lung) + _clavicles(g, b) * F32(0.8) + spine
    d += F32(BONE) * bones * body
    if b.aorta_calcified:
        ellipse(g, 0.085 + 0.03 * b.aorta, 0.265, 0.012, 0.02, edge=1).add_to(d, 0.2)
    masks = {
        "body": body,
        "lung_right": lungs["right"],
        "lung_left": lungs["left"],
        "lungs": lung,
        "heart": heart,
        "mediastinum": mediastinum,
        "bones": np.clip(bones, 0, 1),
        "markings": markings * lung,
        "spine": spine,
        "aorta": knob.full(size),
    }
    return Scene(FRONTAL, g, b, d, masks, geo)


def _lung(g: Grid, u: np.ndarray, v: np.ndarray, cu: float, geo: dict[str, float], side: str) -> np.ndarray:
    """One lung: a pear-shaped field (narrow apex) cut below by its hemidiaphragm."""
    top, rv, ru = geo["lung_top"], geo["lung_rv"], geo["lung_ru"]
    cv = top + rv
    t = np.clip((v - F32(top)) * F32(1 / (1.2 * rv)), 0, 1)
    width = F32(ru) * (F32(0.45) + F32(0.55) * np.sqrt(t))
    r = np.sqrt(((u - F32(cu)) / width) ** 2 + ((v - F32(cv)) * F32(1 / rv)) ** 2)
    field_ = soft((F32(1) - r) * F32(ru), 1.5 * g.px)
    # The right hemidiaphragm sits higher (the liver beneath it).
    base = geo["dome_base"] - (0.02 if side == "right" else 0.0)
    edge = dome(u, base, cu * 0.9, ru * 1.3, geo["dome_height"])
    return field_ * soft(edge - v, 1.5 * g.px)


def _markings(g: Grid, geo: dict[str, float], b: Body) -> np.ndarray:
    """Vascular markings: lines radiating from the hila, fading towards the periphery.

    Computed at half resolution over the lungs' box only (the costliest texture here) and
    upsampled; the exposure blur hides the blocks. The direction from the hilum is the cheap
    "diamond angle" dv / (|du| + |dv|), monotone in the true angle, instead of arctan2.
    """
    out = np.zeros((g.size, g.size), F32)
    reach = geo["lung_cu"] + geo["lung_ru"]
    box = g.box(-reach, reach, geo["lung_top"], geo["dome_base"] + 0.01)
    if box is None:
        return out
    half = Grid((g.size + 1) // 2, g.angle, g.shift, g.scale)
    r0, c0 = box[0].start // 2, box[1].start // 2
    r1, c1 = (box[0].stop + 1) // 2, (box[1].stop + 1) // 2
    u, v = half.coords((slice(r0, r1), slice(c0, c1)))
    acc = np.zeros(u.shape, F32)
    dv = v - F32(geo["hilum_v"])
    adv = np.abs(dv)
    for sign, phase in ((-1.0, b.marking_phase[0]), (1.0, b.marking_phase[1])):
        du = np.abs(u - F32(sign * 0.09))
        r = np.sqrt(du * du + dv * dv)
        r += F32(1e-3)
        du += adv
        du += F32(1e-4)
        angle = np.divide(dv, du, out=du)  # in [-1, 1] over a half turn
        arg = r * F32(7)
        np.sin(arg, out=arg)
        arg *= F32(9)
        arg += angle * F32(34.5)
        arg += F32(phase)
        wave = np.cos(arg, out=arg)
        wave += F32(1)
        wave *= F32(0.5)
        w2 = wave * wave
        w2 *= w2
        w2 *= wave * wave
        r *= F32(-5)
        w2 *= np.exp(r, out=r)
        acc += w2
    up = np.broadcast_to(acc[:, None, :, None], (acc.shape[0], 2, acc.shape[1], 2)).reshape(
        2 * acc.shape[0], 2 * acc.shape[1]
    )
    rows = slice(2 * r0, min(2 * r1, g.size))
    cols = slice(2 * c0, min(2 * c1, g.size))
    out[rows, cols] = up[: rows.stop - rows.start, : cols.stop - cols.start]
    return out


def _ribs(g: Grid, geo: dict[str, float], b: Body) -> np.ndarray:
    """Ribs, all ten a side at once through a periodic phase, inside the rib cage.

    Posterior ribs arch up from the spine and curve down along the chest wall; the fainter anterior
    ribs slope down towards the midline.
    """
    half = geo["thorax"] / 2 + 0.03
    out = np.zeros((g.size, g.size), F32)
    box = g.box(-half - 0.01, half + 0.01, 0.06, geo["dome_base"] + 0.05)
    if box is None:
        return out
    u, v = g.coords(box)
    a = np.abs(u)
    spacing = F32(0.05 * b.inspiration)
    post = (v - F32(0.08) - F32(1.6) * (a - F32(0.12)) ** 2 + F32(0.02)) / spacing
    ant = (v - F32(0.12) + F32(0.45) * (a - F32(half))) / (spacing * F32(1.3))
    edge = 2.0 * g.px / float(spacing)
    ribs = soft(F32(0.2) - np.abs(post - np.floor(post) - F32(0.5)), edge)
    ribs = np.maximum(ribs, F32(0.45) * soft(F32(0.18) - np.abs(ant - np.floor(ant) - F32(0.5)), edge))
    cage = soft(F32(half) - a, 2 * g.px) * soft(a - F32(0.04), 2 * g.px)
    cage *= soft(F32(geo["dome_base"]) - v, 4 * g.px) * soft(v - F32(0.08), 2 * g.px)
    out[box] = ribs * cage * F32(0.4)
    return out


def _clavicles(g: Grid, b: Body) -> np.ndarray:
    size = g.size
    return union(
        size, [segment(g, (s * 0.04, 0.17), (s * 0.3 * b.width, 0.105), 0.017, edge=2) for s in (-1.0, 1.0)]
    ) * F32(1.3)


def spine_centre(v: np.ndarray, b: Body, view: str) -> np.ndarray:
    """The spine's centre line u(v): straight, or an S-curve with scoliosis; posterior in the lateral."""
    if view == LATERAL:
        return F32(0.27) + F32(0.03) * np.sin(F32(math.pi) * v)
    return F32(b.scoliosis) * np.sin(F32(2 * math.pi) * (v - F32(0.1)) * F32(0.9))


def _spine(g: Grid, b: Body, view: str) -> np.ndarray:
    """Vertebral column: bodies (periodic in v) with disc spaces; osteophytes widen the endplates."""
    half = 0.03 if view == FRONTAL else 0.045
    out = np.zeros((g.size, g.size), F32)
    centre = 0.0 if view == FRONTAL else 0.28
    reach = abs(b.scoliosis) + half + 0.05
    box = g.box(centre - reach, centre + reach, -0.1, 1.1)
    if box is None:
        return out
    u, v = g.coords(box)
    dist = np.abs(u - spine_centre(v, b, view))
    level = v * F32(1 / 0.048)
    frac = np.abs(level - np.floor(level) - F32(0.5))  # 0.5 at a disc space
    disc = soft(frac - F32(0.4), 0.04)
    spur = F32(b.osteophytes * 0.014) * soft(frac - F32(0.34), 0.03)
    col = soft(F32(half) + spur - dist, 1.5 * g.px) * (F32(0.75) - F32(0.35) * disc)
    out[box] = col * F32(0.45 if view == FRONTAL else 0.8)  # seen through the mediastinum in PA
    return out


def render_lateral(size: int, b: Body) -> Scene:
    """The lateral view: one lung field, heart anterior-inferior, spine posterior, sternum anterior."""
    g = grid_for(size, b, LATERAL)
    u, v = g.coords()
    insp = b.inspiration * (1 + 0.08 * b.hyperinflation)
    body = union(
        size,
        [ellipse(g, 0.0, 0.62, 0.45, 0.62, edge=4), segment(g, (0.02, -0.2), (0.02, 0.12), 0.12, edge=3)],
    )
    top, rv, ru = 0.12, 0.36 * insp, 0.28 * (1 + 0.12 * b.hyperinflation)
    base = top + 0.62 * insp
    dome_h = 0.07 * (1 - 0.8 * b.hyperinflation)
    field_ = ellipse(g, 0.01, top + rv, ru, rv, edge=1.5).full(size)
    # Two hemidiaphragms, the posterior sulcus lowest.
    cut = np.maximum(dome(u, base, 0.0, 0.3, dome_h), dome(u, base + 0.015, 0.03, 0.3, dome_h))
    lung_field = field_ * soft(cut + F32(0.04) * u - v, 1.5 * g.px)
    heart_r = 0.13 * (b.ctr / 0.44)
    heart = ellipse(
        g, -0.11 - 0.3 * (heart_r - 0.13), base - 0.16, heart_r * 1.1, 0.15, angle=-0.6, edge=2
    ).full(size)
    arch = ellipse(g, 0.02 + 0.02 * b.aorta, 0.25, 0.07 + 0.02 * b.aorta, 0.05, edge=3)
    mediastinum = union(size, [ellipse(g, 0.02, 0.3, 0.06 * b.mediastinum, 0.16, edge=3), arch])
    solid = np.maximum(heart, mediastinum * F32(0.6))
    lung = lung_field * (F32(1) - solid)
    d = F32(SOFT_TISSUE) * body + F32(LUNG_AIR * 0.8 * (1 + 0.15 * b.hyperinflation)) * lung
    hilum_v = top + 0.33 * insp
    ellipse(g, 0.04, hilum_v, 0.05, 0.065, edge=6).add_to(d, 0.14)
    segment(g, (0.0, -0.05), (0.05, hilum_v - 0.03), 0.02, edge=2).add_to(d, -0.12)  # trachea
    segment(g, (-0.31, 0.2), (-0.27, 0.6), 0.012, edge=2).add_to(d, 0.12)  # sternum
    bones = _spine(g, b, LATERAL)
    ph = (v - F32(0.5) * u) * F32(1 / 0.055)
    ribs = soft(F32(0.2) - np.abs(ph - np.floor(ph) - F32(0.5)), 0.1) * lung * F32(0.3)
    d += F32(BONE) * (bones + ribs) * body
    if b.aorta_calcified:
        ellipse(g, 0.06, 0.2, 0.04, 0.01, angle=0.6, edge=1).add_to(d, 0.2)
    geo = {
        "lung_top": top,
        "lung_rv": rv,
        "lung_ru": ru,
        "dome_base": base,
        "hilum_v": hilum_v,
        "thorax": 2 * ru,
        "heart_w": 2 * heart_r,
    }
    masks = {
        "body": body,
        "lungs": lung,
        "lung_field": lung_field,
        "heart": heart,
        "mediastinum": mediastinum,
        "bones": np.clip(bones, 0, 1),
        "spine": bones,
        "aorta": arch.full(size),
    }
    return Scene(LATERAL, g, b, d, masks, geo)


def render(size: int, b: Body, view: str) -> Scene:
    """Render one view of the normal anatomy."""
    if view == FRONTAL:
        return render_frontal(size, b)
    if view == LATERAL:
        return render_lateral(size, b)
    raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")


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
    np.clip(x, F32(0), F32(_LUT_STEPS), out=x)
    lut = np.linspace(0, 1, _LUT_STEPS + 1, dtype=np.float64) ** b.gamma
    img = np.take(lut.astype(F32), x.astype(np.intp))
    n = img.size
    noise = np.frombuffer(rng.bytes(2 * n), np.int8).astype(F32)
    noise[:n] += noise[n:]
    noise = noise[:n].reshape(img.shape)
    noise *= F32(b.noise / _NOISE_STD)
    img += noise
    return np.clip(img, F32(0), F32(1), out=img)


def patch_mask(p: Patch, size: int, threshold: float = 0.5) -> np.ndarray:
    """A patch as a full-size boolean mask."""
    return p.full(size) > threshold
