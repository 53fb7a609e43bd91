"""Tests for the rule-based labeler: patterns, aggregation, the CLI, and the hand-labelled gold set."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from labeler_scoring import format_table, load_set, prf, score_set

from rrg_core.labeler import ReportLabels, label_report, label_reports, label_sentence
from rrg_core.labeler.cli import main
from rrg_core.labeler.conventions import LABELER_VERSION, LabelerOptions, labeler_key
from rrg_core.observations import OBSERVATIONS, Label

GOLD = Path(__file__).parent / "data" / "labeler_gold.jsonl"
P, N, U = Label.POSITIVE, Label.NEGATIVE, Label.UNCERTAIN


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        # mentions and synonyms
        ("Heart size is enlarged", {"Cardiomegaly": P}),
        ("The cardiac silhouette is normal", {"Cardiomegaly": N}),
        ("Normal cardiomediastinal silhouette", {"Enlarged Cardiomediastinum": N}),  # not Cardiomegaly
        ("Widened mediastinum", {"Enlarged Cardiomediastinum": P}),
        ("Mild blunting of the left costophrenic angle", {}),  # "blunt" is an other finding
        ("Sternotomy wires and a pacemaker", {"Support Devices": P}),
        ("Lines and tubes are in place", {"Support Devices": P}),
        ("Calcified granuloma in the right upper lobe", {}),  # not in lung_lesion.txt
        ("Right basilar airspace disease", {"Lung Opacity": P}),
        ("Pleural thickening at the apex", {"Pleural Other": P}),
        ("Healed right rib fracture", {"Fracture": P}),
        ("Large hydropneumothorax", {"Pneumothorax": P}),
        ("Mild pulmonary vascular congestion", {"Edema": U}),  # CheXpert: congestion is uncertain edema
        ("Small pericardial effusion", {}),
        ("The lungs are clear", {}),
        ("Emphysema", {}),
        # negation, lists, pseudo-negation
        (
            "No pneumothorax, effusion or consolidation",
            {"Pneumothorax": N, "Pleural Effusion": N, "Consolidation": N},
        ),
        ("Lungs are free of focal airspace disease", {"Lung Opacity": N}),
        ("Negative for pneumothorax", {"Pneumothorax": N}),
        ("Pneumothorax is not seen", {"Pneumothorax": N}),
        ("The effusion has resolved", {"Pleural Effusion": N}),
        ("No evidence of pneumonia", {"Pneumonia": N}),
        ("No change in cardiomegaly", {"Cardiomegaly": P}),
        ("Unchanged cardiomegaly", {"Cardiomegaly": P}),
        ("No new consolidation", {"Consolidation": U}),  # CheXpert's pre-negation uncertainty
        ("Nodule, not seen on the prior exam", {"Lung Lesion": P}),
        # uncertainty, and negation beating it
        ("Pneumonia cannot be excluded", {"Pneumonia": U}),
        ("Cannot exclude pneumonia", {"Pneumonia": U}),
        ("Opacity concerning for pneumonia", {"Lung Opacity": P, "Pneumonia": U}),
        ("Atelectasis versus scarring", {"Atelectasis": U, "Lung Opacity": U}),
        ("Atelectasis vs. pneumonia", {"Atelectasis": U, "Pneumonia": U}),
        ("Possible small effusion", {"Pleural Effusion": U}),
        ("Borderline heart size", {"Cardiomegaly": U}),
        ("No opacity to suggest pneumonia", {"Lung Opacity": N, "Pneumonia": N}),
        # scope ending
        ("No effusion but there is atelectasis", {"Pleural Effusion": N, "Atelectasis": P}),
        ("No pneumothorax; small left effusion", {"Pneumothorax": N, "Pleural Effusion": P}),
        ("Possible nodule, healed rib fracture", {"Lung Lesion": U, "Fracture": P}),
        # de-identified words
        ("The xxxx sternotomy xxxx are intact", {}),  # sternotomy is not in support_devices.txt
        ("Fracture of the superior sternotomy xxxx", {}),
    ],
)
def test_label_sentence_patterns(sentence: str, expected: dict[str, Label]) -> None:
    assert label_sentence(sentence) == expected


def test_report_aggregation_and_attribution() -> None:
    text = "No effusion. Small right effusion. Possible pneumonia. Heart size is normal."
    result = label_report(text)
    assert isinstance(result, ReportLabels)
    assert list(result.labels) == list(OBSERVATIONS)
    assert result.labels["Pleural Effusion"] == P  # positive beats negative
    assert result.labels["Pneumonia"] == U
    assert result.labels["Cardiomegaly"] == N
    assert result.labels["No Finding"] is None  # an uncertain finding blocks No Finding
    assert result.sentences["Pleural Effusion"] == ("No effusion", "Small right effusion")
    assert result.sentences["Atelectasis"] == ()
    assert label_report("Possible atelectasis. Atelectasis is not seen").labels["Atelectasis"] == U


def test_no_finding_rule() -> None:
    normal = label_report("No acute cardiopulmonary abnormality. The lungs are clear. Left PICC line.")
    assert normal.labels["No Finding"] == P  # support devices do not count
    assert normal.labels["Support Devices"] == P
    assert normal.sentences["No Finding"] == ("No acute cardiopulmonary abnormality",)
    assert label_report("").labels["No Finding"] == P
    assert label_report("Stable cardiomegaly.").labels["No Finding"] is None


def test_csv_row_and_batch() -> None:
    row = label_report("Cardiomegaly. No effusion. Possible edema.").to_csv_row()
    assert len(row) == len(OBSERVATIONS)
    assert row[OBSERVATIONS.index("Cardiomegaly")] == "1.0"
    assert row[OBSERVATIONS.index("Pleural Effusion")] == "0.0"
    assert row[OBSERVATIONS.index("Edema")] == "-1.0"
    assert row[OBSERVATIONS.index("Fracture")] == ""
    assert [r.labels for r in label_reports(["Cardiomegaly", "No effusion"])] == [
        label_report("Cardiomegaly").labels,
        label_report("No effusion").labels,
    ]


def test_cli_good_and_bad_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reports = tmp_path / "reports.csv"
    huge = "effusion " * 120_000  # about 1 MB in one field
    reports.write_bytes(
        b'"No pneumothorax. Heart is enlarged."\n'
        b'""\n' + f'"{huge}"\n'.encode() + b"bad \xff\xfe bytes, effusion\n"
        b"\n"
        b'"Small left effusion, possible atelectasis"\n'
    )
    out = tmp_path / "labels.csv"
    assert main(["--reports", str(reports), "--out", str(out)]) == 0
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Reports", *OBSERVATIONS]
    assert len(rows) == 7
    assert rows[1][1 + OBSERVATIONS.index("Cardiomegaly")] == "1.0"
    assert rows[1][1 + OBSERVATIONS.index("Pneumothorax")] == "0.0"
    for bad in rows[2:6]:
        assert set(bad[1:]) == {""}
    assert rows[6][1 + OBSERVATIONS.index("Atelectasis")] == "-1.0"
    for number in (2, 3, 4, 5):
        assert f"row {number}:" in caplog.text


def test_cli_missing_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rrg_core.labeler", "--reports", str(tmp_path / "no.csv"), "--out", "x.csv"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not found" in done.stderr


def test_gold_set() -> None:
    items = load_set(GOLD)
    assert len(items) >= 220
    score = score_set(items, label_sentence)
    print("\n" + format_table(score))
    assert score.micro()[2] >= 0.95
    for name, (t, f, n) in score.per_observation().items():
        if t + n >= 5:
            assert prf(t, f, n)[2] >= 0.85, name


def test_hedge_after_the_finding_makes_it_uncertain():
    assert label_sentence("Mild basilar atelectasis may be present.") == {"Atelectasis": Label.UNCERTAIN}
    assert label_sentence("A small effusion could also be seen") == {"Pleural Effusion": Label.UNCERTAIN}


def test_pleural_spaces_clear_names_no_observation():
    # CheXpert's lists have no "clear" statement: unmentioned, not negative.
    assert label_sentence("The pleural spaces are clear.") == {}


def test_unchanged_findings_listed_with_or_stay_positive():
    assert label_sentence("No significant change in the left pneumothorax or pleural effusion") == {
        "Pneumothorax": Label.POSITIVE,
        "Pleural Effusion": Label.POSITIVE,
    }


def test_joint_prosthesis_is_a_device_and_knee_effusion_is_not_pleural():
    assert label_sentence("Left shoulder arthroplasty.") == {"Support Devices": Label.POSITIVE}
    assert label_sentence("Prosthetic left hip") == {}  # "prosthe" is not in support_devices.txt
    assert label_sentence("Small suprapatellar effusion") == {}


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        # phrases/mention and phrases/unmention of the CheXpert labeler
        ("Calcified nodules in the right upper lung", {}),
        ("No noncalcified nodule", {}),
        ("Masslike opacification of the right apex", {"Lung Lesion": P, "Lung Opacity": P}),
        ("Nodular opacity in the left upper lobe", {"Lung Lesion": P, "Lung Opacity": P}),
        ("Massive cardiomegaly", {"Cardiomegaly": P}),
        ("Increased interstitial markings", {"Lung Opacity": P}),
        ("Normal interstitial markings", {"Lung Opacity": N}),
        ("Interstitial markings are normal", {"Lung Opacity": N}),
        ("Small amount of pleural fluid", {"Pleural Effusion": P}),
        ("Fluid in the minor fissure", {}),
        ("Mild pleural thickening", {"Pleural Other": P}),
        ("Pleural scarring at the apex", {"Pleural Other": P}),
        ("Biapical scarring", {"Lung Opacity": P}),
        ("Possible pulmonary fibrosis", {"Pleural Other": U}),
        ("Calcified pleural plaque", {}),
        ("Nipple markers overlie the bases", {"Support Devices": P}),
        ("Surgical clips in the right upper quadrant", {}),
        ("Kerley B lines", {}),
        ("Plate-like atelectasis", {"Atelectasis": P}),
        ("No vascular congestion", {"Edema": N}),
        ("Indistinctness of the pulmonary vasculature", {"Edema": U}),
        ("Findings of CHF", {"Edema": P, "Cardiomegaly": U}),
        ("Cardiomegaly with CHF", {"Edema": P, "Cardiomegaly": P}),
        # heart and mediastinum statements (CheXpert's negation and post-negation uncertainty rules)
        ("Heart size is upper limits of normal", {"Cardiomegaly": N}),
        ("Stable cardiomediastinal silhouette", {"Enlarged Cardiomediastinum": U}),
        ("Heart size is stable", {"Cardiomegaly": U}),
        ("Stable normal heart size", {"Cardiomegaly": N}),
        ("The heart is enlarged", {"Cardiomegaly": P}),
        ("Enlarged cardiac contour", {"Cardiomegaly": P, "Enlarged Cardiomediastinum": P}),
        ("Pacemaker lead over the heart", {"Support Devices": P}),
        # negation and uncertainty cues
        (
            "No new opacity, effusion or pneumothorax",
            {"Lung Opacity": U, "Pleural Effusion": N, "Pneumothorax": N},
        ),
        ("Atelectasis is not appreciated", {"Atelectasis": U}),
        ("The left base is obscured, effusion not well visualized", {"Pleural Effusion": U}),
        ("Opacity favored to represent atelectasis", {"Lung Opacity": P, "Atelectasis": U}),
        ("Opacity secondary to atelectasis", {"Lung Opacity": P, "Atelectasis": U}),
        ("Scarring/atelectasis", {"Lung Opacity": U, "Atelectasis": U}),
        ("History of pneumonia", {"Pneumonia": N}),
    ],
)
def test_chexpert_conventions(sentence: str, expected: dict[str, Label]) -> None:
    assert label_sentence(sentence) == expected


def test_other_findings_block_no_finding() -> None:
    # CheXpert's phrases/mention/no_finding.txt: not an observation, but not a normal study either.
    assert label_report("Calcified granuloma. No acute disease.").labels["No Finding"] is None
    assert label_report("Degenerative changes of the spine.").labels["No Finding"] is None
    assert label_report("No emphysema. The lungs are clear.").labels["No Finding"] == P


def test_granuloma_option() -> None:
    on = LabelerOptions(granuloma_as_lesion=True)
    assert label_sentence("Calcified granuloma in the right upper lobe", on) == {"Lung Lesion": P}
    assert label_sentence("No granulomas", on) == {"Lung Lesion": N}
    assert label_report("Stable granulomatous disease", on).labels["Lung Lesion"] == P
    assert label_report("Stable granulomatous disease").labels["Lung Lesion"] is None
    assert labeler_key(on) != labeler_key() == LABELER_VERSION
