"""The frontal (PA) view of the normal chest: lungs, cardiomediastinal silhouette, ribs, markings.

Coordinates follow :mod:`.draw`; ``u > 0`` is the image's right, the patient's LEFT. The heart and
mediastinum are one silhouette between two :class:`~.draw.Border` curves: on the patient's right
the SVC then the right atrium's gentle convexity just off the spine; on the left the aortic knob,
the pulmonary trunk, then the left ventricle sweeping down and out to the apex on the left
hemidiaphragm. The heart's lower border lies under the diaphragm (invisible, as on a film).
"""

from __future__ import annotations

import numpy as np

from rrg_core.phantoms.anatomy import (
    BONE,
    FRONTAL,
    LUNG_AIR,
    SOFT_TISSUE,
    Body,
    Scene,
    dome,
    grid_for,
    spine,
)
from rrg_core.phantoms.draw import (
    F32,
    Border,
    Grid,
    clip,
    ellipse,
    rows_between,
    segment,
    soft,
    soft_,
    union,
)
from rrg_core.phantoms.ribs import RibCage, draw_ribs


def frontal_geometry(b: Body) -> dict[str, float]:
    """Key positions of the frontal view (patient units) derived from the body."""
    w, insp = b.width, b.inspiration * (1 + 0.08 * b.hyperinflation)
    lung_ru = 0.165 * w * (1 + 0.05 * b.hyperinflation)
    lung_cu = 0.19 * w
    top = 0.13
    base = top + 0.6 * insp
    thorax = 2 * (lung_cu + lung_ru)
    return {
        "lung_cu": lung_cu,
        "lung_ru": lung_ru,
        "lung_top": top,
        "lung_rv": 0.37 * insp,
        "dome_base": base,
        "dome_height": 0.06 * (1 - 0.8 * b.hyperinflation),
        "thorax": thorax,
        "heart_w": b.ctr * thorax,
        "hilum_v": top + 0.3 * insp,
        "cage": thorax / 2 + 0.03,
    }


def diaphragm(u: np.ndarray, geo: dict[str, float], side: str) -> np.ndarray:
    """v of one hemidiaphragm's upper edge; the right one sits higher (the liver beneath it)."""
    cu = (-1.0 if side == "right" else 1.0) * geo["lung_cu"]
    base = geo["dome_base"] - (0.02 if side == "right" else 0.0)
    return dome(u, base, cu * 0.9, geo["lung_ru"] * 1.3, geo["dome_height"])


def lung_field(
    g: Grid, u: np.ndarray, v: np.ndarray, cu: float, geo: dict[str, float], side: str
) -> np.ndarray:
    """One lung: a pear-shaped field (narrow apex) cut below by its hemidiaphragm."""
    top, rv, ru = geo["lung_top"], geo["lung_rv"], geo["lung_ru"]
    cv = top + rv
    t = clip((v - F32(top)) * F32(1 / (1.2 * rv)), 0, 1)
    width = F32(ru) * (F32(0.45) + F32(0.55) * np.sqrt(t))
    r = np.sqrt(((u - F32(cu)) / width) ** 2 + ((v - F32(cv)) * F32(1 / rv)) ** 2)
    field_ = soft((F32(1) - r) * F32(ru), 1.5 * g.px)
    rows = rows_between(v, geo["dome_base"] - 0.02 - geo["dome_height"] - 0.01, 2.0)
    field_[rows] *= soft_(diaphragm(u[rows], geo, side) - v[rows], 1.5 * g.px)
    return field_


def cardiac_borders(geo: dict[str, float], b: Body, rng: np.random.Generator) -> tuple[Border, Border]:
    """The silhouette's right (patient's right, u < 0) and left borders, through anatomic knots."""
    top, span = geo["lung_top"], geo["dome_base"] - geo["lung_top"]
    h, m = geo["heart_w"], b.mediastinum

    def y(f: float) -> float:
        return top + f * span

    right_share = float(rng.uniform(0.3, 0.36))  # of the heart's width right of the midline
    ra, lv = right_share * h, (1 - right_share) * h
    apex_f = float(rng.uniform(0.86, 0.9))
    trunk = 0.07 * (1 + 0.5 * (m - 1)) + float(rng.uniform(-0.006, 0.006))
    right = Border(
        [
            (y(-0.3), -0.04 * m),
            (y(0.1), -0.048 * m),
            (y(0.32), -0.056 * m),  # superior vena cava
            (y(0.5), -0.06 * m - 0.1 * ra),
            (y(0.62), -0.8 * ra),  # right atrium
            (y(0.76), -0.97 * ra),
            (y(0.86), -ra),
            (y(1.0), -0.93 * ra),
            (y(1.15), -0.85 * ra),
        ]
    )
    left = Border(
        [
            (y(-0.3), 0.04 * m),
            (y(0.1), 0.05 * m),  # left subclavian artery
            (y(0.29), 0.056 * m),  # below the knob: the aortopulmonary window
            (y(0.38), trunk),  # pulmonary trunk
            (y(0.46), trunk + 0.006),  # left atrial appendage
            (y(0.56), 0.6 * lv),  # left ventricle
            (y(0.7), 0.9 * lv),
            (y(apex_f), lv),  # apex, on the left hemidiaphragm
            (y(1.05), 0.88 * lv),
            (y(1.15), 0.75 * lv),
        ]
    )
    geo["heart_top"] = y(0.47)
    return right, left


def silhouette(g: Grid, geo: dict[str, float], b: Body, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Full-size coverages: (heart, upper mediastinum, the whole silhouette, its extra density).

    The heart is cut at the diaphragm (its mask); the whole silhouette is not, so nothing of the
    lung is left along the heart's lower border. The extra density fades out towards the
    diaphragm: the heart's lower border merges with the soft tissue below it.
    """
    size = g.size
    right, left = cardiac_borders(geo, b, rng)
    heart, upper, whole, extra = (np.zeros((size, size), F32) for _ in range(4))
    top = geo["lung_top"] - 0.06
    box = g.box(right.extent()[0] - 0.01, left.extent()[1] + 0.01, top, geo["dome_base"] + 0.04)
    if box is None:
        return heart, upper, whole, extra
    u, v = g.coords(box)
    edge = 1.5 * g.px
    inside = soft_(right.offset(u, v), edge)
    inside *= soft_(np.negative(left.offset(u, v)), edge)
    rows = rows_between(v, -1.0, top + 0.03)  # fade in from the neck
    inside[rows] *= soft_(v[rows] - F32(top + 0.015), 4 * g.px)
    whole[box] = inside
    upper[box] = inside
    extra[box] = inside
    rows = rows_between(v, geo["heart_top"] - 0.04, 2.0)
    below = slice(box[0].start + rows.start, box[0].start + rows.stop), box[1]
    low = inside[rows] * soft_(v[rows] - F32(geo["heart_top"]), 0.03)
    upper[below] -= low
    rows = rows_between(v, geo["dome_base"] - 0.02 - geo["dome_height"] - 0.08, 2.0)
    floor_rows = slice(box[0].start + rows.start, box[0].start + rows.stop), box[1]
    ur, vr = u[rows], v[rows]
    floor = np.where(ur < 0, diaphragm(ur, geo, "right"), diaphragm(ur, geo, "left"))
    heart[below] = low
    heart[floor_rows] *= soft_(floor + F32(0.004) - vr, edge)
    extra[floor_rows] *= soft_(floor - F32(0.025) - vr, 0.05)
    return heart, upper, whole, extra


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
    up = np.broadcast_to(acc[:, None, :, None], (acc.shape[0], 2, acc.shape[1], 2))
    up = up.reshape(2 * acc.shape[0], 2 * acc.shape[1])
    rows, cols = slice(2 * r0, min(2 * r1, g.size)), slice(2 * c0, min(2 * c1, g.size))
    out[rows, cols] = up[: rows.stop - rows.start, : cols.stop - cols.start]
    return out


def render_frontal(size: int, b: Body) -> Scene:
    """The PA view of a normal chest (plus the anatomic findings that :class:`Body` carries)."""
    g = grid_for(size, b, FRONTAL)
    geo = frontal_geometry(b)
    rng = np.random.default_rng([b.detail, 1])
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
            lungs[side][box] = lung_field(g, *g.coords(box), cu, geo, side)
    heart, upper, whole, extra = silhouette(g, geo, b, rng)
    knob = ellipse(
        g,
        (0.058 + 0.03 * b.aorta) * (0.5 + 0.5 * b.mediastinum),
        0.28 - 0.02 * b.aorta,
        0.03 + 0.015 * b.aorta,
        0.036,
        edge=2,
    )
    mediastinum = np.maximum(upper, knob.full(size))
    lung = np.maximum(lungs["right"], lungs["left"])
    lung *= F32(1) - np.maximum(whole, mediastinum)
    d = F32(SOFT_TISSUE) * body
    d += F32(LUNG_AIR * (1 + 0.15 * b.hyperinflation)) * lung
    markings = _markings(g, geo, b)
    markings *= lung
    d += F32(0.07) * markings
    for sign, dv in ((-1.0, 0.0), (1.0, -0.015)):  # hila (the left one higher): vessels, bronchi
        ellipse(g, sign * 0.095 * b.width, geo["hilum_v"] + dv, 0.035, 0.055, edge=5).add_to(d, 0.13)
    segment(g, (0.0, -0.05), (0.0, 0.34), 0.014, edge=2).add_to(d, -0.12)  # trachea
    for sign in (-1.0, 1.0):
        segment(g, (0.0, 0.34), (sign * 0.06, 0.4), 0.01, edge=2).add_to(d, -0.1)
    d += F32(0.04) * np.maximum(extra, knob.full(size))
    # The descending aorta, faintly through the heart, left of the spine.
    segment(g, (0.045, 0.3), (0.03, geo["dome_base"] - 0.03), 0.018, edge=4).add_to(d, 0.025)
    # Gastric bubble under the left hemidiaphragm: air in the fundus.
    ellipse(g, 0.17 * b.width, geo["dome_base"] + 0.06, 0.05, 0.025, edge=3).add_to(d, -0.18)
    column = spine(g, b, FRONTAL)
    ribs = {side: RibCage(geo, b, rng) for side in ("right", "left")}
    # Ribs show mostly against the air of the lungs; over soft tissue they are faint.
    bones = draw_ribs(g, ribs)
    bones *= F32(0.35) + F32(0.65) * lung
    bones += _clavicles(g, b)
    bones += column
    d += F32(BONE) * bones * body
    if b.aorta_calcified:
        ellipse(g, 0.08 + 0.03 * b.aorta, 0.265, 0.012, 0.02, edge=1).add_to(d, 0.2)
    masks = {
        "body": body,
        "lung_right": lungs["right"],
        "lung_left": lungs["left"],
        "lungs": lung,
        "heart": heart,
        "mediastinum": mediastinum,
        "bones": clip(bones, F32(0), F32(1)),
        "markings": markings,
        "spine": column,
        "aorta": knob.full(size),
    }
    scene = Scene(FRONTAL, g, b, d, masks, geo)
    scene.ribs = ribs
    return scene


def _clavicles(g: Grid, b: Body) -> np.ndarray:
    return union(
        g.size, [segment(g, (s * 0.04, 0.17), (s * 0.3 * b.width, 0.105), 0.017, edge=2) for s in (-1.0, 1.0)]
    ) * F32(1.3 * 0.8)
