"""Mention extraction: where each observation is named in one (lower-cased) sentence.

Two kinds of mention come out of here:

* finding mentions ("cardiomegaly", "small effusion", "picc line"): their value is decided later by
  the negation/uncertainty context (:mod:`rrg_core.labeler.context`);
* statement mentions whose value the wording itself fixes: "heart size is normal" (Cardiomegaly
  negative), "borderline heart size" (Cardiomegaly uncertain), "the lungs are clear" (Lung Opacity
  negative), "costophrenic angles are sharp" (Pleural Effusion negative).

Conventions (see the package docstring for the full list): a granuloma is a Lung Lesion, scarring is a
Lung Opacity, a nodular opacity/density is a Lung Lesion (not also a Lung Opacity), emphysema and
tortuous aorta name no CheXpert observation, costophrenic blunting is a Pleural Effusion.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from rrg_core.observations import Label


@dataclass(frozen=True)
class Mention:
    """One observation named at ``start:end`` of a sentence; ``fixed`` is a value the wording settles."""

    observation: str
    start: int
    end: int
    fixed: Label | None = None


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


# Finding phrases per observation. Word boundaries matter: "pneumothorax" inside "hydropneumothorax"
# is wanted, but "effusion" inside "pericardial effusion" is not a pleural effusion.
_FINDINGS: dict[str, re.Pattern[str]] = {
    "Atelectasis": _rx(r"\batelecta\w*", r"\bcollapsed?\b"),
    "Cardiomegaly": _rx(r"\bcardiomegaly\b", r"\bcardiac enlargement\b", r"\benlarged heart\b"),
    "Consolidation": _rx(r"\bconsolidat\w*"),
    "Edema": _rx(
        r"\b(?<!soft tissue )edema\b",
        r"\b(?:vascular|pulmonary|venous) congestion\b",
        r"\b(?:congestive )?(?:heart|cardiac) failure\b",
        r"\bchf\b",
        r"\bfluid overload\b",
    ),
    "Enlarged Cardiomediastinum": _rx(
        r"\bmediastinal (?:widening|enlargement)\b",
        r"\bwidening of the (?:superior )?mediastinum\b",
        r"\benlarged cardiomediastinum\b",
    ),
    # "fracture of the sternotomy wire" is a broken device, not a broken bone.
    "Fracture": _rx(r"\bfractur\w*+(?!(?: \S+){0,4} (?:sternotomy|wires?|leads?|hardware))"),
    "Lung Lesion": _rx(
        r"\bnodul\w*",
        r"\bmass(?:es)?\b(?! effect)",
        r"\bgranulom\w*",
        r"\b(?<!rib )(?<!bony )(?<!osseous )(?<!lytic )(?<!sclerotic )(?<!skin )lesions?\b",
        r"\b(?:tumou?r|neoplasm|carcinoma|malignan\w*|metasta\w*)\b",
    ),
    "Lung Opacity": _rx(
        r"\b(?<!nodular )opaci\w*",
        r"\bair ?space (?:disease|process)",
        r"\binfiltrat\w*",
        r"\b(?<!pleural )scar(?:s|ring|red)?\b",
    ),
    "Pleural Effusion": _rx(
        r"\b(?<!pericardial )(?<!joint )(?<!suprapatellar )(?<!knee )effusions?\b",
        r"\b(?<!fluid )(?<!pericardial )fluid\b(?! overload)",
        r"\bhydro(?:pneumo)?thorax\b",
        r"\bblunt\w*(?: of)?(?: the| both| bilateral| \w+){0,3} (?:costophrenic|sulc\w+|recess\w*|angles?)",
        r"\b(?:costophrenic|sulc\w+|recess\w*)(?: \w+){0,2} blunt\w*",
    ),
    "Pleural Other": _rx(
        r"\bpleural (?:\w+ )?(?:thicken\w*|plaques?|scar\w*|calcifications?|fibrosis)",
        r"\bcalcified pleura\w*",
        r"\bfibrothorax\b",
        r"\bapical caps?\b",
    ),
    "Pneumonia": _rx(
        r"\b(?:broncho)?pneumonias?\b", r"\bpneumonitis\b", r"\b(?<!granulomatous )infect(?:ion|ious)\b"
    ),
    "Pneumothorax": _rx(r"\b(?:hydro)?pneumothora(?:x|ces|xes)\b"),
    "Support Devices": _rx(
        r"\b(?:pace(?:maker|r)s?|defibrillators?|aicd|icd)\b",
        r"\bcatheters?\b",
        r"\btubes?\b",
        r"\b(?:picc|central|venous|arterial|dialysis|jugular|subclavian|support|monitoring) lines?\b",
        r"\blines and tubes\b",
        r"\bpicc\b",
        r"\bsternotomy\b",
        r"\bcabg\b",
        r"\bclips?\b",
        r"\bstents?\b",
        r"\b(?:medi)?port\b",
        r"\bport-?a-?cath\b",
        r"\bvalve (?:replacement|prosthesis)\b",
        r"\bprosthetic valve\b",
        r"\b(?:hardware|prosthes[ie]s|prosthetic|arthroplasty|devices?|electrodes?"
        r"|(?:ekg |pacer |pacing )?leads|sternal wires?)\b",
    ),
}

# Cheap substring prefilter: an observation's regex runs only when one of its keys is in the sentence
# (most sentences name two or three observations, so most regexes are skipped). Keep in step with above.
_KEYS: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelecta", "collapse"),
    "Cardiomegaly": ("cardiomegaly", "enlarge"),
    "Consolidation": ("consolidat",),
    "Edema": ("edema", "congestion", "failure", "chf", "overload"),
    "Enlarged Cardiomediastinum": ("mediastin",),
    "Fracture": ("fractur",),
    "Lung Lesion": (
        "nodul",
        "mass",
        "granulom",
        "lesion",
        "tumo",
        "neoplasm",
        "carcinoma",
        "malignan",
        "metasta",
    ),
    "Lung Opacity": ("opaci", "space", "infiltrat", "scar"),
    "Pleural Effusion": ("effusion", "fluid", "hydro", "blunt"),
    "Pleural Other": ("pleura", "fibrothorax", "apical cap"),
    "Pneumonia": ("pneumoni", "infect"),
    "Pneumothorax": ("pneumothora",),
    "Support Devices": (
        "pace",
        "defibrillator",
        "icd",
        "catheter",
        "tube",
        "line",
        "picc",
        "sternotomy",
        "cabg",
        "clip",
        "stent",
        "port",
        "valve",
        "hardware",
        "prosthe",
        "arthroplasty",
        "device",
        "electrode",
        "leads",
        "wire",
    ),
}
_SIZE = "size"  # owner of the keys that call for the heart/mediastinum size reading
_SIZE_KEYS = ("heart", "cardi", "mediastin", "cardiomegaly")
_KEY_OWNERS: dict[str, set[str]] = {}
for _owner, _keys in [*_KEYS.items(), (_SIZE, _SIZE_KEYS)]:
    for _key in _keys:
        _KEY_OWNERS.setdefault(_key, set()).add(_owner)
# One scan finds every key; longest first so "cardiomegaly" is not shadowed by "cardi".
_KEY_SCAN = re.compile("|".join(re.escape(k) for k in sorted(_KEY_OWNERS, key=len, reverse=True)))

# A pleural-context "thickening" ("effusion versus thickening") is Pleural Other; elsewhere the word
# is usually fissural or bronchial wall thickening, which is not.
_BARE_THICKENING = re.compile(r"\b(?<!fissural )(?<!wall )(?<!interstitial )(?<!pleural )thickening\b")

# A nodular opacity/density is a lesion (the opacity pattern above skips it via its look-behind).
_NODULAR = re.compile(r"\bnodular (?:opaci\w*|densit\w*)")

# Heart and mediastinum phrases whose value comes from a size predicate in the same segment.
_HEART = re.compile(r"\b(?:heart|cardiac)(?: size| silhouette| shadow| contours?)?\b")
_MEDIASTINUM = re.compile(
    r"\bmediastinum\b|\bmediastinal (?:and hilar )?(?:contours?|silhouettes?|structures|width)\b"
)
_CARDIOMEDIASTINAL = re.compile(
    r"\bcardio ?mediastinal(?: silhouettes?| contours?)?\b|\bcardiopulmonary (?:mediastinal )?silhouettes?\b"
)
_SIZE_PREDICATE = re.compile(
    r"(?P<unc>\bborderline\b|\bupper (?:limits? )?(?:of )?normal\b|\btop (?:of )?normal\b)"
    r"|(?P<neg>\bnot (?:\w+ )?(?:enlarged|widened)\b|\bnormal\b|\bunremarkable\b|\bwithin normal limits\b)"
    r"|(?P<pos>\benlarge\w*|\blarge\b|\bincreased\b|\bwiden\w*|\bprominen\w*)"
)
# Size predicates are read within one segment: commas and with/without separate them.
_SEGMENT = re.compile(r",|\bwith(?:out)?\b")

_LUNGS_CLEAR = re.compile(r"\blungs?\b(?: \w+){0,4}? clear\b|\bclear lungs?\b")
_ANGLES_SHARP = re.compile(r"\b(?:costophrenic|sulc\w+)(?: \w+){0,3} (?:sharp|clear|preserved)\b")
# "The pleural spaces are clear": no fluid and no air in the pleura.
_PLEURA_CLEAR = re.compile(r"\bpleural spaces?\b(?: \w+){0,3}? (?:clear|normal|unremarkable)\b")

_FIXED = {"unc": Label.UNCERTAIN, "neg": Label.NEGATIVE, "pos": None}


def _segments(sentence: str) -> list[tuple[int, int]]:
    cuts = [0, *(m.start() for m in _SEGMENT.finditer(sentence)), len(sentence)]
    return list(itertools.pairwise(cuts))


def _nearest_predicate(sentence: str, start: int, end: int, seg: tuple[int, int]) -> re.Match[str] | None:
    matches = list(_SIZE_PREDICATE.finditer(sentence, seg[0], seg[1]))
    if not matches:
        return None
    return min(matches, key=lambda m: min(abs(m.start() - end), abs(start - m.end())))


def _size_mentions(sentence: str) -> list[Mention]:
    """Heart/mediastinum phrases with a size predicate: "heart size is normal", "widened mediastinum"."""
    found: list[Mention] = []
    segments = _segments(sentence)
    phrase_sets = (
        (_CARDIOMEDIASTINAL, ("Cardiomegaly", "Enlarged Cardiomediastinum")),
        (_HEART, ("Cardiomegaly",)),
        (_MEDIASTINUM, ("Enlarged Cardiomediastinum",)),
    )
    taken: list[tuple[int, int]] = []
    for pattern, observations in phrase_sets:
        for match in pattern.finditer(sentence):
            if any(s <= match.start() < e for s, e in taken):
                continue  # "cardiomediastinal" already read; do not read its "mediastinal" again
            taken.append(match.span())
            seg = next(s for s in segments if s[0] <= match.start() < s[1])
            predicate = _nearest_predicate(sentence, match.start(), match.end(), seg)
            if predicate is None:
                continue
            fixed = _FIXED[predicate.lastgroup or "pos"]
            for observation in observations:
                found.append(Mention(observation, match.start(), match.end(), fixed))
    return found


def find_mentions(sentence: str) -> list[Mention]:
    """All mentions in a lower-cased sentence, in no particular order."""
    candidates: set[str] = set()
    for key in _KEY_SCAN.findall(sentence):
        candidates |= _KEY_OWNERS[key]
    found = [
        Mention(observation, m.start(), m.end())
        for observation in candidates
        if observation != _SIZE
        for m in _FINDINGS[observation].finditer(sentence)
    ]
    if "nodular" in sentence:
        found += [Mention("Lung Lesion", m.start(), m.end()) for m in _NODULAR.finditer(sentence)]
    if "pleural" in sentence:
        found += [Mention("Pleural Other", m.start(), m.end()) for m in _BARE_THICKENING.finditer(sentence)]
    if _SIZE in candidates:
        found += _size_mentions(sentence)
    found += [
        Mention("Lung Opacity", m.start(), m.end(), Label.NEGATIVE) for m in _LUNGS_CLEAR.finditer(sentence)
    ]
    found += [
        Mention("Pleural Effusion", m.start(), m.end(), Label.NEGATIVE)
        for m in _ANGLES_SHARP.finditer(sentence)
    ]
    if "pleural space" in sentence:
        found += [
            Mention(observation, m.start(), m.end(), Label.NEGATIVE)
            for m in _PLEURA_CLEAR.finditer(sentence)
            for observation in ("Pleural Effusion", "Pneumothorax")
        ]
    return found
