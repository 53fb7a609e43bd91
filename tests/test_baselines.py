"""rrg_core.baselines: the most frequent training report and the nearest training neighbour."""

from __future__ import annotations

import pytest
import torch

from rrg_core.baselines import MostFrequentReport, NearestNeighbourReport, pixel_features
from rrg_core.data.datasets import StudyRecord
from rrg_core.errors import RRGError
from rrg_core.evaluation import ReportGenerator


def _records(reports: list[str], split: str = "train") -> list[StudyRecord]:
    return [StudyRecord(f"{split}{i}", text, ("a.png", "b.png"), split) for i, text in enumerate(reports)]


def test_most_frequent_report_is_the_cleaned_mode():
    reports = ["Lungs clear.", "Heart normal. Lungs clear.", "heart normal . lungs  clear .", "Effusion."]
    train = _records(reports)
    baseline = MostFrequentReport.fit(train)
    assert isinstance(baseline, ReportGenerator)
    assert baseline.report == "heart normal . lungs clear ." and baseline.count == 2
    test = _records(["x", "y", "z"], "test")
    generated = baseline.generate(test, None)
    assert [g.id for g in generated] == ["test0", "test1", "test2"]
    assert {g.text for g in generated} == {"heart normal . lungs clear ."}


def test_most_frequent_ties_break_alphabetically_whatever_the_order():
    reports = ["B report.", "A report.", "", "  "]  # empty reports never win
    assert MostFrequentReport.fit(_records(reports)).report == "a report ."
    assert MostFrequentReport.fit(_records(reports[::-1])).report == "a report ."
    with pytest.raises(RRGError, match="no non-empty training report"):
        MostFrequentReport.fit(_records(["", "..."]))


def test_pixel_features_are_standardised_per_view_and_ignore_exposure():
    torch.manual_seed(0)
    study = torch.rand(2, 1, 64, 48)
    features = pixel_features(study, views=2, side=8)
    assert features.shape == (2 * 8 * 8,)
    first = features[:64]
    assert first.mean().abs() < 1e-5 and first.std() == pytest.approx(1.0, abs=1e-4)
    # Brighter or higher-contrast copies of the same images give the same features.
    assert torch.allclose(pixel_features(0.5 * study + 0.2, views=2, side=8), features, atol=1e-4)
    # One view only: it is repeated to fill the second; RGB is averaged to grey.
    one = pixel_features(study[:1], views=2, side=8)
    assert torch.allclose(one[:64], one[64:])
    assert torch.allclose(pixel_features(study[:, :1].expand(2, 3, 64, 48), side=8), features, atol=1e-5)
    with pytest.raises(RRGError, match="V, C, H, W"):
        pixel_features(torch.zeros(64, 64))


def test_nearest_neighbour_copies_the_report_of_the_most_alike_training_study():
    generator = torch.Generator().manual_seed(0)
    train_images = [torch.rand(2, 1, 32, 32, generator=generator) for _ in range(5)]
    train = _records([f"Report number {i}." for i in range(5)])
    baseline = NearestNeighbourReport.fit(train, train_images, side=8)
    assert isinstance(baseline, ReportGenerator)
    # Each query is a noisy, darker copy of one training study.
    wanted = [3, 0, 4, 3]
    queries = [0.8 * train_images[i] + 0.02 * torch.rand(2, 1, 32, 32, generator=generator) for i in wanted]
    test = _records(["a", "b", "c", "d"], "test")
    generated = baseline.generate(test, queries)
    assert [g.id for g in generated] == ["test0", "test1", "test2", "test3"]
    assert [g.text for g in generated] == [f"report number {i} ." for i in wanted]
    assert all(g.image_embedding is None and g.probabilities is None for g in generated)
    with pytest.raises(RRGError, match="needs the images"):
        baseline.generate(test, None)


def test_nearest_neighbour_skips_empty_training_reports_and_breaks_ties_by_order():
    same = torch.rand(2, 1, 16, 16)
    train = _records(["", "First.", "Second."])
    baseline = NearestNeighbourReport.fit(train, [same, same, same], side=4)
    assert baseline.ids == ["train1", "train2"]
    # All training studies are identical: the earlier one wins, every time.
    assert baseline.neighbours([same + 0.01]) == [0]
    assert baseline.generate(_records(["q"], "test"), [same])[0].text == "first ."
