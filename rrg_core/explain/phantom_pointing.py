"""The pointing game on a phantom split: DCRRG attributions and UAR word heatmaps vs finding masks.

Phantom data sets (``python -m train phantoms``) keep each rendered finding's region as
``masks/<study id>/<view>_<Finding_Name>.png`` (``frontal``/``lateral``; 255 inside). A study's
first image is the frontal view, the second the lateral one.

- :func:`dcrrg_pointing`: for every finding of the 14 observations that a study shows, and every
  view where its mask is not empty, the attribution map of that observation on that view (one
  method) is played against the mask at pixel level (the map the app shows), or with
  ``native=True`` at the method's own resolution where that is coarser than the view (Grad-CAM's
  feature grid: its bilinear stretch puts the peak at a cell centre, which a small finding in the
  same cell can miss).
- :func:`uar_pointing`: for every word of UAR's report that names a finding (:func:`finding_words`)
  the study shows, the word's TIR map over all view slots is played against the finding's masks
  on UAR's token grid (see :mod:`rrg_core.explain.pointing`). Words naming a finding the study does
  not show (a negation such as "no effusion", or a wrong finding) are counted as skipped. The
  report is the generated one, or with ``text="reference"`` the study's own report, teacher-forced:
  that measures where the model looks when it says a finding's word, apart from whether it would
  have written it. With ``heatmaps="evidence"`` each such word is played with the findings head's
  evidence map of the observation it names instead (what the app shows for a finding's word).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rrg_core.data.datasets import R2GenDataset
from rrg_core.data.finding_words import finding_words
from rrg_core.errors import DatasetError, RRGError
from rrg_core.explain.attribution import AttributionSettings, ObservationAttributor, method_name
from rrg_core.explain.pointing import PointingReport, PointingTrial, play
from rrg_core.generators.uar import UARExplanation, UARGenerator
from rrg_core.observations import OBSERVATIONS
from rrg_core.phantoms.anatomy import FRONTAL, LATERAL
from rrg_core.progress import progress_bar

logger = logging.getLogger(__name__)

MASKS_DIR = "masks"
VIEW_NAMES = (FRONTAL, LATERAL)
"""The view of each image position in a phantom study."""

UAR_HEATMAPS = ("attention", "evidence")
"""What a UAR finding word's heatmap can be: its TIR attention, or the findings head's evidence."""


def _file_name(observation: str) -> str:
    return observation.replace(" ", "_")


def study_masks(data: str | Path, study_id: str) -> dict[str, dict[str, np.ndarray]]:
    """A phantom study's finding masks: observation -> view -> (H, W) bool, the 14 observations only.

    (Non-observation extras such as a hiatal hernia are left out; a granuloma is already part of
    the Lung Lesion mask.)
    """
    folder = Path(data) / MASKS_DIR / study_id
    if not folder.is_dir():
        return {}
    by_file = {_file_name(name): name for name in OBSERVATIONS}
    masks: dict[str, dict[str, np.ndarray]] = {}
    for path in sorted(folder.glob("*.png")):
        view, _, finding = path.stem.partition("_")
        if view not in VIEW_NAMES or finding not in by_file:
            continue
        with Image.open(path) as image:
            masks.setdefault(by_file[finding], {})[view] = np.asarray(image.convert("L")) > 0
    return masks


def _dataset(data: str | Path, split: str, limit: int | None) -> R2GenDataset:
    if not (Path(data) / MASKS_DIR).is_dir():
        raise DatasetError(f"{data}: no {MASKS_DIR}/ folder; the pointing game needs a phantom data set")
    dataset = R2GenDataset(data, split, load_images=True)
    if limit is not None:
        if limit < 1:
            raise RRGError(f"limit must be at least 1, got {limit}")
        dataset.records = dataset.records[:limit]
    if not len(dataset):
        raise DatasetError(f"{data}: split {split!r} has no studies")
    return dataset


def _mask_fits(mask: np.ndarray, view: torch.Tensor, study_id: str) -> None:
    if tuple(mask.shape) != tuple(view.shape[-2:]):
        raise DatasetError(f"study {study_id}: a mask of {mask.shape} for a view of {tuple(view.shape[-2:])}")


def dcrrg_pointing(
    attributor: ObservationAttributor,
    data: str | Path,
    split: str = "test",
    method: str = "gradcam",
    *,
    settings: AttributionSettings | None = None,
    limit: int | None = None,
    native: bool = False,
    tolerance: int = 0,
    progress: bool = True,
) -> PointingReport:
    """The pointing game of one attribution ``method`` on a phantom split (module docstring);
    ``tolerance`` as :mod:`rrg_core.explain.pointing` defines it."""
    method = method_name(method)
    dataset = _dataset(data, split, limit)
    trials: list[PointingTrial] = []
    started = time.perf_counter()
    for index in progress_bar(range(len(dataset)), unit="study", desc=f"DCRRG {method}", show=progress):
        item = dataset[index]
        masks = study_masks(data, item["id"])
        for position, view in enumerate(item["images"]):
            view_name = VIEW_NAMES[min(position, len(VIEW_NAMES) - 1)]
            for observation, by_view in masks.items():
                mask = by_view.get(view_name)
                if mask is None or not mask.any():
                    continue
                _mask_fits(mask, view, item["id"])
                result = attributor.attribute(view, observation, method, settings=settings)
                coarser = all(g <= m for g, m in zip(result.grid.shape, mask.shape, strict=True))
                heatmap = result.grid if native and coarser else result.heatmap
                trials.append(play(item["id"], observation, view_name, heatmap, mask, tolerance=tolerance))
    name = f"DCRRG {method}" + (" (native grid)" if native else "")
    return PointingReport(name, trials, seconds=time.perf_counter() - started, tolerance=tolerance)


def _slot_masks(by_view: dict[str, np.ndarray], views: torch.Tensor, slots: int, study_id: str) -> np.ndarray:
    """(slots, H, W): the mask of the view in each model slot (views repeat in turn), empty where unseen."""
    count = views.shape[0]
    height, width = views.shape[-2:]
    out = np.zeros((slots, height, width), dtype=bool)
    for slot in range(slots):
        mask = by_view.get(VIEW_NAMES[min(slot % count, len(VIEW_NAMES) - 1)])
        if mask is not None:
            _mask_fits(mask, views[slot % count], study_id)
            out[slot] = mask
    return out


def _uar_trials(
    study_id: str,
    explanation: UARExplanation,
    views: torch.Tensor,
    masks: dict,
    skipped: Counter,
    tolerance: int,
    heatmaps: str,
) -> list[PointingTrial]:
    trials = []
    for position, observation in finding_words(explanation.words):
        by_view = masks.get(observation)
        if not by_view or not any(mask.any() for mask in by_view.values()):
            skipped["word names a finding the study does not show"] += 1
            continue
        named = explanation.word_evidence(position) if heatmaps == "evidence" else None
        attention = explanation.attention[position] if named is None else named[1]  # (slots, h, w)
        slot_masks = _slot_masks(by_view, views, attention.shape[0], study_id)
        if not slot_masks.any():
            skipped["finding not visible in the model's views"] += 1
            continue
        where = f"{explanation.words[position]}@{position}"
        trials.append(play(study_id, observation, where, attention, slot_masks, tolerance=tolerance))
    return trials


def uar_pointing(
    generator: UARGenerator,
    data: str | Path,
    split: str = "test",
    *,
    text: str = "generated",
    heatmaps: str = "attention",
    limit: int | None = None,
    batch_size: int = 16,
    tolerance: int = 0,
    progress: bool = True,
) -> PointingReport:
    """The pointing game of UAR's word heatmaps on a phantom split (module docstring): each word's
    TIR ``attention``, or the findings head's ``evidence`` for the observation it names (a model
    with the head only); ``tolerance`` in mask pixels, as :mod:`rrg_core.explain.pointing` defines it."""
    if text not in ("generated", "reference"):
        raise RRGError(f"text must be 'generated' or 'reference', got {text!r}")
    if heatmaps not in UAR_HEATMAPS:
        raise RRGError(f"heatmaps must be one of {', '.join(UAR_HEATMAPS)}, got {heatmaps!r}")
    if heatmaps == "evidence" and generator.model.findings_head is None:
        raise RRGError("this UAR model has no findings head, so no evidence maps: play its attention")
    if batch_size < 1:
        raise RRGError(f"batch size must be at least 1, got {batch_size}")
    dataset = _dataset(data, split, limit)
    trials: list[PointingTrial] = []
    skipped: Counter = Counter()
    started = time.perf_counter()
    bar = progress_bar(total=len(dataset), unit="study", desc=f"UAR {text}", show=progress)
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        if text == "generated":
            explanations = generator.explain([item["images"] for item in items])
        else:
            explanations = [
                generator.attention_for_report([item["images"]], item["report"]) for item in items
            ]
        for item, explanation in zip(items, explanations, strict=True):
            masks = study_masks(data, item["id"])
            trials.extend(
                _uar_trials(item["id"], explanation, item["images"], masks, skipped, tolerance, heatmaps)
            )
        bar.update(len(items))
    bar.close()
    seconds = time.perf_counter() - started
    name = "UAR TIR" if heatmaps == "attention" else "UAR findings-head evidence"
    return PointingReport(f"{name} ({text} reports)", trials, dict(skipped), seconds, tolerance)
