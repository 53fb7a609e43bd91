"""Whether a Table-7 description says what its row's label says, and whether a report agrees with the
table.

A radiologist reads DCRRG's Table 7 row by row: "Pleural Effusion, positive, 0.91: small left pleural
effusion". A row whose description denies what its label asserts ("Edema, positive, 0.92: there is no
pulmonary edema") is worse than no description, so the rule is checked by the project labeler on
every row the app shows (:mod:`rrg_core.generators.dcrrg`):

- a finding's row with label 1 must assert the finding (the labeler reads it positive or uncertain);
  with label 0 it must not (negative, or not mentioned: "heart size is normal." under Edema says
  nothing about edema and contradicts nothing);
- No Finding's row with label 1 must assert no finding; with label 0 its description must not claim a
  normal study (an empty description, what Step 3 learns for an abnormal study, is fine).

A report agrees with the table when it asserts exactly the findings the table labels 1. One hedge is
allowed: where the table calls the study abnormal (No Finding 0) but puts no pathology over its
threshold, a report that reads normal would contradict the No Finding row, and one that asserts a
finding would contradict that finding's row; the report then hedges the pathology nearest its
threshold (:func:`hedged_finding`, :data:`HEDGES`: "possible pleural effusion."), which the labeler
reads as uncertain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rrg_core.disagreements import asserts
from rrg_core.labeler import label_report
from rrg_core.observations import NO_FINDING, OBSERVATIONS, Label
from rrg_core.review_result import ObservationRow

LabelMap = Mapping[str, object]

HEDGES: dict[str, str] = {
    "Atelectasis": "possible atelectasis .",
    "Cardiomegaly": "possible cardiomegaly .",
    "Consolidation": "possible consolidation .",
    "Edema": "possible pulmonary edema .",
    "Enlarged Cardiomediastinum": "possible mediastinal widening .",
    "Fracture": "possible rib fracture .",
    "Lung Lesion": "possible pulmonary nodule .",
    "Lung Opacity": "possible opacity .",
    "Pleural Effusion": "possible pleural effusion .",
    "Pleural Other": "possible pleural thickening .",
    "Pneumonia": "possible pneumonia .",
    "Pneumothorax": "possible pneumothorax .",
}
"""The sentence (cleaned form) a report hedges each pathology with: the labeler reads it as that
pathology uncertain and nothing else. Support Devices makes no study abnormal and has none."""


def description_asserts(observation: str, description: str) -> bool:
    """Whether ``description`` asserts ``observation`` (the module docstring's reading; a hedge
    asserts, as :func:`rrg_core.disagreements.asserts` reads it)."""
    return _asserts(observation, description, label_report(description).labels)


def description_contradicts(observation: str, label: int, description: str) -> bool:
    """Whether a row's description says the opposite of its label (1 positive, 0 negative)."""
    said = label_report(description).labels
    if observation == NO_FINDING and label == 1:
        return any(asserts(v) for k, v in said.items() if k != NO_FINDING)
    return _asserts(observation, description, said) != bool(label)


def _asserts(observation: str, description: str, said: LabelMap) -> bool:
    if observation == NO_FINDING:
        return bool(description.strip()) and said.get(NO_FINDING) == Label.POSITIVE
    return asserts(said.get(observation))


def hedged_finding(rows: Sequence[ObservationRow]) -> str | None:
    """The pathology a report hedges on (module docstring), from a study's Table 7 (OBSERVATIONS
    order): when No Finding is 0 and no pathology is 1, the one whose probability is the largest
    share of its threshold; otherwise None."""
    by_name = {row.observation: row for row in rows}
    if by_name[NO_FINDING].label != 0 or any(by_name[name].label for name in HEDGES):
        return None
    return max(HEDGES, key=lambda name: by_name[name].probability / max(by_name[name].threshold, 1e-6))


def report_disagreements(
    report_labels: LabelMap, table_labels: Sequence[int], hedged: str | None = None
) -> list[str]:
    """The findings on which a report (its labeler labels) and Table 7's labels (OBSERVATIONS order)
    disagree: the report asserts a finding the table labels 0, or does not assert one it labels 1.
    ``hedged`` (:func:`hedged_finding`): the report may hedge that pathology (uncertain, not positive)."""
    return [
        name
        for name, label in zip(OBSERVATIONS, table_labels, strict=True)
        if name != NO_FINDING
        and asserts(report_labels.get(name)) != bool(label)
        and not (name == hedged and report_labels.get(name) == Label.UNCERTAIN)
    ]


def contradicted_findings(sentence: str, table_labels: Sequence[int]) -> list[str]:
    """The findings on which one report sentence contradicts Table 7's labels (OBSERVATIONS order):
    it asserts a finding labelled 0, or denies one labelled 1."""
    return _contradicted(label_report(sentence).labels, table_labels)


def _contradicted(said: LabelMap, table_labels: Sequence[int]) -> list[str]:
    return [
        name
        for name, label in zip(OBSERVATIONS, table_labels, strict=True)
        if name != NO_FINDING and said.get(name) is not None and asserts(said.get(name)) != bool(label)
    ]


def reconcile(
    sentences: Sequence[str], table_labels: Sequence[int], descriptions: Sequence[str]
) -> tuple[list[int], list[int]]:
    """How a report is made to state what Table 7 says: the indices of its sentences to keep (those
    that contradict no row) and the observations whose row description is added after them (the
    findings labelled 1 that no kept sentence asserts, whose description asserts them).

    ``descriptions`` are the rows' descriptions in OBSERVATIONS order (a withheld one is "").
    """
    said = [label_report(sentence).labels for sentence in sentences]
    keep = [i for i, labels in enumerate(said) if not _contradicted(labels, table_labels)]
    stated = {name for i in keep for name, value in said[i].items() if asserts(value)}
    added = [
        k
        for k, (name, label) in enumerate(zip(OBSERVATIONS, table_labels, strict=True))
        if name != NO_FINDING and label and name not in stated and description_asserts(name, descriptions[k])
    ]
    return keep, added
