"""The lateral view of the normal chest: one lung field, heart anterior-inferior, spine posterior.

Coordinates follow :mod:`.draw`; ``u < 0`` is anterior (the patient faces the image's left). The
heart lies between two :class:`~.draw.Border` curves: its anterior border meets the lower third of
the anterior chest wall and leaves lung (the retrosternal clear space) above; its posterior border
(left atrium, left ventricle) leaves lung (the retrocardiac clear space) in front of the spine.
"""

from __future__ import annotations

import numpy as np

from rrg_core.phantoms.anatomy import (
    BONE,
    LATERAL,
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
    polyline,
    rows_between,
    segment,
    soft_,
    union,
)


def heart_borders(top: float, span: float, b: Body) -> tuple[Border, Border]:
    """Anterior and posterior borders of the heart; an enlarged heart fills both clear spaces."""
    k = b.ctr / 0.44

    def y(f: float) -> float:
        return top + f * span

    anterior = Border(
        [
            (y(0.3), 0.0),
            (y(0.4), -0.04),
            (y(0.5), -0.09 * k),  # right ventricular outflow, behind the retrosternal space
            (y(0.6), -0.18 * k),
            (y(0.7), -0.28 * k),  # against the lower sternum
            (y(0.8), -0.36),
            (y(1.2), -0.4),
        ]
    )
    posterior = Border(
        [
            (y(0.3), 0.04),
            (y(0.4), 0.04),
            (y(0.48), 0.05 * k),  # left atrium
            (y(0.62), 0.085 * k**1.3),  # left ventricle
            (y(0.78), 0.09 * k**1.3),
            (y(0.92), 0.065 * k**1.3),  # inferior vena cava
            (y(1.2), 0.04),
        ]
    )
    return anterior, posterior


def aorta(g: Grid, b: Body, base: float) -> np.ndarray:
    """Ascending aorta, arch (half a ring) and descending aorta; unfolded: a higher, wider arch."""
    a = b.aorta
    cu, cv, ru, rv = 0.055 + 0.01 * a, 0.28, 0.1 + 0.015 * a, 0.075 + 0.03 * a
    hw = 0.024 * (1 + 0.3 * a)
    parts = [
        segment(g, (cu - ru, cv), (-0.05, 0.47), hw, edge=3),
        polyline(g, [(cu + ru, cv), (0.185, 0.5), (0.195, base)], hw, edge=3),
    ]
    out = union(g.size, parts)
    box = g.box(cu - ru - hw - 0.01, cu + ru + hw + 0.01, cv - rv - hw - 0.01, cv + 0.01)
    if box is not None:
        u, v = g.coords(box)
        du, dv = (u - F32(cu)) * F32(1 / ru), (v - F32(cv)) * F32(1 / rv)
        r = np.sqrt(du * du + dv * dv)
        r -= F32(1)
        r *= F32(0.5 * (ru + rv))
        ring = soft_(F32(hw) - np.abs(r, out=r), 3 * g.px)
        ring *= soft_(F32(cv) - v, g.px)
        np.maximum(out[box], ring, out=out[box])
    return out


def render_lateral(size: int, b: Body) -> Scene:
    """The lateral view: one lung field, heart anterior-inferior, spine posterior, sternum anterior."""
    g = grid_for(size, b, LATERAL)
    insp = b.inspiration * (1 + 0.08 * b.hyperinflation)
    body = union(
        size,
        [ellipse(g, 0.0, 0.62, 0.45, 0.62, edge=4), segment(g, (0.02, -0.2), (0.02, 0.12), 0.12, edge=3)],
    )
    top, rv, ru = 0.12, 0.36 * insp, 0.28 * (1 + 0.12 * b.hyperinflation)
    base = top + 0.62 * insp
    dome_h = 0.07 * (1 - 0.8 * b.hyperinflation)
    field_patch = ellipse(g, 0.01, top + rv, ru, rv, edge=1.5)
    lung_field = np.zeros((size, size), F32)
    ribs = np.zeros((size, size), F32)
    heart = np.zeros((size, size), F32)
    whole = np.zeros((size, size), F32)  # the heart not cut by the diaphragm: no lung left along it
    box = field_patch.box
    if box is not None:
        u, v = g.coords(box)
        cavity = field_patch.values
        rows = rows_between(v, base - dome_h - 0.04, 2.0)  # only the lowest rows meet the diaphragm
        ur, vr = u[rows], v[rows]
        # Two hemidiaphragms, the posterior sulcus lowest.
        cut = np.maximum(dome(ur, base, 0.0, 0.3, dome_h), dome(ur, base + 0.015, 0.03, 0.3, dome_h))
        cut += F32(0.04) * ur
        cavity[rows] *= soft_(cut - vr, 1.5 * g.px)
        lung_field[box] = cavity
        ribs[box] = _ribs(g, u, v, b)
    anterior, posterior = heart_borders(top, base - top, b)
    cap_v = top + 0.37 * (base - top)
    box = g.box(-ru - 0.02, posterior.extent()[1] + 0.01, cap_v - 0.01, base + 0.03)
    if box is not None:
        u, v = g.coords(box)
        inside = soft_(anterior.offset(u, v), 1.5 * g.px)
        inside *= soft_(np.negative(posterior.offset(u, v)), 1.5 * g.px)
        # A rounded top, where the heart meets the great vessels.
        cap = F32(cap_v) + F32(1.6) * (u + F32(0.03)) ** 2
        inside *= soft_(v - cap, 3 * g.px)
        heart[box] = inside * lung_field[box]
        whole[box] = inside
    arch = aorta(g, b, base)
    mediastinum = np.maximum(ellipse(g, 0.02, 0.3, 0.06 * b.mediastinum, 0.16, edge=3).full(size), arch)
    solid = np.maximum(whole, mediastinum * F32(0.45))
    lung = lung_field * (F32(1) - solid)
    d = F32(SOFT_TISSUE) * body + F32(LUNG_AIR * 0.8 * (1 + 0.15 * b.hyperinflation)) * lung
    hilum_v = top + 0.33 * insp
    ellipse(g, 0.04, hilum_v, 0.05, 0.065, edge=6).add_to(d, 0.14)
    segment(g, (0.0, -0.05), (0.05, hilum_v - 0.03), 0.02, edge=2).add_to(d, -0.12)  # trachea
    segment(g, (-0.31, 0.2), (-0.27, 0.6), 0.012, edge=2).add_to(d, 0.12)  # sternum
    bones = spine(g, b, LATERAL)
    d += F32(BONE) * (bones + ribs * lung) * body
    if b.aorta_calcified:
        ellipse(g, 0.06, 0.2 - 0.035 * b.aorta, 0.04, 0.01, angle=0.3, edge=1).add_to(d, 0.2)
    geo = {
        "lung_top": top,
        "lung_rv": rv,
        "lung_ru": ru,
        "dome_base": base,
        "hilum_v": hilum_v,
        "thorax": 2 * ru,
        "heart_w": 2 * 0.13 * b.ctr / 0.44,
    }
    masks = {
        "body": body,
        "lungs": lung,
        "lung_field": lung_field,
        "heart": heart,
        "mediastinum": mediastinum,
        "bones": clip(bones, F32(0), F32(1)),
        "spine": bones,
        "aorta": arch,
    }
    return Scene(LATERAL, g, b, d, masks, geo)


def _ribs(g: Grid, u: np.ndarray, v: np.ndarray, b: Body) -> np.ndarray:
    """Both sides' ribs superimposed, sloping down anteriorly, clearer posteriorly, unevenly spaced."""
    phase = v - F32(0.5) * u
    phase += F32(0.012) * np.sin(u * F32(9) + F32(b.marking_phase[0]))
    phase *= F32(1 / 0.055)
    phase -= np.floor(phase) + F32(0.5)
    ribs = soft_(F32(0.2) - np.abs(phase), 0.1)
    ribs *= clip(u * F32(1.6) + F32(0.6), F32(0.25), F32(1))
    ribs *= F32(0.3)
    return ribs
