import json

import pytest

from rrg_core.data.reports import clean_report, raw_sentences, report_tokens, split_sentences
from rrg_core.errors import RRGError


def test_clean_report_r2gen_form():
    text = "The heart is normal. No pleural effusion, pneumothorax or consolidation."
    assert clean_report(text) == ("the heart is normal . no pleural effusion pneumothorax or consolidation .")


def test_deidentification_marks_become_one_token():
    assert clean_report("There is XXXX opacity. XXXX-XXXX normal. Prior ___ study.") == (
        "there is xxxx opacity . xxxx normal . prior xxxx study ."
    )


def test_numbering_and_repeated_dots_removed():
    assert clean_report("1. No acute disease.. 2. Stable cardiomegaly.\n3) Old rib fracture") == (
        "no acute disease . stable cardiomegaly . old rib fracture ."
    )


def test_decimals_kept_and_hyphens_split_words():
    assert clean_report("A 2.5 cm nodule at level 5. Well-expanded lungs, T-spine/ribs intact") == (
        "a 2.5 cm nodule at level 5 . well expanded lungs t spine ribs intact ."
    )


def test_empty_and_punctuation_only_reports():
    assert clean_report("") == ""
    assert clean_report(" ... ;; \n ") == ""
    assert split_sentences("") == []


def test_non_text_is_refused():
    with pytest.raises(RRGError, match="must be text"):
        clean_report(None)


def test_raw_sentences_keep_case_for_display():
    assert raw_sentences("Heart normal.\nNo effusion; lungs clear") == [
        "Heart normal",
        "No effusion",
        "lungs clear",
    ]


def test_report_tokens_include_sentence_ends():
    assert report_tokens("Heart normal. Lungs clear.") == ["heart", "normal", ".", "lungs", "clear", "."]


def test_cleaning_is_idempotent_on_all_real_reports(iu_xray_dir):
    data = json.loads((iu_xray_dir / "annotation.json").read_text())
    cleaned = [clean_report(entry["report"]) for split in data.values() for entry in split]
    assert len(cleaned) == 2069 + 296 + 590
    assert all(clean_report(report) == report for report in cleaned)
    assert all(report == report.lower() and "  " not in report for report in cleaned)
