"""Training curves: the TensorBoard events a run writes read back (rrg_core.training_curves) and drawn
on the model card (ui.training_plot), and checkpoints whose events are missing or broken."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from app_helpers import FAKE_STAGES, write_training_events

from rrg_core.training_curves import (
    TrainingCurvesError,
    read_training_curves,
    stage_losses,
    validation_metrics,
)
from ui.training_plot import NO_CURVES, curves_figure, model_curves, smooth

STEPS = 20


@pytest.fixture
def run(tmp_path: Path) -> Path:
    write_training_events(tmp_path, steps_per_stage=STEPS)
    return tmp_path


def test_the_reader_gives_every_tag_on_the_global_step(run):
    curves = read_training_curves(run)
    expected = {f"{stage}/{kind}" for stage in FAKE_STAGES for kind in ("loss", "lr")}
    assert set(curves) == expected | {"val/bleu4", "val/ce_f1"}
    steps, values = curves["step2/loss"]
    assert steps == list(range(STEPS, 2 * STEPS)) and len(values) == STEPS
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
    assert curves["val/ce_f1"] == (
        [STEPS - 1, 2 * STEPS - 1, 3 * STEPS - 1, 4 * STEPS - 1],
        pytest.approx([0.2, 0.3, 0.4, 0.5]),
    )
    assert list(stage_losses(curves)) == list(FAKE_STAGES)  # the order they ran, not the alphabet's
    assert list(validation_metrics(curves)) == ["bleu4", "ce_f1"]
    assert read_training_curves(run / "tensorboard") == curves  # the events folder itself also works


def test_the_reader_does_not_import_tensorboard_until_asked():
    assert "rrg_core.training_curves" in sys.modules
    import rrg_core.store  # noqa: F401 - the store must stay free of it

    source = Path(sys.modules["rrg_core.training_curves"].__file__).read_text(encoding="utf-8")
    assert "\nfrom tensorboard" not in source and "\nimport tensorboard" not in source


def test_a_checkpoint_without_events_has_no_curves(tmp_path):
    assert read_training_curves(tmp_path) == {}
    assert read_training_curves(tmp_path / "absent") == {}
    (tmp_path / "tensorboard").mkdir()
    assert read_training_curves(tmp_path) == {}
    shown = model_curves("dcrrg", tmp_path)
    assert shown.figure is None and shown.note == NO_CURVES and shown.title == "DCRRG"
    assert model_curves("uar", None).note == NO_CURVES


def test_a_corrupt_events_file_is_a_note_not_a_crash(tmp_path):
    events = tmp_path / "tensorboard"
    events.mkdir()
    (events / "events.out.tfevents.1.host").write_bytes(bytes(range(256)) * 3)
    with pytest.raises(TrainingCurvesError, match="no readable training scalars"):
        read_training_curves(tmp_path)
    shown = model_curves("uar", tmp_path)
    assert shown.figure is None and shown.note.startswith(
        "The training curves of this checkpoint could not be read"
    )


def test_a_truncated_events_file_gives_the_points_before_the_damage(run):
    (path,) = (run / "tensorboard").glob("events.out.tfevents.*")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    curves = read_training_curves(run)
    assert curves["step1/loss"][0] == list(range(STEPS))
    assert len(curves.get("val/ce_f1", ([], []))[0]) < len(FAKE_STAGES)


def test_the_figure_has_a_smoothed_and_a_faint_line_per_stage_and_a_panel_per_validation_metric(run):
    shown = model_curves("dcrrg", run)
    assert shown.figure is not None and "step1, step2, step3, step4" in shown.note
    loss_axis, *metric_axes = shown.figure.axes
    lines = loss_axis.get_lines()
    assert len(lines) == 2 * len(FAKE_STAGES)
    faint, smoothed = lines[0::2], lines[1::2]
    assert all(line.get_alpha() < 0.5 for line in faint) and all(
        line.get_alpha() in (None, 1) for line in smoothed
    )
    assert [line.get_label() for line in smoothed] == list(FAKE_STAGES)
    assert [t.get_text() for t in loss_axis.get_legend().get_texts()] == list(FAKE_STAGES)
    assert list(smoothed[1].get_xdata()) == list(range(STEPS, 2 * STEPS))
    # Each metric on its own scale: one panel each, titled by the metric.
    assert [axis.get_title() for axis in metric_axes] == ["bleu4", "ce_f1"]
    assert all(len(axis.get_lines()) == 1 for axis in metric_axes)


def test_without_validation_metrics_the_figure_has_one_panel():
    curves = {"dvae/loss": ([0, 1, 2], [3.0, 2.0, 1.0]), "dvae/lr": ([0, 1, 2], [1e-3] * 3)}
    figure = curves_figure(curves)
    assert figure is not None and len(figure.axes) == 1 and len(figure.axes[0].get_lines()) == 2
    assert curves_figure({"dvae/lr": ([0], [1e-3])}) is None  # a learning rate alone is no curve


def test_smoothing_is_debiased_and_skips_non_finite_values():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    out = smooth([1.0, float("nan"), 3.0])
    assert out[0] == pytest.approx(1.0) and math.isnan(out[1]) and 1.0 < out[2] < 3.0
    with pytest.raises(ValueError):
        smooth([1.0], weight=1.0)
