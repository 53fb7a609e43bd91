"""Mention extraction: where each observation is named in one (lower-cased) sentence.

The vocabulary is the CheXpert labeler's (``phrases/mention`` and ``phrases/unmention`` of
stanfordmlgroup/chexpert-labeler, see :mod:`rrg_core.labeler.conventions`), read as words rather than raw
substrings. Three kinds of mention come out of here:

* finding mentions ("cardiomegaly", "small effusion", "picc line"): their value is decided later by
  the negation/uncertainty context (:mod:`rrg_core.labeler.context`); ``hedged`` ones (vascular
  congestion, indistinctness, vascular prominence for Edema: CheXpert's post-negation uncertainty rules)
  are uncertain unless negated;
* statement mentions of the heart and mediastinum phrases (CheXpert's Cardiomegaly and Enlarged
  Cardiomediastinum lists: "heart size", "cardiac silhouette", "mediastinum", "contour", "mediastinal
  silhouette"...), whose value the statement about them fixes: normal / within or at the upper limits of
  normal / not enlarged 0; borderline -1; enlarged, widened, prominent 1; stable, unchanged, similar -1
  (CheXpert's rule for these phrases). A phrase with no such statement is not a mention here (CheXpert's
  substring match would read a bare "the heart" as positive: a kept departure);
* "other findings" (CheXpert's ``phrases/mention/no_finding.txt``: emphysema, granuloma, calcification,
  blunting, degenerative change, scoliosis, ...): no observation of their own, but a positive or uncertain
  one means the report is not "No Finding".

Kept exclusions, where a word names something outside the chest's 14 observations: pericardial (CheXpert's
unmention), joint and knee effusions; soft tissue edema; "mass effect"; "granulomatous infection" (old
granulomatous disease, not a pneumonia); a fractured sternotomy wire (a device, not a bone); "plate-like"
atelectasis, Kerley/septal/pleural lines and valve calcification (no device).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from rrg_core.labeler.conventions import DEFAULT_OPTIONS, LabelerOptions
from rrg_core.observations import Label

OTHER = "other finding"
"""Pseudo-observation of CheXpert's "other findings": they only block No Finding."""


@dataclass(frozen=True)
class Mention:
    """One observation named at ``start:end`` of a sentence; ``fixed`` is a value the wording settles."""

    observation: str
    start: int
    end: int
    fixed: Label | None = None
    hedged: bool = False


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


# Finding phrases per observation (CheXpert's lists; comments name what is not taken literally).
_FINDINGS: dict[str, re.Pattern[str]] = {
    "Atelectasis": _rx(r"\batelecta\w*", r"\bcollaps\w*"),
    "Cardiomegaly": _rx(r"\bcardiomegaly\b", r"\bcardiac enlargement\b", r"\benlarged heart\b"),
    "Consolidation": _rx(r"\bconsolidat\w*"),
    "Edema": _rx(r"\b(?<!soft tissue )edema\b", r"\bheart failure\b", r"\bchf\b"),
    # Not in CheXpert's list, but no reader would call them anything else (positive statements).
    "Enlarged Cardiomediastinum": _rx(
        r"\bmediastinal (?:widening|enlargement)\b",
        r"\bwidening of the (?:superior )?mediastinum\b",
        r"\benlarged cardiomediastinum\b",
    ),
    "Fracture": _rx(r"\bfractur\w*+(?!(?: \S+){0,4} (?:sternotomy|wires?|leads?|hardware))"),
    # "calcified nodul" is CheXpert's unmention (it also covers "non-calcified nodules").
    "Lung Lesion": _rx(
        r"\bmass(?:es|like|-like)?\b(?! effect)",
        r"(?<!calcified )\bnodules?\b",
        r"(?<!calcified )\bnodular (?:density|densities|opacity|opacities|opacification)\b",
        r"\blumps?\b",
        r"\bcavitary lesions?\b",
        r"\b(?:carcinoma|neoplasm|tumou?r)\w*",
    ),
    "Lung Opacity": _rx(
        r"\bopaci\w*",
        r"\bdecreased translucency\b",
        r"\bincreased density\b",
        r"\bair[- ]?space disease\b",
        r"\binfiltrat\w*",
        r"\binterstitial (?:markings?|pattern|lung)\b",
        r"\breticular (?:pattern|markings?)\b",
        r"\breticulation\b",
        r"\b(?:peribronchial|wall) thickening\b",
        r"\b(?<!pleural )(?<!pleural-)scar\w*",
    ),
    "Pleural Effusion": _rx(
        r"\b(?<!pericardial )(?<!joint )(?<!suprapatellar )(?<!knee )effusions?\b", r"\bpleural fluid\b"
    ),
    "Pleural Other": _rx(
        r"\bpleural thickening\b",
        r"\bfibrosis\b",
        r"\bfibrothorax\b",
        r"\bpleural(?:-| )(?:parenchymal )?scar\w*",
        r"\bpleuro-?(?:parenchymal|pericardial) scar\w*",
    ),
    "Pneumonia": _rx(r"\b(?:broncho)?pneumonias?\b", r"\b(?<!granulomatous )infect(?:ion|ions|ious)\b"),
    "Pneumothorax": _rx(r"\b(?:hydro)?pneumothora(?:x|ces|xes)\b"),
    "Support Devices": _rx(
        r"\bpace(?:maker|r)s?\b",
        r"\b(?<!kerley )(?<!kerley b )(?<!b-)(?<!septal )(?<!pleural )lines?\b",
        r"\bpicc\b",
        r"\btubes?\b",
        r"\bvalves?\b(?! calcifi)",
        r"\bcatheters?\b",
        r"\bhardware\b",
        r"\barthroplast\w*",
        r"\bmarkers?\b",
        r"\baicd\b|\bicds?\b",
        r"\bdefib\w*",
        r"\bdevices?\b",
        r"\bdrains?\b",
        r"\bplates?\b(?![- ]?like)",  # "plate-like", cleaned "plate like", "platelike"
        r"\bscrews?\b",
        r"\bcannula\w*",
        r"\bapparatus\b",
        r"\bcoils?\b",
        r"\bsupport\b",
        r"\bequipment\b",
        r"\bmediports?\b",
    ),
}
_HEDGED_EDEMA = _rx(
    r"\b(?:vascular|pulmonary|venous) congestion\b", r"\bindistinctness\b", r"\bvascular prominence\b"
)
_GRANULOMA = re.compile(r"\bgranulom\w*")  # LabelerOptions.granuloma_as_lesion
_CHF = re.compile(r"\bchf\b|\bheart failure\b")  # positive or uncertain: also Cardiomegaly -1 (CheXpert)

# CheXpert's phrases/mention/no_finding.txt (stems read from a word start).
_OTHER_FINDINGS = re.compile(
    r"\b(?:emphysema|blunt|density|elevation|eventration|scoliosis|degenera|calcifi|hyperinflat|bronchospasm"
    r"|asthma|hernia|copd|interstitial markings|plaque|osteophytosis|aortic disease|bronchiolitis"
    r"|airways disease|thickening|cephalization|aspiration|bullae|contusion|atherosclero|osteopenia"
    r"|metastasis|granuloma|pneumomediastinum|pneumoperitoneum|osteodystrophy|cuffing|irregular lucency"
    r"|inflam|fissure|hypertension|prominen|kyphosis|defib|hyperexpansion|bullet|reticula|thoracentesis"
    r"|bronchitis|volume loss|deformity|hemorrhage|hematoma|radiopaque|aerophagia|arthropathy"
    r"|tracheostomy)\w*"
)

# Cheap substring prefilter: an observation's regex runs only when one of its keys is in the sentence
# (most sentences name two or three observations, so most regexes are skipped). Keep in step with above.
_KEYS: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelecta", "collaps"),
    "Cardiomegaly": ("cardiomegaly", "enlarge"),
    "Consolidation": ("consolidat",),
    "Edema": ("edema", "failure", "chf"),
    "Enlarged Cardiomediastinum": ("mediastin",),
    "Fracture": ("fractur",),
    "Lung Lesion": ("mass", "nodul", "lump", "cavitary", "carcinoma", "neoplasm", "tumo"),
    "Lung Opacity": ("opaci", "translucency", "density", "space", "infiltrat", "interstitial", "reticul",
                     "thickening", "scar"),
    "Pleural Effusion": ("effusion", "pleural fluid"),
    "Pleural Other": ("pleura", "fibros", "fibrothorax"),
    "Pneumonia": ("pneumonia", "infect"),
    "Pneumothorax": ("pneumothora",),
    "Support Devices": ("pace", "line", "picc", "tube", "valve", "catheter", "hardware", "arthroplast",
                        "marker", "icd", "defib", "device", "drain", "plate", "screw", "cannula",
                        "apparatus", "coil", "support", "equipment", "mediport"),
}  # fmt: skip
_SIZE = "size"  # owner of the keys that call for the heart/mediastinum statement reading
_SIZE_KEYS = ("heart", "cardi", "mediastin", "contour")
_HEDGED = "hedged"
_HEDGED_KEYS = ("congestion", "indistinctness", "vascular prominence")
_KEY_OWNERS: dict[str, set[str]] = {}
for _owner, _keys in [*_KEYS.items(), (_SIZE, _SIZE_KEYS), (_HEDGED, _HEDGED_KEYS)]:
    for _key in _keys:
        _KEY_OWNERS.setdefault(_key, set()).add(_owner)
# One scan finds every key; longest first so "cardiomegaly" is not shadowed by "cardi".
_KEY_SCAN = re.compile("|".join(re.escape(k) for k in sorted(_KEY_OWNERS, key=len, reverse=True)))

# Heart and mediastinum phrases whose value comes from a statement in the same segment. CheXpert's
# positional unmentions ("over the heart", "in the left heart") are skipped.
_HEART = re.compile(
    r"(?<!over the )(?<!overlying the )(?<!in the )(?<!left )(?<!right )(?<!superior )"
    r"\b(?:heart|cardiac)(?: size| silhouette| shadow| contours?)?\b(?! failure)"
)
# "contour" alone is in CheXpert's list, so a "cardiac contour" is both observations' phrase.
_MEDIASTINUM = re.compile(
    r"\b(?:cardio ?)?mediastinum\b|\bcardio ?mediastinal\b|\bmediastinal (?:silhouettes?|configuration)\b"
    r"|\bpericardial silhouette\b|\bcontours?\b"
)
_STATEMENT = re.compile(
    r"(?P<neg>\bnot (?:\w+ )?(?:enlarged|widened)\b|\bnormal\b|\bunremarkable\b|\bwithin normal limits\b)"
    r"|(?P<unc>\bborderline\b)"
    r"|(?P<pos>\benlarge\w*|\blarge\b|\bincreased\b|\bwiden\w*|\bprominen\w*)"
    r"|(?P<stable>\bstable\b|\bunchanged\b|\bsimilar\b|\bnot (?:significantly )?changed\b|\bno \w* ?change\b)"
)
# Statements are read within one segment: commas and with/without separate them.
_SEGMENT = re.compile(r",|\bwith(?:out)?\b")

_FIXED = {"unc": Label.UNCERTAIN, "neg": Label.NEGATIVE, "pos": None, "stable": Label.UNCERTAIN}


def _segments(sentence: str) -> list[tuple[int, int]]:
    cuts = [0, *(m.start() for m in _SEGMENT.finditer(sentence)), len(sentence)]
    return list(itertools.pairwise(cuts))


def _statement(sentence: str, start: int, end: int, seg: tuple[int, int]) -> re.Match[str] | None:
    """The nearest size statement in the segment; "stable"-like ones only when there is no other."""
    matches = list(_STATEMENT.finditer(sentence, seg[0], seg[1]))
    sized = [m for m in matches if m.lastgroup != "stable"] or matches
    if not sized:
        return None
    return min(sized, key=lambda m: min(abs(m.start() - end), abs(start - m.end())))


def _size_mentions(sentence: str) -> list[Mention]:
    """Heart/mediastinum phrases with a statement: "heart size is normal", "stable mediastinal contours"."""
    found: list[Mention] = []
    segments = _segments(sentence)
    for pattern, observation in ((_HEART, "Cardiomegaly"), (_MEDIASTINUM, "Enlarged Cardiomediastinum")):
        for match in pattern.finditer(sentence):
            seg = next(s for s in segments if s[0] <= match.start() < s[1])
            statement = _statement(sentence, match.start(), match.end(), seg)
            if statement is None:
                continue
            fixed = _FIXED[statement.lastgroup or "pos"]
            found.append(Mention(observation, match.start(), match.end(), fixed))
    return found


def find_mentions(sentence: str, options: LabelerOptions = DEFAULT_OPTIONS) -> list[Mention]:
    """All mentions in a lower-cased sentence (``OTHER`` for CheXpert's other findings), in no order."""
    candidates: set[str] = set()
    for key in _KEY_SCAN.findall(sentence):
        candidates |= _KEY_OWNERS[key]
    found = [
        Mention(observation, m.start(), m.end())
        for observation in candidates
        if observation in _FINDINGS
        for m in _FINDINGS[observation].finditer(sentence)
    ]
    if _HEDGED in candidates:
        found += [Mention("Edema", m.start(), m.end(), hedged=True) for m in _HEDGED_EDEMA.finditer(sentence)]
    if _SIZE in candidates:
        found += _size_mentions(sentence)
    if options.granuloma_as_lesion and "granulom" in sentence:
        found += [Mention("Lung Lesion", m.start(), m.end()) for m in _GRANULOMA.finditer(sentence)]
    found += [Mention(OTHER, m.start(), m.end()) for m in _OTHER_FINDINGS.finditer(sentence)]
    return found


def implies_cardiomegaly(sentence: str, mention: Mention) -> bool:
    """CheXpert: a positive or uncertain "chf" / "heart failure" also makes Cardiomegaly uncertain."""
    return mention.observation == "Edema" and bool(_CHF.fullmatch(sentence, mention.start, mention.end))
