"""Negation and uncertainty: the value a finding mention takes from the words around it.

A sentence is cut into clauses at scope breakers ("but", "however", "which", ";", "there is" ...).
Within a clause:

* a pre-trigger ("no", "without", "negative for", "free of", "clear of", "may", "possible",
  "versus" ...) governs the mentions after it, up to the clause end (so lists such as
  "no pneumothorax, effusion or consolidation" are all negated);
* a post-trigger ("... is not seen", "... has resolved", "... cannot be excluded", "... is suspected")
  governs the mentions before it;
* "X versus Y" and a bare "X or Y" of two findings make both uncertain, reading back only to the
  previous comma.

* "normal"/"unremarkable" negate only a mention right next to them ("normal interstitial markings",
  "interstitial markings are normal").

The cues are CheXpert's (its ``patterns/``), read as words instead of dependency-parse patterns. As there,
"no new X", "cannot exclude X" and "X is not excluded" are uncertain even though they hold a negation
(its pre-negation uncertainty rules); otherwise negation beats uncertainty ("no opacity to suggest
pneumonia" is negative for pneumonia). "Not appreciated", "not well visualized", "obscured" and "secondary
to" are uncertain, "history of" negative. Kept beyond CheXpert's lists: "likely", "unlikely" and
"suggest(ive)" are hedges. Pseudo-triggers ("no change in", "without interval change", "not seen on the
prior") are matched first so they trigger nothing: "no change in cardiomegaly" stays positive.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from rrg_core.observations import Label

_BREAKER = re.compile(
    r";|:|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bwhich\b|\bwhereas\b|\bexcept\b|\bexception of\b"
    r"|\bapart from\b|\bother than\b|\bthere (?:is|are|has been|have been)\b"
)

# One scanner for all triggers; alternation order matters (longest, most specific first), since
# finditer never overlaps: "cannot be excluded" must be read as uncertainty before "not" as negation.
# The cues are CheXpert's patterns/ (negation.txt, pre_ and post_negation_uncertainty.txt) read as words.
_TRIGGER = re.compile(
    r"(?P<pseudo>\bno (?:significant |definite |interval |appreciable )*(?:change|progression)\b"
    r"|\bwithout (?:significant |interval |appreciable )*(?:change|progression)\b"
    r"|\bnot (?:significantly |substantially )?changed\b"
    r"|\bnot seen on (?:the )?(?:prior|previous|comparison)\b|\bnot (?:only|necessarily)\b)"
    # CheXpert's pre-negation uncertainty: these beat negation ("no new opacity" is uncertain).
    r"|(?P<strong_post>\b(?:cannot|can not|could not|not|to) be "
    r"(?:entirely |completely )?(?:excluded|ruled out)\b"
    r"|\bnot (?:entirely |completely )?(?:excluded|ruled out)\b)"
    r"|(?P<strong_pre>\b(?:cannot|can not|not) (?:exclude|rule out)\b|\bno new\b)"
    r"|(?P<unc_post>\b(?:is|are) (?:suspected|questioned|possible|likely|probable)\b|\bquestioned\b"
    r"|\b(?:may|might|could) (?:also )?be (?:present|seen|noted|identified|developing)\b"
    r"|\b(?:is |are |was |were )?not (?:well |clearly )"
    r"(?:seen|visualized|evaluated|demonstrated|delineated)\b"
    r"|\b(?:poorly|incompletely) (?:seen|visualized|evaluated)\b|\bobscur\w*"
    r"|\b(?:is |are |was |were )?not appreciated\b)"
    r"|(?P<unc_pre>\b(?:may|might|could|would|can be|possible|possibly|probable|probably|likely|unlikely"
    r"|questionable|question|suggest\w*|concern(?:ing)? for|suspicious for|suspect\w*|suspicion|presumed"
    r"|presumably|perhaps|maybe|equivocal|borderline|differential|versus|vs|favou?r\w*|consider\w*"
    r"|worrisome for|secondary to|correlat\w*)\b|\bmost xxxx\b)"
    r"|(?P<neg_post>\b(?:is |are )?(?:not|no longer) (?:seen|identified|visualized|present|demonstrated"
    r"|evident|visible)\b|\b(?:has |have )?(?:resolved|been removed|removed|cleared)\b"
    r"|\b(?:is |are )?absent\b)"
    r"|(?P<normal_post>\b(?:(?:is|are|appears?|remains?) )?(?:otherwise )?(?:normal|unremarkable)\b"
    r"|\bwithin normal limits\b)"
    r"|(?P<neg_pre>\bno\b|\bnot\b|\bnor\b|\bwithout\b|\bnegative for\b|\bfree of\b|\bclear of\b"
    r"|\babsence of\b|\bresolution of\b|\bremoval of\b|\bhistory of\b|\bdisappearance of\b"
    r"|\bdrainage of\b|\brather than\b|\b(?:rule|ruled) out\b|\bexclude[sd]?\b)"
)
# "normal X" / "X is normal" negates only a mention right next to it (not a whole clause).
_NEAR_WORDS = 3

_ALTERNATIVE = re.compile(r"\bversus\b|\bvs\b|\bor\b|\band/or\b|/")
_COMMA = re.compile(r",")


@dataclass(frozen=True)
class _Trigger:
    kind: str
    start: int
    end: int
    group_text: str = ""


@dataclass(frozen=True)
class Clause:
    """A stretch of a sentence that negation and uncertainty cannot cross, with its triggers."""

    start: int
    end: int
    triggers: tuple[_Trigger, ...]


def clauses(sentence: str) -> list[Clause]:
    """Cut a lower-cased sentence at scope breakers and find the triggers of each piece."""
    cuts = [0, *(m.start() for m in _BREAKER.finditer(sentence)), len(sentence)]
    result = []
    for start, end in itertools.pairwise(cuts):
        # Start the clause at its first word so a post-trigger there is recognised as opening it.
        while start < end and not sentence[start].isalnum():
            start += 1
        triggers = []
        for m in _TRIGGER.finditer(sentence, start, end):
            triggers.append(_Trigger(m.lastgroup or "", m.start(), m.end(), m.group()))
            if m.group() == "no new":  # uncertain up to the next comma, negative beyond: "no new X, Y or Z"
                triggers.append(_Trigger("neg_pre", m.start(), m.end(), m.group()))
        result.append(Clause(start, end, tuple(triggers)))
    return result


def _governs(trigger: _Trigger, sentence: str, clause_start: int, start: int, end: int) -> bool:
    if trigger.kind in ("unc_pre", "strong_pre"):
        # Uncertainty reads forward to the next comma only: "..., most suggestive of artifacts, healed
        # rib fracture noted" leaves the fracture certain. Negation covers whole lists, so it does not stop.
        return trigger.end <= start and "," not in sentence[trigger.end : start]
    if trigger.kind == "normal_post":
        if trigger.end <= start:  # "normal interstitial markings"
            gap = sentence[trigger.end : start]
            return trigger.group_text.endswith("normal") and "," not in gap and len(gap.split()) < _NEAR_WORDS
        gap = sentence[end : trigger.start]  # "interstitial markings are normal"
        return "," not in gap and len(gap.split()) < 2 * _NEAR_WORDS
    if trigger.kind.endswith("_pre"):
        return trigger.end <= start
    if trigger.start >= end:
        return True
    # A post-trigger opening its clause reads forward too ("Resolved interstitial edema").
    return trigger.start == clause_start and trigger.end <= start


def _is_alternative(
    sentence: str, clause: Clause, start: int, end: int, spans: list[tuple[int, int]]
) -> bool:
    """True when the mention is one side of "X versus Y" / "X or Y" with another finding."""
    for other_start, other_end in spans:
        if (other_start, other_end) == (start, end):
            continue
        left, right = (end, other_start) if other_start >= end else (other_end, start)
        if left > right or left < clause.start or right > clause.end:
            continue
        gap = sentence[left:right]
        between = any(left <= s and e <= right for s, e in spans)  # only adjacent findings pair up
        if _ALTERNATIVE.search(gap) and not _COMMA.search(gap) and len(gap.split()) <= 6 and not between:
            return True
    return False


def classify(
    sentence: str, clause: Clause, start: int, end: int, finding_spans: list[tuple[int, int]]
) -> Label:
    """The value of a finding mention at ``start:end`` of ``sentence``, inside ``clause``."""
    kinds = {t.kind for t in clause.triggers if _governs(t, sentence, clause.start, start, end)}
    if "strong_pre" in kinds or "strong_post" in kinds:
        return Label.UNCERTAIN
    if "neg_pre" in kinds or "neg_post" in kinds or "normal_post" in kinds:
        return Label.NEGATIVE
    if "unc_pre" in kinds or "unc_post" in kinds:
        return Label.UNCERTAIN
    if any(t.kind == "pseudo" and t.end <= start for t in clause.triggers):
        return Label.POSITIVE  # "no change in X or Y": both are there, merely unchanged
    if _is_alternative(sentence, clause, start, end, finding_spans):
        return Label.UNCERTAIN
    return Label.POSITIVE


def clause_of(clause_list: list[Clause], position: int) -> Clause:
    """The clause holding a character position."""
    for clause in clause_list:
        if clause.start <= position < clause.end:
            return clause
    return clause_list[-1]
