"""A drafted study in the review database: its images and drafts stored once, its saved review found.

A study is known by the hash of its pixels, so drafting the same images twice opens the same
study (and its review) rather than a copy. The models' drafts are stored when they differ from
the study's stored drafts (a new checkpoint, or a re-run on the stored images).
"""

from __future__ import annotations

import dataclasses
import logging

from rrg_core.store import NewDraft, OpenedStudy, Store, StoreError
from ui.context import AppContext
from ui.images import store_images, study_hash
from ui.session import ReviewState

logger = logging.getLogger(__name__)


def model_key(name: str, observations: object) -> str | None:
    """The pipeline's model key of a stored draft (recorded in its JSON; else read from its name)."""
    if isinstance(observations, dict) and observations.get("model_key") in ("dcrrg", "uar"):
        return observations["model_key"]
    lowered = name.lower()
    return next((key for key in ("dcrrg", "uar") if lowered.startswith(key)), None)


def _new_drafts(context: AppContext, state: ReviewState) -> dict[str, NewDraft]:
    result = state.result
    drafts = {}
    for key, draft in (result.drafts if result else {}).items():
        info = context.checkpoints.get(key)
        header = info.header if info else {}
        version = f"{header.get('preset') or 'custom'} {str(header.get('created', ''))[:10]}".strip()
        observations = {"model_key": key, "labels": draft.labels}
        if key == "dcrrg" and result.observations:
            observations["table7"] = [
                {
                    "observation": r.observation,
                    "probability": r.probability,
                    "threshold": r.threshold,
                    "label": r.label,
                    "description": r.description,
                    "withheld": r.withheld,
                }
                for r in result.observations
            ]
        drafts[key] = NewDraft(
            draft.name, version or "unknown", draft.checkpoint_hash, draft.text, observations
        )
    return drafts


def store_drafts(store: Store, context: AppContext, state: ReviewState, opened: OpenedStudy) -> None:
    """Find or add the result's drafts for ``state.study_id``; fills ``state.draft_ids``."""
    wanted = _new_drafts(context, state)
    found: dict[str, int] = {}
    for stored in opened.drafts:  # newest last, so the latest identical draft wins
        key = model_key(stored.model_name, stored.observations)
        new = wanted.get(key) if key else None
        if new is not None and stored.text == new.text and stored.checkpoint_hash == new.checkpoint_hash:
            found[key] = stored.id
    missing = [key for key in wanted if key not in found]
    if missing:
        flags = [d.observation for d in state.result.disagreements] if state.result else []
        domain = state.result.domain if state.result else None
        added = store.add_drafts(
            state.study_id, [wanted[key] for key in missing], disagreements=flags,
            domain=None if domain is None else dataclasses.asdict(domain),
        )  # fmt: skip
        found.update(zip(missing, (d.id for d in added), strict=True))
    state.draft_ids = found


def load_review(state: ReviewState, opened: OpenedStudy) -> list[tuple[str, str]]:
    """Put the study's saved review (if any) in the state; returns the note to show."""
    state.version = opened.version
    review = opened.review
    state.review = review
    if review is None:
        return []
    state.labels = dict(review.labels)
    by_id = {d.id: model_key(d.model_name, d.observations) for d in opened.drafts}
    state.started_from = by_id.get(review.started_from_draft_id) if review.started_from_draft_id else None
    when = review.saved_at.strftime("%Y-%m-%d %H:%M UTC")
    return [
        (
            "info",
            f"This study was reviewed before: version {review.version} ({review.status}) "
            f"by {review.reviewer} at "
            f"{when}. The editor shows that version; saving makes version {review.version + 1}.",
        )
    ]


def ensure_recorded(context: AppContext, state: ReviewState, *, load: bool = True) -> list[tuple[str, str]]:
    """Store the study and its drafts (or find them); raises StoreError when the database fails.

    ``load``: also put the study's saved review, if any, in the state (the editor opens on it);
    returns the note to show about it.
    """
    store = context.store.get()
    if state.study_id is None:
        state.study_hash = state.study_hash or study_hash(state.views)
        study = store.add_study(state.study_hash, store_images(state.views), state.source_name)
        state.study_id = study.id
    opened = store.open_study(state.study_id)
    store_drafts(store, context, state, opened)
    return load_review(state, opened) if load else []


def record_study(context: AppContext, state: ReviewState) -> list[tuple[str, str]]:
    """:func:`ensure_recorded` for a study just drafted: a database that cannot be used is a warning,
    not a failure (the drafts are shown all the same, and the save tries again)."""
    try:
        return ensure_recorded(context, state)
    except StoreError as error:
        logger.warning("study not recorded: %s", error)
        context.store.reset()
        return [
            (
                "warning",
                f"The drafts are shown, but the study is not yet in the review database: {error} "
                "Saving will try again.",
            )
        ]
