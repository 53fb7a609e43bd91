"""One phantom study: sample findings, render the frontal and lateral views with masks, write the report."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rrg_core.observations import Label, LabelDict
from rrg_core.phantoms.anatomy import FRONTAL, LATERAL, VIEWS, Body, Scene, expose, sample_body
from rrg_core.phantoms.findings import (
    DEVICES,
    EXTRAS,
    OVERLAYS,
    SEVERITIES,
    ZONES,
    Finding,
    apply_to_body,
    visible,
)
from rrg_core.phantoms.frontal import render_frontal
from rrg_core.phantoms.lateral import render_lateral
from rrg_core.phantoms.reports import LUNG_FINDINGS, NEGATIVES, study_labels, write_report

# How often each observation is drawn among a study's findings (relative weights).
FINDING_WEIGHTS: dict[str, float] = {
    "Atelectasis": 1.0,
    "Cardiomegaly": 1.2,
    "Consolidation": 0.8,
    "Edema": 0.7,
    "Enlarged Cardiomediastinum": 0.5,
    "Fracture": 0.5,
    "Lung Lesion": 0.9,
    "Lung Opacity": 1.0,
    "Pleural Effusion": 1.2,
    "Pleural Other": 0.5,
    "Pneumonia": 0.8,
    "Pneumothorax": 0.8,
    "Support Devices": 0.9,
}
# How often an absent observation is still stated negative (IU-like reports name a few).
NEGATIVE_RATE: dict[str, float] = {
    "Cardiomegaly": 0.7,
    "Pleural Effusion": 0.6,
    "Pneumothorax": 0.6,
    "Consolidation": 0.45,
    "Enlarged Cardiomediastinum": 0.35,
    "Edema": 0.2,
    "Lung Lesion": 0.15,
    "Fracture": 0.15,
    "Lung Opacity": 0.1,
    "Pneumonia": 0.1,
    "Atelectasis": 0.05,
    "Pleural Other": 0.03,
}
_LATERALISED = {
    "Atelectasis",
    "Consolidation",
    "Lung Lesion",
    "Lung Opacity",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
}
_ONE_SIDED = {"Fracture", "Pneumothorax"}
_ZONED = {
    "Atelectasis",
    "Consolidation",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "Pleural Other",
    "Pneumonia",
}


@dataclass(frozen=True)
class StudySpec:
    """What a study shows and says: findings, extras (non-14), stated negatives, and the patient."""

    findings: tuple[Finding, ...]
    extras: tuple[Finding, ...]
    negatives: tuple[str, ...]
    body: Body

    def labels(self) -> LabelDict:
        """The labels the report states."""
        return study_labels(self.findings, self.negatives, self.extras)


@dataclass
class RenderedStudy:
    """Both views' images (float32 [0, 1]), body masks and finding masks (bool), by view name."""

    images: dict[str, np.ndarray]
    body_masks: dict[str, np.ndarray]
    masks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def sample_finding(name: str, rng: np.random.Generator, uncertain_rate: float = 0.15) -> Finding:
    """One finding of observation (or extra) ``name`` with random attributes where they apply."""
    certainty = (
        Label.UNCERTAIN if name != "Support Devices" and rng.random() < uncertain_rate else Label.POSITIVE
    )
    side = zone = severity = None
    if name in _LATERALISED:
        side = str(rng.choice(["right", "left", "bilateral"], p=[0.4, 0.4, 0.2]))
    elif name in _ONE_SIDED or name == "granuloma":
        side = str(rng.choice(["right", "left"]))
    if name in _ZONED or name == "granuloma":
        zone = str(rng.choice(ZONES))
    if name in ("Pleural Effusion", "Lung Lesion") and side == "bilateral":
        zone = "lower" if name == "Pleural Effusion" else zone
    if name not in ("Fracture", "Support Devices", "granuloma", "Pleural Other", "scoliosis"):
        severity = str(rng.choice(SEVERITIES))
    if name == "Pleural Other":
        severity = str(rng.choice(["moderate", "large"]))
    devices: tuple[str, ...] = ()
    if name == "Support Devices":
        count = int(rng.integers(1, 3))
        devices = tuple(
            str(d) for d in sorted(rng.choice(DEVICES, size=count, replace=False), key=DEVICES.index)
        )
    return Finding(name, certainty, side, zone, severity, devices)


def sample_study(
    rng: np.random.Generator, *, normal_rate: float = 0.35, extra_rate: float = 0.2
) -> StudySpec:
    """A random study: 0-3 findings, a few stated negatives, maybe a non-14 extra; never silent.

    A study with no finding and no extra states at least one negative, so its report is never empty.
    """
    body = sample_body(rng)
    names = list(FINDING_WEIGHTS)
    weights = np.array([FINDING_WEIGHTS[n] for n in names])
    count = 0 if rng.random() < normal_rate else int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    chosen = rng.choice(names, size=count, replace=False, p=weights / weights.sum()) if count else []
    findings = tuple(sample_finding(str(n), rng) for n in sorted(chosen, key=names.index))
    extras: tuple[Finding, ...] = ()
    present = {f.name for f in findings}
    if rng.random() < extra_rate:
        options = [e for e in EXTRAS if not (e == "granuloma" and "Lung Lesion" in present)]
        extras = (sample_finding(str(rng.choice(options)), rng, uncertain_rate=0.0),)
    if any(e.name == "granuloma" for e in extras):
        present.add("Lung Lesion")  # no "no nodules" beside a granuloma (kept from the old convention)
    rates = {**NEGATIVE_RATE, "Lung Opacity": 0.1 if present & LUNG_FINDINGS else 0.7}
    negatives = _sample_negatives(present, rates, rng)
    while not (findings or extras or negatives):
        # Nothing to state would make an empty report (about 1 study in 1,250), and a real report
        # always says something. Drawing again keeps the negatives' relative rates, and touches
        # the generator only for such studies, so every other study keeps its bytes.
        negatives = _sample_negatives(present, rates, rng)
    return StudySpec(findings, extras, negatives, body)


def _sample_negatives(
    present: set[str], rates: dict[str, float], rng: np.random.Generator
) -> tuple[str, ...]:
    return tuple(n for n in NEGATIVES if n not in present and rng.random() < rates.get(n, 0.0))


def render(size: int, b: Body, view: str) -> Scene:
    """Render one view of the normal anatomy."""
    if view == FRONTAL:
        return render_frontal(size, b)
    if view == LATERAL:
        return render_lateral(size, b)
    raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")


def render_study(
    spec: StudySpec, size: int, rng: np.random.Generator, views: tuple[str, ...] = VIEWS
) -> RenderedStudy:
    """Render ``views`` of a study with every finding and extra, and each one's mask where visible."""
    body = apply_to_body(spec.body, spec.findings + spec.extras)
    out = RenderedStudy({}, {})
    for view in views:
        scene = render(size, body, view)
        body_mask = scene.body_mask
        masks: dict[str, np.ndarray] = {}
        delta = np.zeros((size, size), np.float32)
        for f in spec.findings + spec.extras:
            if not visible(f.name, view):
                continue
            change, mask = OVERLAYS[f.name](scene, f, rng)
            delta += change
            masks[mask_name(f.name)] = mask & body_mask
        out.images[view] = expose(scene, rng, delta)
        out.body_masks[view] = body_mask
        out.masks[view] = masks
    return out


def mask_name(name: str) -> str:
    """File-name form of a finding name: spaces to underscores ("Pleural_Effusion", "granuloma")."""
    return name.replace(" ", "_")


def make_study(seed: int, index: int, size: int) -> tuple[StudySpec, RenderedStudy, str]:
    """Study ``index`` of the data set ``seed``: its own generator, so it depends on nothing else."""
    rng = np.random.default_rng([seed, index])
    spec = sample_study(rng)
    report = write_report(spec.findings, spec.extras, spec.negatives, rng)
    return spec, render_study(spec, size, rng), report
