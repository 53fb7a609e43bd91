"""Training curves on the model card: each loaded model's loss per stage and validation metrics.

The numbers come from :func:`rrg_core.training_curves.read_training_curves`; this module only draws
them, with matplotlib's object API (no pyplot) like the rest of the card, so that figures built in
server threads share no global state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from rrg_core.training_curves import (
    Curve,
    TrainingCurvesError,
    read_training_curves,
    stage_losses,
    validation_metrics,
)
from ui.context import AppContext
from ui.formatting import MODEL_NAMES

NO_CURVES = "This checkpoint has no training curves (trained before they were recorded)."
UNREADABLE = "The training curves of this checkpoint could not be read: {reason}."
#: Smoothing of the loss lines: light enough that a stage of a few dozen steps still shows its trend.
SMOOTHING = 0.8
#: One colour per stage, in the order stages ran (matplotlib's default cycle, colour-blind friendly
#: enough and the same on every card).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
#: Loss lines spanning more than this ratio are drawn on a log axis: stages with very different
#: objectives (contrastive vs. token cross-entropy) would otherwise flatten each other.
LOG_RATIO = 20.0


@dataclass
class ModelCurves:
    """What the card shows for one model: a figure, or a sentence saying why there is none."""

    key: str
    figure: Figure | None
    note: str

    @property
    def title(self) -> str:
        """The model's display name."""
        return MODEL_NAMES.get(self.key, self.key)


def smooth(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """An exponential moving average, debiased at the start (as TensorBoard's slider is) so that
    the first points are not pulled towards 0; non-finite values pass through and are skipped."""
    if not 0 <= weight < 1:
        raise ValueError(f"weight must be in [0, 1), got {weight}")
    smoothed, average, count = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            smoothed.append(value)
            continue
        count += 1
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight**count))
    return smoothed


def curves_figure(curves: Mapping[str, Curve]) -> Figure | None:
    """The loss per stage (smoothed, raw values faint behind) on the global step, beside one small
    panel per validation metric when there are any; None when there is no loss or metric to draw.

    One panel per metric, each on its own scale: a run's metrics differ by orders of magnitude (UAR's
    dVAE records codes used, ~60, beside a reconstruction error of ~0.02), and on one axis the small
    ones flatten into the zero line."""
    losses = stage_losses(dict(curves))
    metrics = validation_metrics(dict(curves))
    if not losses and not metrics:
        return None
    rows = math.ceil(len(metrics) / 2)
    figure = Figure(figsize=(11, max(3.4, 1.7 * rows)), layout="constrained")
    if losses and metrics:
        loss_part, metric_part = figure.subfigures(1, 2, width_ratios=[3, 2])
    else:
        loss_part = metric_part = figure
    if losses:
        _draw_losses(loss_part.subplots(), losses)
    if metrics:
        columns = min(2, len(metrics))
        axes = metric_part.subplots(rows, columns, sharex=True, squeeze=False).flatten()
        last = max(step for steps, _ in [*losses.values(), *metrics.values()] for step in steps)
        for k, (axis, (name, curve)) in enumerate(zip(axes, metrics.items(), strict=False)):
            _draw_metric(axis, name, curve, COLOURS[k % len(COLOURS)])
            axis.set_xlim(-0.02 * last, 1.02 * last)  # the loss panel's steps: one point is not a range
        for axis in axes[len(metrics) :]:
            axis.set_visible(False)
        metric_part.suptitle("Validation", fontsize=10)
    return figure


def _draw_losses(axis, losses: Mapping[str, Curve]) -> None:
    for k, (stage, (steps, values)) in enumerate(losses.items()):
        colour = COLOURS[k % len(COLOURS)]
        axis.plot(steps, values, color=colour, alpha=0.2, linewidth=0.8)
        axis.plot(steps, smooth(values), color=colour, linewidth=1.6, label=stage)
    finite = [v for _, values in losses.values() for v in values if math.isfinite(v)]
    log = bool(finite) and min(finite) > 0 and max(finite) / min(finite) > LOG_RATIO
    if log:
        axis.set_yscale("log")
        # Plain numbers at 1-2-5 steps: powers of ten alone leave a loss curve with two labels.
        axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.yaxis.set_minor_formatter(NullFormatter())
    axis.set_title("Training loss per stage (smoothed; raw values faint)", fontsize=10)
    axis.set_xlabel("optimiser step (counted across stages)", fontsize=9)
    axis.set_ylabel("loss (log scale)" if log else "loss", fontsize=9)
    axis.tick_params(labelsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, title="stage", title_fontsize=8)


def _draw_metric(axis, name: str, curve: Curve, colour: str) -> None:
    steps, values = curve
    # Markers: validation runs once per epoch or stage, often only a handful of points.
    axis.plot(steps, values, marker="o", markersize=3.5, linewidth=1.3, label=name, color=colour)
    axis.set_title(name, fontsize=9)
    axis.set_xlabel("optimiser step", fontsize=8)
    axis.tick_params(labelsize=8)
    axis.grid(alpha=0.3)


def model_curves(key: str, folder: Path | None) -> ModelCurves:
    """One model's figure from its checkpoint folder; a missing or unreadable record gives a note."""
    if folder is None:
        return ModelCurves(key, None, NO_CURVES)
    try:
        curves = read_training_curves(folder)
    except TrainingCurvesError as error:
        return ModelCurves(key, None, UNREADABLE.format(reason=str(error).rstrip(".")))
    figure = curves_figure(curves)
    if figure is None:
        return ModelCurves(key, None, NO_CURVES)
    losses = ", ".join(stage_losses(curves)) or "none"
    return ModelCurves(key, figure, f"Stages: {losses}. Read from `{folder}`.")


def training_curves(context: AppContext) -> list[ModelCurves]:
    """The curves of each loaded model, DCRRG first."""
    found = []
    for key, model in context.pipeline.models.items():
        folder = getattr(model, "folder", None)
        if folder is None and key in context.checkpoints:
            folder = context.checkpoints[key].folder
        found.append(model_curves(key, folder))
    return found
