"""Held-out measurement of the rule-based labeler on 160 IU X-ray sentences it was not tuned on.

The set, its seeded sampling and the labelling calls are described in tests/data/labeler_heldout.md.
"""

from __future__ import annotations

from pathlib import Path

from labeler_scoring import format_table, load_set, score_set

from rrg_core.labeler import label_sentence

HELDOUT = Path(__file__).parent / "data" / "labeler_heldout.jsonl"

# First run, 2026-11-23 (labels committed before the labeler saw these sentences; the rules were not tuned on
# this set): micro P=0.964 R=0.947 F1=0.955 over 170 gold mentions (TP 161, FP 6, FN 9); 150/160 sentences
# exactly right. Since issue #21 (CheXpert's conventions, 33 sentences relabelled, see labeler_heldout.md) it
# is a second development set: F1 0.990 over 143 mentions. The floor is unchanged.
MICRO_F1_FLOOR = 0.94


def test_heldout_set() -> None:
    items = load_set(HELDOUT)
    assert len(items) >= 150
    score = score_set(items, label_sentence)
    print("\n" + format_table(score))
    for number, sentence, gold, got in score.errors:
        print(f"line {number}: {sentence!r}\n    gold {gold}\n    got  {got}")
    assert score.micro()[2] >= MICRO_F1_FLOOR
