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
from dataclasses import dataclass

import numpy as np

from rrg_core.data.phantoms.anatomy import FRONTAL, LATERAL, Body, Scene, _lung
from rrg_core.data.phantoms.draw import F32, Patch, ellipse, polyline, segment, soft, union
from rrg_core.observations import Label

SIDES = ("right", "left", "bilateral")
ZONES = ("upper", "mid", "lower")
SEVERITIES = ("mild", "moderate", "large")
DEVICES = ("pacemaker", "sternotomy", "central line", "endotracheal tube", "nasogastric tube")
EXTRAS = ("granuloma", "spine_degeneration", "scoliosis", "hyperinflation", "aorta", "hiatal_hernia")
_STRENGTH = {"mild": 0.55, "moderate": 0.8, "large": 1.0, None: 0.8}
_ZONE_FRACTION = {"upper": 0.2, "mid": 0.47, "lower": 0.75, None: 0.6}
UNCERTAIN_STRENGTH = 0.45  # hedged findings are drawn faint

# Where a finding can be seen; the others show in both views.
VISIBLE_IN: dict[str, tuple[str, ...]] = {
    "Pneumothorax": (FRONTAL,),
    "Fracture": (FRONTAL,),
    "Pleural Other": (FRONTAL,),
}


@dataclass(frozen=True)
class Finding:
    """One finding of a study: an observation (or an extra, see :data:`EXTRAS`) and its attributes."""

    name: str
    certainty: Label = Label.POSITIVE
    side: str | None = None  # right | left | bilateral (the patient's side)
    zone: str | None = None  # upper | mid | lower
    severity: str | None = None  # mild | moderate | large
    devices: tuple[str, ...] = ()

    @property
    def strength(self) -> float:
        """Drawing intensity factor: severity, times a faint factor when hedged."""
        factor = UNCERTAIN_STRENGTH if self.certainty == Label.UNCERTAIN else 1.0
        return _STRENGTH.get(self.severity, 0.8) * factor

    def sides(self) -> tuple[str, ...]:
        """The lungs it affects."""
        if self.side == "bilateral":
            return ("right", "left")
        return (self.side or "right",)


def visible(name: str, view: str) -> bool:
    """Whether a finding shows in ``view``."""
    return view in VISIBLE_IN.get(name, (FRONTAL, LATERAL))


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
            changes["scoliosis"] = (0.015 + 0.045 * s) * (1 if f.side != "left" else -1)
        elif f.name == "spine_degeneration":
            changes["osteophytes"] = 0.5 + 0.5 * s
        elif f.name == "aorta":
            changes["aorta"] = 0.6 + 0.4 * s
            changes["aorta_calcified"] = f.severity == "large"
    return dataclasses.replace(body, **changes)  # type: ignore[arg-type]


def _centre(scene: Scene, side: str, zone: str | None, rng: np.random.Generator) -> tuple[float, float]:
    """A point in the given lung and zone (jittered)."""
    geo = scene.geometry
    top, bottom = geo["lung_top"], geo["dome_base"] - 0.04
    v = top + (bottom - top) * (_ZONE_FRACTION[zone] + rng.uniform(-0.05, 0.05))
    if scene.view == LATERAL:
        return float(rng.uniform(-0.1, 0.12)), float(v)
    sign = -1.0 if side == "right" else 1.0
    return float(sign * geo["lung_cu"] * rng.uniform(0.9, 1.15)), float(v)


def _lung_of(scene: Scene, side: str) -> np.ndarray:
    if scene.view == LATERAL:
        return scene.masks["lungs"]
    return scene.masks[f"lung_{side}"] * (
        F32(1) - np.maximum(scene.masks["heart"], scene.masks["mediastinum"])
    )


def lung_half_width(geo: dict[str, float], v: float) -> float:
    """Half-width of a frontal lung at height ``v`` (the pear shape of anatomy._lung)."""
    top, rv, ru = geo["lung_top"], geo["lung_rv"], geo["lung_ru"]
    t = min(max((v - top) / (1.2 * rv), 0.0), 1.0)
    across = max(1.0 - ((v - top - rv) / rv) ** 2, 0.0) ** 0.5
    return ru * (0.45 + 0.55 * t**0.5) * across


def _result(delta: np.ndarray, region: np.ndarray, threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    return delta, region > threshold


def consolidation(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Lobar/segmental airspace opacity with air bronchograms, bounded by the lung."""
    size, delta, region = scene.grid.size, None, None
    for side in f.sides():
        cu, cv = _centre(scene, side, f.zone, rng)
        r = 0.05 + 0.05 * _STRENGTH[f.severity]
        blob = ellipse(scene.grid, cu, cv, r * 1.2, r, angle=rng.uniform(-0.5, 0.5), edge=10).full(size)
        blob *= _lung_of(scene, side)
        bronchi = segment(scene.grid, (cu - 0.3 * r, cv - 0.4 * r), (cu + 0.4 * r, cv + 0.5 * r), 0.004).full(
            size
        )
        d = F32(0.3 * f.strength) * blob * (F32(1) - F32(0.5) * bronchi)
        delta = d if delta is None else delta + d
        region = blob if region is None else np.maximum(region, blob)
    return _result(delta, region)


def pneumonia(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Patchy, confluent airspace opacity: a cluster of hazy blobs in a zone."""
    size = scene.grid.size
    region = np.zeros((size, size), F32)
    for side in f.sides():
        cu, cv = _centre(scene, side, f.zone, rng)
        spread = 0.04 + 0.04 * _STRENGTH[f.severity]
        patches = [
            ellipse(
                scene.grid,
                cu + rng.normal(0, spread),
                cv + rng.normal(0, spread * 0.7),
                spread * rng.uniform(0.5, 0.9),
                spread * rng.uniform(0.4, 0.8),
                edge=8,
            )
            for _ in range(4)
        ]
        region = np.maximum(region, union(size, patches) * _lung_of(scene, side))
    return _result(F32(0.28 * f.strength) * region, region)


def lung_opacity(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ill-defined patchy opacity, fainter than consolidation."""
    size = scene.grid.size
    region = np.zeros((size, size), F32)
    for side in f.sides():
        cu, cv = _centre(scene, side, f.zone, rng)
        patches = [
            ellipse(
                scene.grid,
                cu + rng.normal(0, 0.03),
                cv + rng.normal(0, 0.025),
                rng.uniform(0.02, 0.04),
                rng.uniform(0.015, 0.035),
                edge=6,
            )
            for _ in range(3)
        ]
        region = np.maximum(region, union(size, patches) * _lung_of(scene, side))
    return _result(F32(0.2 * f.strength) * region, region)


def atelectasis(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Linear / plate-like bands, near-horizontal, in the (default lower) zone."""
    size = scene.grid.size
    region = np.zeros((size, size), F32)
    zone = f.zone or "lower"
    for side in f.sides():
        cu, cv = _centre(scene, side, zone, rng)
        length = 0.05 + 0.05 * _STRENGTH[f.severity]
        tilt = rng.uniform(-0.2, 0.2)
        band = ellipse(scene.grid, cu, cv, length, 0.008 + 0.01 * _STRENGTH[f.severity], angle=tilt, edge=2.5)
        region = np.maximum(region, band.full(size) * _lung_of(scene, side))
    return _result(F32(0.3 * f.strength) * region, region)


def edema(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Perihilar (bat-wing) haze and septal Kerley B lines at the lateral bases, both lungs."""
    g, size, geo = scene.grid, scene.grid.size, scene.geometry
    hv = geo["hilum_v"]
    parts: list[Patch] = []
    if scene.view == FRONTAL:
        for sign in (-1.0, 1.0):
            parts.append(ellipse(g, sign * 0.13, hv + 0.03, 0.12, 0.16, edge=14))
            for k in range(4 + int(3 * _STRENGTH[f.severity])):  # Kerley B: short lines at the pleura
                v = geo["dome_base"] - 0.06 - 0.018 * k
                edge_u = sign * (geo["lung_cu"] + lung_half_width(geo, v) * 0.97)
                parts.append(segment(g, (edge_u, v), (edge_u - sign * 0.035, v), 0.0035, edge=1.2))
    else:
        parts.append(ellipse(g, 0.03, hv + 0.02, 0.16, 0.17, edge=14))
    region = union(size, parts) * scene.masks["lungs"]
    return _result(F32(0.22 * f.strength) * region, region, 0.25)


def pleural_effusion(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fluid in the dependent pleural space: a meniscus rising laterally, blunting the angle."""
    g, size, geo = scene.grid, scene.grid.size, scene.geometry
    u, v = g.coords()
    height = (geo["dome_base"] - geo["lung_top"]) * (0.1 + 0.35 * _STRENGTH[f.severity])
    region = np.zeros((size, size), F32)
    for side in f.sides():
        if scene.view == FRONTAL:
            sign = -1.0 if side == "right" else 1.0
            lateral = np.clip((u * F32(sign) - F32(0.02)) * F32(1 / (geo["lung_cu"] + geo["lung_ru"])), 0, 1)
            lung = _lung_of(scene, side)  # not over the heart: fluid replaces lung air
        else:
            lateral = np.clip((u + F32(0.2)) * F32(1 / 0.5), 0, 1)  # the meniscus rises posteriorly
            lung = scene.masks["lungs"]
        level = F32(geo["dome_base"] - height) - F32(height * 0.9) * lateral**3
        fluid = soft(v - level, 4 * g.px) * lung
        region = np.maximum(region, fluid)
    return _result(
        F32(0.34 * (0.7 + 0.3 * f.strength)) * region * F32(f.strength / _STRENGTH[f.severity]), region, 0.5
    )


def pneumothorax(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Air outside a partly collapsed lung: a thin pleural line, no markings beyond it, darker."""
    g, geo = scene.grid, scene.geometry
    u, v = g.coords()
    side = f.side if f.side in ("left", "right") else "right"
    sign = -1.0 if side == "right" else 1.0
    shrink = 1.0 - 0.35 * _STRENGTH[f.severity]  # the collapsed lung's linear scale
    hu, hv = sign * geo["lung_cu"] * 0.6, geo["dome_base"]
    cu = sign * geo["lung_cu"]
    collapsed = _lung(
        g, F32(hu) + (u - F32(hu)) * F32(1 / shrink), F32(hv) + (v - F32(hv)) * F32(1 / shrink), cu, geo, side
    )
    lung = scene.masks[f"lung_{side}"]
    region = np.clip(lung - collapsed, 0, 1) * (F32(1) - scene.masks["heart"])
    line = F32(4) * collapsed * (F32(1) - collapsed) * lung  # peaks on the visceral pleura
    faint = F32(f.strength / _STRENGTH[f.severity])
    delta = (-(scene.masks["markings"] * F32(0.07) + F32(0.09)) * region + F32(0.2) * line) * faint
    return _result(delta, region, 0.5)


def lung_lesion(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A round nodule (mild), a larger nodule (moderate) or a mass (large), well defined."""
    size = scene.grid.size
    region = np.zeros((size, size), F32)
    radius = {"mild": 0.015, "moderate": 0.028, "large": 0.055}.get(f.severity or "moderate", 0.028)
    for side in f.sides():
        cu, cv = _centre(scene, side, f.zone, rng)
        blob = ellipse(scene.grid, cu, cv, radius, radius * rng.uniform(0.85, 1.0), edge=2)
        region = np.maximum(region, blob.full(size))
    return _result(F32(0.32 * f.strength / _STRENGTH[f.severity]) * region, region, 0.5)


def _rib_v(a: float, index: int, scene: Scene) -> float:
    """Centre of posterior rib ``index`` at distance ``a`` from the midline (matches anatomy._ribs)."""
    spacing = 0.05 * scene.body.inspiration
    return 0.08 + 1.6 * (a - 0.12) ** 2 - 0.02 + (index + 0.5) * spacing


def fracture(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rib fracture: a lucent gap across a posterior rib with a small step and callus."""
    g, size = scene.grid, scene.grid.size
    side = f.side if f.side in ("left", "right") else "right"
    sign = -1.0 if side == "right" else 1.0
    index = {"upper": 3, "mid": 5, "lower": 7}.get(f.zone or "mid", 5) + int(rng.integers(-1, 2))
    a = scene.geometry["thorax"] / 2 * rng.uniform(0.72, 0.85)
    cv = _rib_v(a, index, scene)
    gap = segment(g, (sign * a, cv - 0.016), (sign * (a + 0.006), cv + 0.016), 0.0035, edge=1).full(size)
    callus = ellipse(g, sign * (a + 0.01), cv + 0.006, 0.012, 0.009, edge=2).full(size)
    delta = (F32(0.1) * callus - F32(0.18) * gap) * F32(f.strength / _STRENGTH[f.severity])
    region = ellipse(g, sign * a, cv, 0.03, 0.03, edge=1).full(size)
    return _result(delta, region, 0.5)


def pleural_other(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pleural thickening along the lateral chest wall, or a calcified plaque (large)."""
    g, size, geo = scene.grid, scene.grid.size, scene.geometry
    region = np.zeros((size, size), F32)
    for side in f.sides():
        sign = -1.0 if side == "right" else 1.0
        _, cv = _centre(scene, side, f.zone, rng)
        edge_u = sign * (geo["lung_cu"] + lung_half_width(geo, cv) * 0.93)
        band = ellipse(g, edge_u, cv, 0.014, 0.06 + 0.03 * _STRENGTH[f.severity], angle=-sign * 0.15, edge=2)
        region = np.maximum(region, band.full(size) * scene.masks[f"lung_{side}"])
    level = 0.5 if f.severity == "large" else 0.3
    return _result(F32(level * f.strength / _STRENGTH[f.severity]) * region, region)


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
    return _result(delta, union(size, [p for p, _ in parts]), 0.3)


def granuloma(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small calcified (very bright) dot in the lung."""
    cu, cv = _centre(scene, (f.sides()[0]), f.zone, rng)
    dot = ellipse(scene.grid, cu, cv, 0.008, 0.008, edge=1).full(scene.grid.size)
    return _result(F32(0.5) * dot, ellipse(scene.grid, cu, cv, 0.014, 0.014).full(scene.grid.size), 0.5)


def hiatal_hernia(scene: Scene, f: Finding, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A retrocardiac round density with an air-fluid level (air cap above fluid)."""
    g, size, geo = scene.grid, scene.grid.size, scene.geometry
    r = 0.035 + 0.03 * _STRENGTH[f.severity]
    cu, cv = (0.12, geo["dome_base"] - 0.05) if scene.view == LATERAL else (0.01, geo["dome_base"] - 0.06)
    sac = ellipse(g, cu, cv, r * 1.2, r, edge=2).full(size)
    _, v = g.coords()
    air = sac * (v < F32(cv - 0.2 * r)).astype(F32)
    return _result(F32(0.1) * sac - F32(0.3) * air, sac, 0.5)


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
