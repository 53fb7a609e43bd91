"""The "look here" flags: observations on which the two drafts, or a draft and DCRRG's Step-1
classifier, disagree.

Two independent models that agree are no proof, but where they differ at least one is wrong, and
that is where a radiologist's minute is best spent. A draft *asserts* an observation when its labeler
label is positive or uncertain (uncertain is a hedge a radiologist must resolve); it *denies* it
when the label is negative or the draft does not mention it. Flags:

- the drafts differ: one asserts, the other denies;
- a draft contradicts the Step-1 probability: it asserts what the classifier puts below its
  threshold, or denies what the classifier puts at or above it.
"""

from __future__ import annotations

from collections.abc import Mapping

from rrg_core.observations import OBSERVATIONS
from rrg_core.review_result import Disagreement, ObservationRow

_SAYS = {1: "positive", 0: "negative", -1: "uncertain", None: "not mentioned"}


def asserts(label: int | None) -> bool:
    """A draft asserts an observation when its label is positive or uncertain."""
    return label in (1, -1)


def find_disagreements(
    labels: Mapping[str, Mapping[str, int | None]],
    names: Mapping[str, str],
    observations: list[ObservationRow] | None = None,
) -> list[Disagreement]:
    """The flags of the module docstring, in observation order.

    Args:
        labels: per model key, the labeler's labels of its draft (observation -> 1/0/-1/None).
        names: per model key, the name to write in the reasons ("DCRRG").
        observations: DCRRG's Table-7 rows, when DCRRG ran; their probabilities are checked against
            every draft.
    """
    rows = {row.observation: row for row in observations or []}
    flags = []
    for observation in OBSERVATIONS:
        said = {model: draft.get(observation) for model, draft in labels.items()}
        reasons = _between_drafts(said, names) + _against_classifier(said, names, rows.get(observation))
        if reasons:
            row = rows.get(observation)
            flags.append(
                Disagreement(
                    observation=observation,
                    labels=said,
                    probability=None if row is None else row.probability,
                    threshold=None if row is None else row.threshold,
                    reasons=reasons,
                )
            )
    return flags


def _between_drafts(said: Mapping[str, int | None], names: Mapping[str, str]) -> list[str]:
    asserting = [m for m, label in said.items() if asserts(label)]
    denying = [m for m, label in said.items() if not asserts(label)]
    if not asserting or not denying:
        return []
    parts = [f"{names[m]} says {_SAYS[said[m]]}" for m in (*asserting, *denying)]
    return ["the drafts differ: " + ", ".join(parts)]


def _against_classifier(
    said: Mapping[str, int | None], names: Mapping[str, str], row: ObservationRow | None
) -> list[str]:
    if row is None:
        return []
    classifier_positive = row.probability >= row.threshold
    figures = f"probability {row.probability:.2f}, threshold {row.threshold:.2f}"
    reasons = []
    for model, label in said.items():
        if asserts(label) and not classifier_positive:
            reasons.append(f"{names[model]} says {_SAYS[label]} but the classifier says no ({figures})")
        elif not asserts(label) and classifier_positive:
            reasons.append(f"{names[model]} says {_SAYS[label]} but the classifier says yes ({figures})")
    return reasons
