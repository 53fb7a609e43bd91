"""Table 7's consistency rule, the report-table reconciliation and the micro-F1 thresholds, on cases
worked out by hand."""

from __future__ import annotations

import numpy as np

from rrg_core.data.reports import clean_report
from rrg_core.generators.dcrrg import checked_row
from rrg_core.labeler import label_report
from rrg_core.metrics import choose_micro_thresholds, choose_thresholds
from rrg_core.observations import NO_FINDING, OBSERVATIONS, Label
from rrg_core.review_result import ObservationRow
from rrg_core.table_consistency import (
    HEDGES,
    contradicted_findings,
    description_contradicts,
    hedged_finding,
    reconcile,
    report_disagreements,
)

EFFUSION = OBSERVATIONS.index("Pleural Effusion")
EDEMA = OBSERVATIONS.index("Edema")


def _labels(*positive: str) -> list[int]:
    return [int(name in positive) for name in OBSERVATIONS]


def test_a_description_contradicts_its_label_when_it_says_the_opposite() -> None:
    assert description_contradicts("Edema", 1, "there is no pulmonary edema .")
    assert description_contradicts("Lung Opacity", 1, "the lungs are clear .")  # names no opacity
    assert description_contradicts("Pleural Effusion", 0, "small left pleural effusion .")
    assert description_contradicts("Atelectasis", 0, "possible atelectasis .")  # a hedge still asserts
    assert not description_contradicts("Pleural Effusion", 1, "small left pleural effusion .")
    assert not description_contradicts("Edema", 0, "there is no pulmonary edema .")
    assert not description_contradicts("Edema", 0, "heart size is normal .")  # silent on edema
    assert not description_contradicts("No Finding", 0, "")  # Step 3's target for an abnormal study
    assert description_contradicts("No Finding", 0, "no acute cardiopulmonary abnormality .")
    assert description_contradicts("No Finding", 1, "large right pneumothorax .")
    assert not description_contradicts("No Finding", 1, "no acute cardiopulmonary abnormality .")


def test_a_contradicting_row_is_withheld_and_kept() -> None:
    row = ObservationRow("Edema", 0.92, 0.5, 1, "there is no pulmonary edema .")
    checked = checked_row(row)
    assert checked.description == "" and checked.withheld == "there is no pulmonary edema ."
    good = ObservationRow("Edema", 0.92, 0.5, 1, "mild pulmonary edema .")
    assert checked_row(good) is good


def test_report_disagreements_name_the_findings() -> None:
    report = {"Pleural Effusion": 1, "Edema": 0}
    assert report_disagreements(report, _labels("Pleural Effusion")) == []
    assert report_disagreements(report, _labels("Edema")) == ["Edema", "Pleural Effusion"]
    assert report_disagreements({"Atelectasis": -1}, _labels()) == ["Atelectasis"]


def test_reconcile_drops_contradicting_sentences_and_adds_missing_findings() -> None:
    sentences = ["the heart is normal in size .", "no pleural effusion .", "large right pneumothorax ."]
    descriptions = [""] * len(OBSERVATIONS)
    descriptions[EFFUSION] = "small left pleural effusion ."
    descriptions[EDEMA] = "there is no pulmonary edema ."  # withheld rows would be "", not this
    keep, added = reconcile(sentences, _labels("Pleural Effusion", "Edema"), descriptions)
    # "no pleural effusion" denies a present finding, the pneumothorax is absent from the table;
    # the effusion's description is added, Edema's is not (it does not assert edema).
    assert keep == [0] and added == [EFFUSION]
    assert contradicted_findings("large right pneumothorax .", _labels()) == ["Pneumothorax"]
    keep, added = reconcile(sentences[:1], _labels(), descriptions)
    assert keep == [0] and added == []


def _table(labels: dict[str, int], probabilities: dict[str, float]) -> list[ObservationRow]:
    return [
        ObservationRow(name, probabilities.get(name, 0.05), 0.5, labels.get(name, 0), "")
        for name in OBSERVATIONS
    ]


def test_each_hedge_is_its_pathology_uncertain_and_nothing_else() -> None:
    assert set(HEDGES) == set(OBSERVATIONS) - {NO_FINDING, "Support Devices"}
    for name, sentence in HEDGES.items():
        assert clean_report(sentence) == sentence  # the form a report is written in
        said = {k: v for k, v in label_report(sentence).labels.items() if v is not None}
        assert said == {name: Label.UNCERTAIN}, (name, said)


def test_an_abnormal_study_with_no_finding_over_its_threshold_hedges_the_nearest() -> None:
    # No Finding 0, nothing over its cut: Edema at 0.4 of 0.5 is nearer than Pneumonia at 0.3.
    table = _table({}, {"Edema": 0.4, "Pneumonia": 0.3, "Support Devices": 0.49})
    assert hedged_finding(table) == "Edema"
    assert hedged_finding(_table({NO_FINDING: 1}, {"Edema": 0.4})) is None  # a normal study
    assert hedged_finding(_table({"Pneumonia": 1}, {"Edema": 0.4})) is None  # a finding is stated
    assert hedged_finding(_table({"Support Devices": 1}, {"Edema": 0.4})) == "Edema"  # devices are no finding
    labels = [row.label for row in table]
    hedge = label_report(HEDGES["Edema"]).labels
    assert report_disagreements(hedge, labels, "Edema") == []
    assert report_disagreements(hedge, labels) == ["Edema"]  # without the hedge rule it disagrees
    assert report_disagreements({"Edema": Label.POSITIVE}, labels, "Edema") == ["Edema"]  # only a hedge


def test_micro_thresholds_drop_a_weak_column_that_costs_the_others_precision() -> None:
    # Column 0: separable. Column 1: a weak detector whose own F1 optimum calls everything positive
    # (2 of 8 positive: F1 0.4 at "all", lower at any stricter cut); its false positives pull the
    # micro F1 down, so the micro rule calls nothing positive there.
    strong = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1, 0.15, 0.05])
    strong_labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    weak = np.array([0.3, 0.5, 0.4, 0.6, 0.2, 0.35, 0.45, 0.55])
    weak_labels = np.array([1, 0, 0, 0, 1, 0, 0, 0])
    scores, labels = np.stack([strong, weak], 1), np.stack([strong_labels, weak_labels], 1).astype(float)
    per_column = choose_thresholds(scores, labels)
    assert per_column[1] <= 0.2  # everything positive in the weak column
    micro = choose_micro_thresholds(scores, labels)
    assert 0.2 < micro[0] <= 0.6
    assert (weak >= micro[1]).sum() == 0  # nothing positive: 4 TP / (8 + 0 + 2) beats any cut there

    def micro_f1(thresholds: list[float]) -> float:
        predicted = scores >= np.array(thresholds)
        tp = (predicted & (labels == 1)).sum()
        return 2 * tp / (2 * tp + (predicted & (labels == 0)).sum() + (~predicted & (labels == 1)).sum())

    assert micro_f1(micro) > micro_f1(per_column)
