"""What one browser tab holds between events: the study it shows, the result, the editor's footing.

Kept in a ``gr.State`` (one per tab, never shared), so two reviewers never see each other's study.
The editor's text itself lives in the page's textbox, not here: whatever happens on the server,
what the reviewer typed stays where they typed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rrg_core.observations import OBSERVATIONS
from rrg_core.review_result import ReviewResult
from rrg_core.store import ReviewVersion
from ui.images import LoadedView


@dataclass
class Heat:
    """What the heatmap panel shows: ``maps`` (V, h, w) in [0, 1], one per view slot (TIR), or one
    map for the view it was computed on (``view``, attributions); ``caption`` says what it is."""

    maps: np.ndarray
    caption: str
    view: int | None = None


@dataclass
class ReviewState:
    """The study in the review tab and the editor's footing (see the module docstring)."""

    views: list[LoadedView] = field(default_factory=list)
    current: int = 0
    result: ReviewResult | None = None
    study_id: int | None = None
    study_hash: str | None = None
    source_name: str | None = None
    draft_ids: dict[str, int] = field(default_factory=dict)
    version: int = 0
    started_from: str | None = None
    labels: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(OBSERVATIONS))
    model_labels: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(OBSERVATIONS))
    heat: Heat | None = None
    review: ReviewVersion | None = None

    @property
    def view(self) -> LoadedView | None:
        """The view on display, if any."""
        return self.views[self.current] if 0 <= self.current < len(self.views) else None

    def view_labels(self) -> list[str]:
        """The view selector's choices."""
        return [f"{k + 1}: {v.name}" for k, v in enumerate(self.views)]
