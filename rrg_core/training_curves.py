"""The training curves a run left beside its checkpoint: TensorBoard scalars read back as numbers.

Training writes ``<checkpoint folder>/tensorboard/events.out.tfevents.*``: ``<stage>/loss`` and
``<stage>/lr`` per optimiser step (DCRRG's step1..step4, UAR's dvae, stage1, stage2) and
``val/<metric>`` per epoch or stage, all on one global step that keeps counting across stages.
Checkpoints trained before that have no such folder.

TensorBoard is imported only when curves are read, so nothing else in ``rrg_core`` (the store, the
pipeline) pays for it or needs it installed.
"""

from __future__ import annotations

import os
from pathlib import Path

from rrg_core.errors import RRGError

#: The sub-folder of a checkpoint (the run folder) that holds its event files.
EVENTS_FOLDER = "tensorboard"
#: How event files are named (TensorBoard's own convention).
EVENTS_PATTERN = "events.out.tfevents.*"
#: At most this many points per tag are kept (TensorBoard's reservoir keeps the last one and an
#: even sample of the rest): enough for a figure, bounded for a run of millions of steps.
MAX_POINTS = 20_000

#: One tag's curve: global steps and values, in step order.
Curve = tuple[list[int], list[float]]


class TrainingCurvesError(RRGError):
    """The event files exist but cannot be read."""


def events_folder(folder: str | os.PathLike) -> Path:
    """Where a checkpoint's event files are: ``folder/tensorboard``, or ``folder`` itself when it
    holds them directly."""
    folder = Path(folder)
    nested = folder / EVENTS_FOLDER
    return nested if nested.is_dir() or not any(folder.glob(EVENTS_PATTERN)) else folder


def read_training_curves(folder: str | os.PathLike) -> dict[str, Curve]:
    """Every scalar tag of the run at ``folder`` (a checkpoint folder or its ``tensorboard``
    sub-folder) as ``{tag: (steps, values)}``; ``{}`` when the run recorded none.

    A truncated or partly corrupt file gives the points before the damage (TensorBoard stops at the
    first bad record); files with no readable scalar at all raise :class:`TrainingCurvesError`.
    """
    where = events_folder(folder)
    files = sorted(where.glob(EVENTS_PATTERN)) if where.is_dir() else []
    if not files:
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    except ImportError as error:
        raise TrainingCurvesError(f"reading training curves needs tensorboard ({error})") from None
    accumulator = EventAccumulator(str(where), size_guidance={SCALARS: MAX_POINTS})
    try:
        accumulator.Reload()
        tags = accumulator.Tags().get(SCALARS, [])
        events = {tag: accumulator.Scalars(tag) for tag in tags}
    except Exception as error:  # TensorBoard raises its own, OS and protobuf errors alike
        raise TrainingCurvesError(f"the event files in {where} cannot be read: {error}") from None
    curves = {tag: _curve(found) for tag, found in events.items()}
    curves = {tag: curve for tag, curve in curves.items() if curve[0]}
    if not curves:
        names = ", ".join(path.name for path in files[:3])
        raise TrainingCurvesError(f"no readable training scalars in {where} ({names})")
    return curves


def _curve(events: list) -> Curve:
    """Steps and values sorted by step; a step logged twice (a resumed run) keeps its last value."""
    by_step: dict[int, float] = {}
    for event in events:
        by_step[int(event.step)] = float(event.value)
    steps = sorted(by_step)
    return steps, [by_step[step] for step in steps]


def stage_losses(curves: dict[str, Curve]) -> dict[str, Curve]:
    """The ``<stage>/loss`` curves by stage name, in the order training ran them (first step)."""
    found = {
        tag[: -len("/loss")]: curve
        for tag, curve in curves.items()
        if tag.endswith("/loss") and not tag.startswith("val/") and curve[0]
    }
    return dict(sorted(found.items(), key=lambda item: (item[1][0][0], item[0])))


def validation_metrics(curves: dict[str, Curve]) -> dict[str, Curve]:
    """The ``val/<metric>`` curves by metric name."""
    return {tag[len("val/") :]: curve for tag, curve in sorted(curves.items()) if tag.startswith("val/")}
