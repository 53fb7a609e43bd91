"""Callbacks of the editor: start from a draft, insert sentences of the other, save with optimistic locking.

The reviewer's text is an *input* of every callback here and an output only where the reviewer
asked for a change (start from a draft, insert a sentence). A failed or refused save returns no
editor output at all, so what was typed stays in the page, whatever the database said.
"""

from __future__ import annotations

from rrg_core.errors import RRGError
from rrg_core.store import ReviewConflictError, StoreUnavailableError
from ui import formatting as fmt
from ui.context import AppContext
from ui.guard import Outputs, guarded
from ui.records import ensure_recorded
from ui.session import ReviewState

#: Longest reviewer name the page sends on (the store allows 128; this catches pasted documents early).
MAX_REVIEWER = 128


def _draft_prose(state: ReviewState, key: str) -> str:
    draft = state.result.drafts.get(key) if state.result else None
    return fmt.prose(draft.sentences) if draft else ""


def insert_choices(state: ReviewState) -> list[tuple[str, str]]:
    """Sentences to insert: the other draft's (both drafts' before a start is chosen)."""
    if state.result is None:
        return []
    keys = [k for k in state.result.drafts if k != state.started_from] or list(state.result.drafts)
    choices = []
    for key in keys:
        for sentence in state.result.drafts[key].sentences:
            text = fmt.prose([sentence])
            choices.append((f"{fmt.MODEL_NAMES.get(key, key)}: {text}", text))
    return choices


def study_info(state: ReviewState) -> str:
    """One line about the study in the editor."""
    if state.result is None and state.study_id is None:
        return "No study open: upload an image (or pick an example) and press **Draft reports**."
    parts = [f"Study **#{state.study_id}**" if state.study_id else "Study not yet in the database"]
    parts.append(f"version {state.version}" if state.version else "not reviewed yet")
    if state.started_from:
        parts.append(f"started from {fmt.MODEL_NAMES.get(state.started_from, state.started_from)}")
    return " · ".join(parts)


def editor_footing(state: ReviewState, text: str | None = None) -> Outputs:
    """The editor for a study just opened: its saved review if it has one, else empty."""
    review = state.review
    import gradio as gr

    return {
        "editor": text if text is not None else (review.text if review else ""),
        "status": review.status if review else "draft",
        "comment": review.comment if review else "",
        "insert_choice": gr.update(choices=insert_choices(state), value=None),
        "study_info": study_info(state),
        "save_alert": "",
    }


@guarded("save_alert")
def start_from(state: ReviewState, key: str, text: str | None) -> Outputs:
    """Put a model's draft in the editor; refused while the editor holds the reviewer's own text."""
    import gradio as gr

    if state.result is None:
        raise RRGError("draft a study first")
    if key not in state.result.drafts:
        raise RRGError(f"there is no {fmt.MODEL_NAMES.get(key, key)} draft for this study")
    current = (text or "").strip()
    drafts = {_draft_prose(state, k) for k in state.result.drafts}
    if current and current not in drafts:
        raise RRGError(
            "the editor holds text of your own: it was not replaced. To start again from a draft, clear the "
            "editor first; or insert single sentences with “Insert”."
        )
    state.started_from = key
    return {
        "state": state,
        "editor": _draft_prose(state, key),
        "insert_choice": gr.update(choices=insert_choices(state), value=None),
        "study_info": study_info(state),
        "save_alert": "",
    }


@guarded("save_alert")
def insert_sentence(state: ReviewState, sentence: str | None, text: str | None) -> Outputs:
    """Append the chosen sentence to the editor's text."""
    if not sentence:
        raise RRGError("choose a sentence to insert")
    current = (text or "").rstrip()
    return {"editor": f"{current} {sentence}".strip(), "save_alert": ""}


def check_reviewer(name: str | None) -> str:
    """The reviewer's name, or RRGError saying what is wrong (the store checks again)."""
    clean = (name or "").strip()
    if not clean:
        raise RRGError("enter your name as the reviewer before saving")
    if len(clean) > MAX_REVIEWER:
        raise RRGError(
            f"the reviewer name is {len(clean):,} characters long; at most {MAX_REVIEWER} are allowed"
        )
    if "<" in clean or ">" in clean or any(ord(c) < 32 for c in clean):
        raise RRGError("the reviewer name may not contain < > or control characters: use plain text")
    return clean


@guarded("save_alert")
def save(
    context: AppContext,
    state: ReviewState,
    text: str | None,
    status: str | None,
    reviewer: str | None,
    comment: str | None,
) -> Outputs:
    """Save the editor as the study's next review version (never outputs the editor's text)."""
    try:
        return _save(context, state, text or "", status or "draft", reviewer, comment or "")
    except ReviewConflictError as conflict:
        theirs = _short(context, state)
        message = str(conflict) + (f" The saved text now reads: “{theirs}”" if theirs else "")
        return {"save_alert": fmt.alert(message, "warning")}
    except StoreUnavailableError:
        context.store.reset()  # the next save reopens the database
        raise


def _short(context: AppContext, state: ReviewState) -> str:
    try:
        review = context.store.get().latest_review(state.study_id)
    except Exception:
        return "(could not be read)"
    if review is None:
        return ""
    return review.text if len(review.text) < 400 else review.text[:400] + "…"


def _save(
    context: AppContext, state: ReviewState, text: str, status: str, reviewer: str | None, comment: str
) -> Outputs:
    if state.result is None and state.study_id is None:
        raise RRGError("there is no study to save: draft one first")
    name = check_reviewer(reviewer)
    if status == "final" and not text.strip():
        raise RRGError("an empty report cannot be saved as final: write the report, or save it as a draft")
    if state.study_id is None or (state.result is not None and not state.draft_ids):
        # The study was not stored when it was drafted. A review saved meanwhile is not loaded: the
        # save below then meets it as a conflict, and the reviewer is told, rather than overwriting it.
        ensure_recorded(context, state, load=False)
    draft_id = state.draft_ids.get(state.started_from) if state.started_from else None
    saved = context.store.get().save_review(
        state.study_id, name, text, state.labels, status, comment, draft_id, expected_version=state.version
    )
    state.version = saved.version
    state.review = saved
    when = saved.saved_at.strftime("%H:%M:%S UTC")
    message = (
        f"Saved version {saved.version} ({saved.status}) of study #{saved.study_id} "
        f"by {saved.reviewer} at {when}."
    )
    return {
        "state": state,
        "save_alert": fmt.alert(message, "success"),
        "study_info": study_info(state),
    }
