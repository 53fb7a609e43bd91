"""Report writing for phantoms (templates) and reading findings' attributes back from real reports.

The templates are the contract for a rule-based labeler: every finding sentence names exactly one
observation with its usual term (``pleural effusion``, ``pneumothorax``, ``cardiomegaly``...);
positives are plain statements, uncertain ones are hedged with ``possible``, ``may represent``,
``cannot be excluded`` or ``questionable``; negatives use ``no``/``normal``. Sentences that name no
observation ("The lungs are clear.", the non-14 extras) carry no label. :func:`study_labels` is what
such a labeler should recover.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from rrg_core.data.reports import raw_sentences
from rrg_core.observations import OBSERVATIONS, Label, LabelDict
from rrg_core.phantoms.findings import Finding

_LOBE = {
    ("right", "upper"): "right upper lobe",
    ("right", "mid"): "right middle lobe",
    ("right", "lower"): "right lower lobe",
    ("left", "upper"): "left upper lobe",
    ("left", "mid"): "left midlung",
    ("left", "lower"): "left lower lobe",
    ("bilateral", "upper"): "bilateral upper lobe",
    ("bilateral", "mid"): "bilateral midlung",
    ("bilateral", "lower"): "bilateral lower lobe",
}
_BASE = {"right": "right basilar", "left": "left basilar", "bilateral": "bibasilar"}
_SIZE = {"mild": "small", "moderate": "moderate", "large": "large"}
_DEGREE = {"mild": "mild", "moderate": "moderate", "large": "marked"}
_DEVICE = {
    "pacemaker": "left chest wall pacemaker",
    "sternotomy": "median sternotomy wires",
    "central line": "right internal jugular central venous catheter",
    "endotracheal tube": "endotracheal tube",
    "nasogastric tube": "nasogastric tube",
}
_ORDINAL = {"upper": "fourth", "mid": "sixth", "lower": "eighth"}
NOT_CHEXPERT_DEVICES = frozenset({"sternotomy"})
"""Devices whose report words are not in CheXpert's Support Devices list (sternotomy wires)."""
OTHER_FINDING_EXTRAS = frozenset(
    {"granuloma", "spine_degeneration", "scoliosis", "hyperinflation", "hiatal_hernia"}
)
"""Extras whose sentences name one of CheXpert's other findings: not an observation, but not No Finding."""

NEGATIVES: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("There is no atelectasis.", "No atelectasis."),
    "Cardiomegaly": (
        "The heart size is normal.",
        "Heart size is within normal limits.",
        "The heart is normal in size.",
        "No cardiomegaly.",
    ),
    "Consolidation": ("No focal consolidation.", "There is no focal airspace consolidation."),
    "Edema": ("No pulmonary edema.", "There is no edema."),
    "Enlarged Cardiomediastinum": ("The mediastinum is not widened.", "Mediastinal contours are normal."),
    "Fracture": ("No acute rib fracture.", "No displaced fracture is seen."),
    "Lung Lesion": ("No suspicious pulmonary nodule or mass.", "No pulmonary nodules."),
    "Lung Opacity": ("No focal opacity.", "There is no focal airspace opacity."),
    "Pleural Effusion": ("No pleural effusion.", "There is no pleural effusion.", "No pleural effusions."),
    "Pleural Other": ("No pleural thickening.",),
    "Pneumonia": ("No evidence of pneumonia.",),
    "Pneumothorax": ("No pneumothorax.", "There is no pneumothorax."),
}
"""Negative statements; each names only its observation (the labeler should read 0 there)."""

LUNGS_CLEAR = (
    "The lungs are clear without focal opacity.",
    "Lungs are clear bilaterally without airspace disease.",
)
"""Lung Opacity negatives ("clear" alone names no observation in CheXpert's lists), used only when no lung
finding is stated."""
CARDIOMEDIASTINAL_NORMAL = (
    "The heart and cardiomediastinal silhouette are within normal limits.",
    "Normal heart size and cardiomediastinal silhouette.",
)
"""Negative for both Cardiomegaly and Enlarged Cardiomediastinum at once."""

_HEDGES = ("Possible {np}.", "Findings may represent {np}.", "{Np} cannot be excluded.", "Questionable {np}.")
_STATEMENTS = ("There is {np}.", "{Np}.", "{Np} is noted.", "{Np} is present.")
_ORGAN_ORDER = (
    "Cardiomegaly",
    "Enlarged Cardiomediastinum",
    "aorta",
    "hiatal_hernia",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Lung Opacity",
    "Atelectasis",
    "Lung Lesion",
    "granuloma",
    "hyperinflation",
    "Pleural Effusion",
    "Pneumothorax",
    "Pleural Other",
    "Fracture",
    "spine_degeneration",
    "scoliosis",
    "Support Devices",
    "clear",
)
LUNG_FINDINGS = frozenset(
    {
        "Atelectasis",
        "Consolidation",
        "Edema",
        "Lung Lesion",
        "Lung Opacity",
        "Pneumonia",
        "Pneumothorax",
        "Pleural Effusion",
        "Pleural Other",
    }
)


def _where(f: Finding, rng: np.random.Generator) -> str:
    side, zone = f.side or "right", f.zone or "lower"
    if zone == "lower" and rng.random() < 0.4:
        return _BASE[side]
    return _LOBE[(side, zone)]


def noun_phrase(f: Finding, rng: np.random.Generator) -> str:
    """The finding as a noun phrase, e.g. "small left pleural effusion", "right lower lobe pneumonia"."""
    sev, side = f.severity or "moderate", f.side or "right"
    name = f.name
    if name == "Atelectasis":
        return f"{rng.choice(['', 'plate-like ', 'linear '])}{_where(f, rng)} atelectasis".strip()
    if name == "Cardiomegaly":
        return f"{_DEGREE[sev]} cardiomegaly"
    if name == "Consolidation":
        return f"{_where(f, rng)} consolidation"
    if name == "Edema":
        return f"{_DEGREE[sev]} pulmonary edema"
    if name == "Enlarged Cardiomediastinum":
        return f"{_DEGREE[sev]} mediastinal widening"
    if name == "Fracture":
        return f"{side} {_ORDINAL[f.zone or 'mid']} rib fracture"
    if name == "Lung Lesion":
        kind = "mass" if sev == "large" else "nodule"
        return f"{'small ' if sev == 'mild' else ''}{_LOBE[(side, f.zone or 'upper')]} {kind}"
    if name == "Lung Opacity":
        return f"patchy {_where(f, rng)} opacity"
    if name == "Pleural Effusion":
        plural = "s" if side == "bilateral" else ""
        return f"{_SIZE[sev]} {side} pleural effusion{plural}"
    if name == "Pleural Other":
        return f"{side} {'extensive pleural thickening' if sev == 'large' else 'pleural thickening'}"
    if name == "Pneumonia":
        return f"{_where(f, rng)} pneumonia"
    if name == "Pneumothorax":
        return f"{_SIZE[sev]} {side} pneumothorax"
    if name == "Support Devices":
        return " and ".join(_DEVICE[d] for d in (f.devices or ("central line",)))
    raise ValueError(f"no report template for finding {name!r}")


def _extra_sentence(f: Finding, rng: np.random.Generator) -> str:
    options = {
        "granuloma": [f"Calcified granuloma in the {_LOBE[(f.side or 'right', f.zone or 'upper')]}."],
        "spine_degeneration": [
            "Degenerative changes of the thoracic spine.",
            "Degenerative thoracic spondylosis.",
        ],
        "scoliosis": ["Mild scoliosis of the thoracic spine.", "There is thoracic scoliosis."],
        "hyperinflation": ["The lungs are hyperinflated.", "Hyperexpanded lungs consistent with emphysema."],
        "aorta": ["The thoracic aorta is tortuous.", "Tortuous thoracic aorta."],
        "hiatal_hernia": ["Small hiatal hernia.", "There is a hiatal hernia."],
    }[f.name]
    return str(rng.choice(options))


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def finding_sentence(f: Finding, rng: np.random.Generator) -> str:
    """One sentence stating (or hedging) a finding."""
    np_ = noun_phrase(f, rng)
    if f.name == "Cardiomegaly" and f.certainty == Label.POSITIVE and rng.random() < 0.4:
        return f"The heart is {_DEGREE[f.severity or 'moderate']}ly enlarged."
    templates = _HEDGES if f.certainty == Label.UNCERTAIN else _STATEMENTS
    template = str(rng.choice(templates))
    return template.replace("{Np}", _capital(np_)).replace("{np}", np_)


def write_report(
    findings: tuple[Finding, ...],
    extras: tuple[Finding, ...],
    negatives: tuple[str, ...],
    rng: np.random.Generator,
) -> str:
    """A report stating ``findings`` (positive or hedged), ``extras`` and the ``negatives``."""
    parts: list[tuple[str, str]] = [(f.name, finding_sentence(f, rng)) for f in findings]
    parts += [(f.name, _extra_sentence(f, rng)) for f in extras]
    negs = list(negatives)
    if "Cardiomegaly" in negs and "Enlarged Cardiomediastinum" in negs and rng.random() < 0.5:
        negs.remove("Cardiomegaly")
        negs.remove("Enlarged Cardiomediastinum")
        parts.append(("Cardiomegaly", str(rng.choice(CARDIOMEDIASTINAL_NORMAL))))
    lungs_stated = any(f.name in LUNG_FINDINGS for f in findings)
    if "Lung Opacity" in negs and not lungs_stated and rng.random() < 0.8:
        negs.remove("Lung Opacity")
        parts.append(("clear", str(rng.choice(LUNGS_CLEAR))))
    if "Pneumothorax" in negs and "Pleural Effusion" in negs and rng.random() < 0.5:
        negs.remove("Pneumothorax")
        negs.remove("Pleural Effusion")
        parts.append(
            (
                "Pleural Effusion",
                str(
                    rng.choice(
                        ["No pneumothorax or pleural effusion.", "No pleural effusion or pneumothorax."]
                    )
                ),
            )
        )
    parts += [(name, str(rng.choice(NEGATIVES[name]))) for name in negs]
    if rng.random() < 0.6:
        parts.sort(key=lambda p: _ORGAN_ORDER.index(p[0]) if p[0] in _ORGAN_ORDER else 0)
    else:
        parts = [parts[i] for i in rng.permutation(len(parts))]
    return " ".join(sentence for _, sentence in parts)


def study_labels(
    findings: tuple[Finding, ...], negatives: tuple[str, ...], extras: tuple[Finding, ...] = ()
) -> LabelDict:
    """The labels the report states: 1 / -1 for findings, 0 for negatives, derived No Finding."""
    labels: LabelDict = dict.fromkeys(OBSERVATIONS)
    for name in negatives:
        labels[name] = Label.NEGATIVE
    for f in findings:
        if f.name == "Support Devices" and set(f.devices or ("central line",)) <= NOT_CHEXPERT_DEVICES:
            continue
        labels[f.name] = f.certainty
    abnormal = any(e.name in OTHER_FINDING_EXTRAS for e in extras) or any(
        labels[n] in (Label.POSITIVE, Label.UNCERTAIN)
        for n in OBSERVATIONS
        if n not in ("No Finding", "Support Devices")
    )
    labels["No Finding"] = None if abnormal else Label.POSITIVE
    return labels


# ---- reading attributes back from a real report -------------------------------------------------

_NEGATED = re.compile(r"^\s*(no|without|negative for|there is no|there are no)\b", re.I)
_EXTRA_PATTERNS = {
    "granuloma": re.compile(r"granulom", re.I),
    "spine_degeneration": re.compile(r"degenerative|spondylo|osteophyt", re.I),
    "scoliosis": re.compile(r"scolio", re.I),
    "hyperinflation": re.compile(r"hyperinfla|hyperexpan|emphysema|copd|flattened diaphragm", re.I),
    "aorta": re.compile(
        r"tortuous|ectatic|unfold|(calcifi\w+|atherosclero\w+)[^.]*aort|aort[^.]*calcifi", re.I
    ),
    "hiatal_hernia": re.compile(r"hiatal hernia|hiatus hernia", re.I),
}
_DEVICE_PATTERNS = {
    "pacemaker": re.compile(r"pacemaker|pacer|defibrillator|\bicd\b|\bleads?\b", re.I),
    "sternotomy": re.compile(r"sternotomy|sternal wires|cabg", re.I),
    "central line": re.compile(r"catheter|\bline\b|\bport\b|picc", re.I),
    "endotracheal tube": re.compile(r"endotracheal|\bett?\b", re.I),
    "nasogastric tube": re.compile(r"nasogastric|\bng\b|feeding tube|enteric", re.I),
}


# Checked in order: the first pattern found in the sentence gives the attribute.
_ZONE_WORDS = (
    ("upper", r"upper|apex|apical"),
    ("mid", r"middle|\bmid|lingul|perihilar"),
    ("lower", r"lower|base|basilar|basal|retrocardiac"),
)
_SEVERITY_WORDS = (
    ("large", r"large|severe|marked|extensive|massive"),
    ("moderate", r"moderate"),
    ("mild", r"small|mild|minimal|trace|tiny|subtle|borderline"),
)


def _first_match(text: str, choices: tuple[tuple[str, str], ...]) -> str | None:
    """The value of the first (value, pattern) pair whose pattern occurs in ``text``."""
    return next((value for value, pattern in choices if re.search(pattern, text)), None)


def parse_attributes(name: str, text: str) -> dict[str, str | None]:
    """Side, zone and severity words of a finding from the sentences that mention it."""
    t = text.lower()
    left, right = bool(re.search(r"\bleft\b", t)), bool(re.search(r"\bright\b", t))
    if re.search(r"bilateral|both|bibasilar|bibasal", t) or (left and right):
        side: str | None = "bilateral"
    else:
        side = "left" if left else "right" if right else None
    zone = _first_match(t, _ZONE_WORDS)
    severity = _first_match(t, _SEVERITY_WORDS)
    return {"side": side, "zone": zone, "severity": severity}


def findings_from_labels(
    labels: Mapping[str, Label | None], sentences: Mapping[str, tuple[str, ...]], report: str
) -> tuple[tuple[Finding, ...], tuple[Finding, ...]]:
    """Findings (from a labeler's labels and sentences) and extras (keywords) of a real report."""
    findings = []
    for name in OBSERVATIONS:
        value = labels.get(name)
        if name == "No Finding" or value not in (Label.POSITIVE, Label.UNCERTAIN):
            continue
        text = " ".join(sentences.get(name, ())) or report
        said = sentences.get(name, ())
        if name == "Lung Lesion" and said and all(_EXTRA_PATTERNS["granuloma"].search(x) for x in said):
            continue  # drawn as the granuloma extra below
        attrs = parse_attributes(name, text)
        devices = (
            tuple(d for d, p in _DEVICE_PATTERNS.items() if p.search(text))
            if name == "Support Devices"
            else ()
        )
        findings.append(Finding(name, Label(value), attrs["side"], attrs["zone"], attrs["severity"], devices))
    extras = []
    for sentence in raw_sentences(report):
        if _NEGATED.search(sentence):
            continue
        for key, pattern in _EXTRA_PATTERNS.items():
            if pattern.search(sentence) and all(e.name != key for e in extras):
                attrs = parse_attributes(key, sentence)
                extras.append(Finding(key, Label.POSITIVE, attrs["side"], attrs["zone"], attrs["severity"]))
    return tuple(findings), tuple(extras)
