"""What every finding overlay shares: the :class:`Finding`, its attributes, and where to put it.

Kept apart from :mod:`.findings` (the drawing functions) so that each stays short.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rrg_core.observations import Label
from rrg_core.phantoms.anatomy import FRONTAL, LATERAL, Scene
from rrg_core.phantoms.draw import F32

SIDES = ("right", "left", "bilateral")
ZONES = ("upper", "mid", "lower")
SEVERITIES = ("mild", "moderate", "large")
DEVICES = ("pacemaker", "sternotomy", "central line", "endotracheal tube", "nasogastric tube")
EXTRAS = ("granuloma", "spine_degeneration", "scoliosis", "hyperinflation", "aorta", "hiatal_hernia")
STRENGTH = {"mild": 0.55, "moderate": 0.8, "large": 1.0, None: 0.8}
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
        return STRENGTH.get(self.severity, 0.8) * factor

    def sides(self) -> tuple[str, ...]:
        """The lungs it affects."""
        if self.side == "bilateral":
            return ("right", "left")
        return (self.side or "right",)


def visible(name: str, view: str) -> bool:
    """Whether a finding shows in ``view``."""
    return view in VISIBLE_IN.get(name, (FRONTAL, LATERAL))


def zone_centre(scene: Scene, side: str, zone: str | None, rng: np.random.Generator) -> tuple[float, float]:
    """A point in the given lung and zone (jittered)."""
    geo = scene.geometry
    top, bottom = geo["lung_top"], geo["dome_base"] - 0.04
    v = top + (bottom - top) * (_ZONE_FRACTION[zone] + rng.uniform(-0.05, 0.05))
    if scene.view == LATERAL:
        return float(rng.uniform(-0.1, 0.12)), float(v)
    sign = -1.0 if side == "right" else 1.0
    return float(sign * geo["lung_cu"] * rng.uniform(0.9, 1.15)), float(v)


def open_lung(scene: Scene, side: str) -> np.ndarray:
    """The open lung of one side (not behind the heart or mediastinum), computed once a scene."""
    if scene.view == LATERAL:
        return scene.masks["lungs"]
    key = f"open_lung_{side}"
    if key not in scene.cache:
        solid = np.maximum(scene.masks["heart"], scene.masks["mediastinum"])
        scene.cache[key] = scene.masks[f"lung_{side}"] * (F32(1) - solid)
    return scene.cache[key]


def lung_half_width(geo: dict[str, float], v: float) -> float:
    """Half-width of a frontal lung at height ``v`` (the pear shape of anatomy._lung)."""
    top, rv, ru = geo["lung_top"], geo["lung_rv"], geo["lung_ru"]
    t = min(max((v - top) / (1.2 * rv), 0.0), 1.0)
    across = max(1.0 - ((v - top - rv) / rv) ** 2, 0.0) ** 0.5
    return ru * (0.45 + 0.55 * t**0.5) * across


def result(delta: np.ndarray, region: np.ndarray, threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    return delta, region > threshold
