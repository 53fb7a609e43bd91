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

Negation beats uncertainty ("no opacity to suggest pneumonia" is negative for pneumonia), as in the
CheXpert labeler. Pseudo-triggers ("no change in", "without interval change", "not seen on the prior")
are matched first so they trigger nothing: "no change in cardiomegaly" stays positive.
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
_TRIGGER = re.compile(
    r"(?P<pseudo>\bno (?:significant |definite |interval |appreciable )*(?:change|progression)\b"
    r"|\bwithout (?:significant |interval |appreciable )*(?:change|progression)\b"
    r"|\bnot (?:significantly |substantially )?changed\b"
    r"|\bnot seen on (?:the )?(?:prior|previous|comparison)\b|\bnot (?:only|necessarily)\b)"
    r"|(?P<unc_post>\b(?:cannot|can not|could not|not|to) be "
    r"(?:entirely |completely )?(?:excluded|ruled out)\b"
    r"|\bnot (?:entirely |completely )?(?:excluded|ruled out)\b"
    r"|\b(?:is|are) (?:suspected|questioned|possible|likely|probable)\b|\bquestioned\b"
    r"|\b(?:may|might|could) (?:also )?be (?:present|seen|noted|identified|developing)\b)"
    r"|(?P<unc_pre>\b(?:cannot|can not|not) (?:exclude|rule out)\b"
    r"|\b(?:may|might|could|can be|possible|possibly|probable|probably|likely|unlikely|questionable"
    r"|question|suggest\w*|concern(?:ing)? for|suspicious for|suspect\w*|suspicion|presumed|presumably"
    r"|perhaps|equivocal|borderline|differential|versus|vs)\b|\bmost xxxx\b)"
    r"|(?P<neg_post>\b(?:is |are )?(?:not|no longer) (?:seen|identified|visualized|present|demonstrated"
    r"|evident|appreciated|visible)\b|\b(?:has |have )?(?:resolved|been removed|removed|cleared)\b"
    r"|\b(?:is |are )?absent\b)"
    r"|(?P<neg_pre>\bno\b|\bnot\b|\bnor\b|\bwithout\b|\bnegative for\b|\bfree of\b|\bclear of\b"
    r"|\babsence of\b|\bresolution of\b|\bremoval of\b|\brather than\b|\bruled out\b|\bexclude[sd]?\b)"
)

_ALTERNATIVE = re.compile(r"\bversus\b|\bvs\b|\bor\b|\band/or\b")
_COMMA = re.compile(r",")


@dataclass(frozen=True)
class _Trigger:
    kind: str
    start: int
    end: int


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
        triggers = tuple(
            _Trigger(m.lastgroup or "", m.start(), m.end()) for m in _TRIGGER.finditer(sentence, start, end)
        )
        result.append(Clause(start, end, triggers))
    return result


def _governs(trigger: _Trigger, sentence: str, clause_start: int, start: int, end: int) -> bool:
    if trigger.kind == "unc_pre":
        # Uncertainty reads forward to the next comma only: "..., most suggestive of artifacts, healed
        # rib fracture noted" leaves the fracture certain. Negation covers whole lists, so it does not stop.
        return trigger.end <= start and "," not in sentence[trigger.end : start]
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
    if "neg_pre" in kinds or "neg_post" in kinds:
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
