"""Findings drawn over the normal anatomy: one small function per finding.

Each overlay function takes the rendered :class:`~.anatomy.Scene`, the :class:`Finding` and a
random generator and returns ``(delta, mask)``: the density change (full size, float32) and the
finding's region (bool). Findings that change anatomy itself (cardiomegaly, a wide mediastinum,
hyperinflation, scoliosis, degenerative spine, a tortuous aorta) are applied to the
:class:`~.anatomy.Body` by :func:`apply_to_body` before rendering; their mask is the changed structure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from rrg_core.observations import Label
from rrg_core.phantoms.anatomy import BONE, FRONTAL, LATERAL, Body, Scene
from rrg_core.phantoms.draw import (
    F32,
    Patch,
    clip,
    ellipse,
    polyline,
    rows_between,
    segment,
    soft,
    soft_,
    union,
)
from rrg_core.phantoms.frontal import lung_field
from rrg_core.phantoms.overlay import (
    DEVICES,
    EXTRAS,
    SEVERITIES,
    SIDES,
    STRENGTH,
    UNCERTAIN_STRENGTH,
    VISIBLE_IN,
    ZONES,
    Finding,
    lung_half_width,
    open_lung,
    result,
    visible,
    zone_centre,
)
from rrg_core.phantoms.ribs import RIB_WEIGHT

__all__ = [
    "DEVICES",
    "EXTRAS",
    "OVERLAYS",
    "SEVERITIES",
    "SIDES",
    "UNCERTAIN_STRENGTH",
    "VISIBLE_IN",
    "ZONES",
    "Finding",
    "apply_to_body",
    "visible",
]


def apply_to_body(body: Body, findings: tuple[Finding, ...]) -> Body:
    """Fold the anatomic findings into the body parameters."""
    changes: dict[str, object] = {}
    for f in findings:
        s = f.strength
        if f.name == "Cardiomegaly":
            changes["ctr"] = 0.5 + 0.2 * s  # CTR 0.59..0.70 for positives, ~0.54 when hedged
        elif f.name == "Enlarged Cardiomediastinum":
            changes["mediastinum"] = 1.2 + 1.1 * s
        elif f.name == "hyperinflation":
            changes["hyperinflation"] = 0.5 + 0.5 * s
            changes["inspiration"] = max(body.inspiration, 1.0)
        elif f.name == "scoliosis":
            changes["scoliosis"] = (0.04 + 0.06 * s) * (1 if f.side != "left" else -1)
        elif f.name == "spine_degeneration":
            changes["osteophytes"] = 0.5 + 0.5 * s
        elif f.name == "aorta":
            changes["aorta"] = 0.6 + 0.4 * s
            changes["aorta_calcified"] = f.severity == "large"
    return dataclasses.replace(body, **changes)  # type: ignore[arg-type]


def _patchy(
    scene: Scene,
    f: Finding,
    rng: np.random.Generator,
    count: int,
    offset: tuple[float, float],
    radii: tuple[tuple[float, float], tuple[float, float]],
    edge: float,
    level: float,
    tilt: float = 0.0,
    bronchogram: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Airspace opacity in each affected lung: ``count`` hazy ellipses jittered by ``offset`` (std,
    u then v) around a point of the zone, radii drawn from ``radii`` ranges, tilted up to ``tilt``
    radians, bounded by the lung; ``bronchogram`` adds an air bronchogram (a lucent branch)."""
    g, size = scene.grid, scene.grid.size
    region = np.zeros((size, size), F32)
    delta = np.zeros((size, size), F32)
    for side in f.sides():
        cu, cv = zone_centre(scene, side, f.zone, rng)
        patches = [
            ellipse(
                g,
                cu + rng.normal(0, offset[0]),
                cv + rng.normal(0, offset[1]),
                rng.uniform(*radii[0]),
                rng.uniform(*radii[1]),
                angle=rng.uniform(-tilt, tilt) if tilt else 0.0,
                edge=edge,
            )
            for _ in range(count)
        ]
        blob = union(size, patches)
        blob *= open_lung(scene, side)
        np.maximum(region, blob, out=region)
        if bronchogram:
            r = radii[1][1]
            branch = segment(g, (cu - 0.3 * r, cv - 0.4 * r), (cu + 0.4 * r, cv + 0.5 * r), 0.004)
            if branch.box is not None:  # after the region: the bronchogram is inside it
                blob[branch.box] *= F32(1) - F32(0.5) * branch.values
        delta += blob
    delta *= F32(level * f.strength)
    return result(delta, region)


def consolidation(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Lobar/segmental airspace opacity: one dense confluent blob with an air bronchogram."""
    r = 0.05 + 0.05 * STRENGTH[f.severity]
    return _patchy(scene, f, rng, 1, (0.0, 0.0), ((1.2 * r, 1.2 * r), (r, r)), 10, 0.3, 0.5, True)


def pneumonia(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Patchy, confluent airspace opacity: a cluster of hazy blobs in a zone."""
    s = 0.04 + 0.04 * STRENGTH[f.severity]
    return _patchy(scene, f, rng, 4, (s, 0.7 * s), ((0.5 * s, 0.9 * s), (0.4 * s, 0.8 * s)), 8, 0.28)


def lung_opacity(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ill-defined patchy opacity, fainter and smaller than pneumonia's."""
    return _patchy(scene, f, rng, 3, (0.03, 0.025), ((0.02, 0.04), (0.015, 0.035)), 6, 0.2)


def atelectasis(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Linear / plate-like bands, near-horizontal, in the (default lower) zone."""
    size = scene.grid.size
    region = np.zeros((size, size), F32)
    zone = f.zone or "lower"
    for side in f.sides():
        cu, cv = zone_centre(scene, side, zone, rng)
        length = 0.05 + 0.05 * STRENGTH[f.severity]
        tilt = rng.uniform(-0.2, 0.2)
        band = ellipse(scene.grid, cu, cv, length, 0.008 + 0.01 * STRENGTH[f.severity], angle=tilt, edge=2.5)
        region = np.maximum(region, band.full(size) * open_lung(scene, side))
    return result(F32(0.3 * f.strength) * region, region)


def edema(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Perihilar (bat-wing) haze and septal Kerley B lines at the lateral bases, both lungs."""
    g, size, geo = scene.grid, scene.grid.size, scene.geometry
    hv = geo["hilum_v"]
    parts: list[Patch] = []
    if scene.view == FRONTAL:
        for sign in (-1.0, 1.0):
            parts.append(ellipse(g, sign * 0.13, hv + 0.03, 0.12, 0.16, edge=14))
            for k in range(4 + int(3 * STRENGTH[f.severity])):  # Kerley B: short lines at the pleura
                v = geo["dome_base"] - 0.06 - 0.018 * k
                edge_u = sign * (geo["lung_cu"] + lung_half_width(geo, v) * 0.97)
                parts.append(segment(g, (edge_u, v), (edge_u - sign * 0.035, v), 0.0035, edge=1.2))
    else:
        parts.append(ellipse(g, 0.03, hv + 0.02, 0.16, 0.17, edge=14))
    region = union(size, parts) * scene.masks["lungs"]
    return result(F32(0.22 * f.strength) * region, region, 0.25)


def pleural_effusion(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fluid in the dependent pleural space: a meniscus rising laterally, blunting the angle."""
    g, size, geo = scene.grid, scene.grid.size, scene.geometry
    height = (geo["dome_base"] - geo["lung_top"]) * (0.1 + 0.35 * STRENGTH[f.severity])
    region = np.zeros((size, size), F32)
    u, v = g.coords()
    rows = rows_between(v, geo["dome_base"] - 1.9 * height - 0.03, 2.0)  # below the highest meniscus
    u, v = u[rows], v[rows]
    for side in f.sides():
        if scene.view == FRONTAL:
            sign = -1.0 if side == "right" else 1.0
            lateral = clip((u * F32(sign) - F32(0.02)) * F32(1 / (geo["lung_cu"] + geo["lung_ru"])), 0, 1)
            lung = open_lung(scene, side)  # not over the heart: fluid replaces lung air
        else:
            lateral = clip((u + F32(0.2)) * F32(1 / 0.5), 0, 1)  # the meniscus rises posteriorly
            lung = scene.masks["lungs"]
        level = F32(geo["dome_base"] - height) - F32(height * 0.9) * lateral**3
        fluid = soft_(v - level, 4 * g.px)
        fluid *= lung[rows]
        np.maximum(region[rows], fluid, out=region[rows])
    return result(
        F32(0.34 * (0.7 + 0.3 * f.strength)) * region * F32(f.strength / STRENGTH[f.severity]), region, 0.5
    )


def pneumothorax(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Air outside a partly collapsed lung: a thin pleural line, no markings beyond it, darker."""
    g, geo = scene.grid, scene.geometry
    u, v = g.coords()
    side = f.side if f.side in ("left", "right") else "right"
    sign = -1.0 if side == "right" else 1.0
    shrink = 1.0 - 0.35 * STRENGTH[f.severity]  # the collapsed lung's linear scale
    hu, hv = sign * geo["lung_cu"] * 0.6, geo["dome_base"]
    cu = sign * geo["lung_cu"]
    collapsed = lung_field(
        g, F32(hu) + (u - F32(hu)) * F32(1 / shrink), F32(hv) + (v - F32(hv)) * F32(1 / shrink), cu, geo, side
    )
    lung = scene.masks[f"lung_{side}"]
    region = clip(lung - collapsed, F32(0), F32(1)) * (F32(1) - scene.masks["heart"])
    line = F32(4) * collapsed * (F32(1) - collapsed) * lung  # peaks on the visceral pleura
    faint = F32(f.strength / STRENGTH[f.severity])
    delta = (-(scene.masks["markings"] * F32(0.07) + F32(0.09)) * region + F32(0.2) * line) * faint
    return result(delta, region, 0.5)


def lung_lesion(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A round nodule (mild), a larger nodule (moderate) or a mass (large), well defined."""
    size = scene.grid.size
    region = np.zeros((size, size), F32)
    radius = {"mild": 0.015, "moderate": 0.028, "large": 0.055}.get(f.severity or "moderate", 0.028)
    for side in f.sides():
        cu, cv = zone_centre(scene, side, f.zone, rng)
        blob = ellipse(scene.grid, cu, cv, radius, radius * rng.uniform(0.85, 1.0), edge=2)
        region = np.maximum(region, blob.full(size))
    return result(F32(0.32 * f.strength / STRENGTH[f.severity]) * region, region, 0.5)


def fracture(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rib fracture: a lucent break across one posterior rib, its lateral fragment stepped off."""
    g, size, geo = scene.grid, scene.grid.size, scene.geometry
    side = f.side if f.side in ("left", "right") else "right"
    sign = -1.0 if side == "right" else 1.0
    index = {"upper": 4, "mid": 5, "lower": 7}.get(f.zone or "mid", 5) + int(rng.integers(-1, 2))
    ribs = scene.ribs[side]
    where = float(rng.uniform(0.3, 0.7))
    at = geo["lung_cu"]
    for _ in range(3):  # over the lateral half of the lung, where the rib crosses it
        cv = ribs.centre(index, at)
        at = geo["lung_cu"] + where * lung_half_width(geo, cv)
    cv = ribs.centre(index, at)
    box = g.box(sign * at - 0.06, sign * at + 0.06, cv - 0.06, cv + 0.06)
    delta = np.zeros((size, size), F32)
    region = np.zeros((size, size), bool)
    if box is not None:
        u, v = g.coords(box)
        a = u * F32(sign)
        across = a - F32(at) - F32(0.35) * (v - F32(cv))  # the break line, slightly oblique
        beyond = soft(across, 1.0 * g.px)
        step = 1.2 * ribs.half_width(index) * float(rng.choice([-1.0, 1.0]))
        # The lateral fragment is stepped off at the break and bends back into line further out.
        shift = beyond * clip(F32(1) - across * F32(1 / 0.035), F32(0), F32(1)) * F32(step)
        original = ribs.band(a, v, g.px, index)
        broken = ribs.band(a, v - shift, g.px, index)
        broken *= F32(1) - soft(F32(0.005) - np.abs(across), 1.0 * g.px)  # the lucent gap
        weight = F32(BONE * RIB_WEIGHT * f.strength / STRENGTH[f.severity])
        weight *= F32(0.35) + F32(0.65) * scene.masks["lungs"][box]
        change = weight * (broken - original)
        delta[box] = change
        # The mask: what changed, grown by two pixels (tight around the break and the fragment).
        magnitude = np.abs(change)
        region[box] = _grow(magnitude > F32(0.1) * magnitude.max(), 2)
    return delta, region


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` dilated by a (2 px + 1)-wide square."""
    padded = np.pad(mask, px)
    out = np.zeros_like(mask)
    h, w = mask.shape
    for dy in range(2 * px + 1):
        for dx in range(2 * px + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def pleural_other(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pleural thickening along the lateral chest wall, or a calcified plaque (large)."""
    g, size, geo = scene.grid, scene.grid.size, scene.geometry
    region = np.zeros((size, size), F32)
    for side in f.sides():
        sign = -1.0 if side == "right" else 1.0
        _, cv = zone_centre(scene, side, f.zone, rng)
        edge_u = sign * (geo["lung_cu"] + lung_half_width(geo, cv) * 0.93)
        band = ellipse(g, edge_u, cv, 0.014, 0.06 + 0.03 * STRENGTH[f.severity], angle=-sign * 0.15, edge=2)
        region = np.maximum(region, band.full(size) * scene.masks[f"lung_{side}"])
    level = 0.5 if f.severity == "large" else 0.3
    return result(F32(level * f.strength / STRENGTH[f.severity]) * region, region)


def support_devices(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Metal and tubes: pacemaker and leads, sternotomy wires, central line, ET and NG tubes."""
    g, size, geo = scene.grid, scene.grid.size, scene.geometry
    lat = scene.view == LATERAL
    base = geo["dome_base"]
    parts: list[tuple[Patch, float]] = []
    for device in f.devices or ("central line",):
        if device == "pacemaker":
            at = (-0.32, 0.2) if lat else (0.24, 0.17)
            parts.append((ellipse(g, *at, 0.035, 0.025, edge=1.5), 0.9))
            lead = [
                at,
                (at[0] * 0.4, 0.28),
                (-0.02 if lat else 0.0, base - 0.2),
                (-0.12 if lat else 0.08, base - 0.06),
            ]
            parts.append((polyline(g, lead, 0.003), 0.6))
        elif device == "sternotomy":
            for k in range(5):
                v = 0.24 + 0.07 * k
                at = (-0.29 + 0.01 * k, v) if lat else (0.0, v)
                parts.append((ellipse(g, *at, 0.006 if lat else 0.013, 0.007, edge=1), 0.8))
        elif device == "central line":
            path = [(-0.12, 0.08), (-0.05, 0.22), (-0.025, 0.38)]
            parts.append((polyline(g, [(p[0] * 0.2, p[1]) for p in path] if lat else path, 0.003), 0.45))
        elif device == "endotracheal tube":
            parts.append((segment(g, (0.0, -0.1), (0.0 if not lat else 0.03, 0.28), 0.006), 0.45))
        elif device == "nasogastric tube":
            path = [(0.0, -0.1), (0.02, 0.4), (0.06, base), (0.16, base + 0.08)]
            parts.append((polyline(g, [(p[0] + 0.12, p[1]) for p in path] if lat else path, 0.0035), 0.45))
    delta = np.zeros((size, size), F32)
    for p, level in parts:
        p.add_to(delta, level * (0.5 if f.certainty == Label.UNCERTAIN else 1.0))
    return result(delta, union(size, [p for p, _ in parts]), 0.3)


def granuloma(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small calcified (very bright) dot in the lung."""
    cu, cv = zone_centre(scene, (f.sides()[0]), f.zone, rng)
    dot = ellipse(scene.grid, cu, cv, 0.008, 0.008, edge=1).full(scene.grid.size)
    return result(F32(0.5) * dot, ellipse(scene.grid, cu, cv, 0.014, 0.014).full(scene.grid.size), 0.5)


def hiatal_hernia(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A retrocardiac round density with an air-fluid level (air cap above fluid)."""
    g, size, geo = scene.grid, scene.grid.size, scene.geometry
    r = 0.035 + 0.03 * STRENGTH[f.severity]
    cu, cv = (0.12, geo["dome_base"] - 0.05) if scene.view == LATERAL else (0.01, geo["dome_base"] - 0.06)
    sac = ellipse(g, cu, cv, r * 1.2, r, edge=2).full(size)
    _, v = g.coords()
    air = sac * (v < F32(cv - 0.2 * r)).astype(F32)
    return result(F32(0.1) * sac - F32(0.3) * air, sac, 0.5)


def _structure(key: str) -> Callable[[Scene, Finding, np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    """Mask of an anatomic finding: the structure that :func:`apply_to_body` changed (no overlay)."""

    def draw(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        region = scene.masks[key]
        return np.zeros_like(region), region > 0.3

    draw.__doc__ = f"The {key} region (the finding is drawn by the body parameters)."
    return draw


OVERLAYS: dict[str, Callable[[Scene, Finding, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "Atelectasis": atelectasis,
    "Cardiomegaly": _structure("heart"),
    "Consolidation": consolidation,
    "Edema": edema,
    "Enlarged Cardiomediastinum": _structure("mediastinum"),
    "Fracture": fracture,
    "Lung Lesion": lung_lesion,
    "Lung Opacity": lung_opacity,
    "Pleural Effusion": pleural_effusion,
    "Pleural Other": pleural_other,
    "Pneumonia": pneumonia,
    "Pneumothorax": pneumothorax,
    "Support Devices": support_devices,
    "granuloma": granuloma,
    "spine_degeneration": _structure("spine"),
    "scoliosis": _structure("spine"),
    "hyperinflation": _structure("lungs"),
    "aorta": _structure("aorta"),
    "hiatal_hernia": hiatal_hernia,
}
"""Finding name -> drawing function (every observation but No Finding, and every extra)."""
