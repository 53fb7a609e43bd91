"""Image dependence: the derangement, distinct drafts, and a reader against a model that ignores the image."""

from __future__ import annotations

import pytest
import torch

from rrg_core.data.datasets import StudyRecord
from rrg_core.errors import RRGError
from rrg_core.evaluation import GeneratedReport, evaluate_model
from rrg_core.evaluation_tables import format_image_dependence_table
from rrg_core.image_dependence import derangement, distinct_drafts, measure_image_dependence

REPORTS = [
    "There is a large right pleural effusion.",
    "The heart is enlarged.",
    "Right pneumothorax.",
    "No acute cardiopulmonary abnormality.",
]


class Reader:
    """Writes the report its image encodes (the image holds the report's index): a perfect reader."""

    name = "Reader"

    def generate(self, records, images):
        return [
            GeneratedReport(r.id, REPORTS[int(image[0, 0, 0, 0])])
            for r, image in zip(records, images, strict=True)
        ]


class Blind:
    """Writes one report whatever the image."""

    name = "Blind"
    needs_images = False

    def generate(self, records, images):
        return [GeneratedReport(r.id, REPORTS[1]) for r in records]


def _split() -> tuple[list[StudyRecord], list[torch.Tensor]]:
    records = [StudyRecord(f"s{i}", text, (f"s{i}.png",), "test") for i, text in enumerate(REPORTS)]
    images = [torch.full((1, 1, 2, 2), float(i)) for i in range(len(REPORTS))]
    return records, images


@pytest.mark.parametrize("count", [2, 3, 10, 101])
def test_derangement_moves_every_study_and_is_seeded(count: int) -> None:
    order = derangement(count, seed=3)
    assert sorted(order) == list(range(count)) and all(order[i] != i for i in range(count))
    assert order == derangement(count, seed=3)
    assert derangement(1) == [0] and derangement(0) == []


def test_distinct_drafts_compares_cleaned_reports() -> None:
    assert distinct_drafts(["The heart is enlarged.", "the heart is enlarged .", "No effusion."]) == 2
    assert distinct_drafts([]) == 0


def test_a_reader_loses_its_ce_with_swapped_images_and_a_blind_model_does_not() -> None:
    records, images = _split()
    swapped = [images[i] for i in derangement(len(images))]
    figures = {}
    for model in (Reader(), Blind()):
        result = evaluate_model(model, records, images, metrics=("BLEU_1",), progress=False)
        figures[model.name] = measure_image_dependence(model, records, result, swapped, progress=False)
    reader, blind = figures["Reader"], figures["Blind"]
    assert (reader.distinct_drafts, reader.ce_micro_f1) == (4, 1.0)
    assert reader.swapped_ce_micro_f1 < 0.5 and reader.ce_kept < 0.5
    assert (
        blind.distinct_drafts == 1 and blind.swapped_ce_micro_f1 == blind.ce_micro_f1 and blind.ce_kept == 1.0
    )
    assert reader.to_dict()["distinct_share"] == 1.0
    table = format_image_dependence_table(figures)
    assert "| Reader | 4/4 | 1.000 |" in table and "| Blind | 1/4 |" in table


def test_a_result_of_other_studies_is_refused() -> None:
    records, images = _split()
    result = evaluate_model(Blind(), records, images, metrics=("BLEU_1",), progress=False)
    with pytest.raises(RRGError, match="does not cover"):
        measure_image_dependence(Blind(), records[:2], result, images[:2], progress=False)
