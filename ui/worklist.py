"""Callbacks of the worklist tab: saved studies by status, reviewer and disagreement; one study's
versions and the word diff between the model draft and the report; reopening it for review."""

from __future__ import annotations

from collections.abc import Sequence

import gradio as gr

from rrg_core.data.reports import split_sentences
from rrg_core.errors import RRGError
from rrg_core.store import UNREVIEWED, OpenedStudy
from ui import formatting as fmt
from ui.context import AppContext
from ui.guard import Outputs, guarded
from ui.images import read_stored
from ui.records import record_study
from ui.review import (
    Progress,
    _no_progress,
    editor_outputs,
    result_outputs,
    run_models,
    start_state,
    view_outputs,
)
from ui.session import ReviewState

ANY = "any"
STATUS_CHOICES = [ANY, UNREVIEWED, "draft", "final"]
FLAG_CHOICES = [(ANY, ANY), ("with disagreements", "yes"), ("without", "no")]
DOMAIN_CHOICES = [(ANY, ANY), ("out of domain", "out"), ("in domain (or not checked)", "in")]


@guarded("wl_alert")
def refresh(
    context: AppContext, status: str | None, reviewer: str | None, flag: str | None, domain: str | None = None
) -> Outputs:
    """The worklist rows for the filters, newest change first."""
    store = context.store.get()
    rows = store.worklist(
        status=None if status in (None, "", ANY) else status,
        reviewer=None if reviewer in (None, "", ANY) else reviewer,
        has_disagreement={"yes": True, "no": False}.get(flag or ANY),
        out_of_domain={"out": True, "in": False}.get(domain or ANY),
    )
    table = [
        [
            f"#{row.study.id}",
            row.study.source_name or "",
            str(len(row.study.views)),
            row.status,
            row.reviewer or "",
            str(row.version),
            fmt.when(row.updated_at or row.study.created_at),
            ", ".join(
                ([fmt.OUT_OF_DOMAIN] if row.study.out_of_domain else []) + list(row.study.disagreements)
            ),
        ]
        for row in rows
    ]
    reviewers = [ANY, *store.reviewers()]
    note = "" if rows else fmt.alert("No study matches these filters.", "info")
    return {
        "wl_table": table,
        "wl_ids": [row.study.id for row in rows],
        "wl_reviewer": gr.update(choices=reviewers, value=reviewer if reviewer in reviewers else ANY),
        "wl_alert": note,
    }


def _model_draft(opened: OpenedStudy) -> tuple[str, str]:
    """(name, prose) of the draft the latest review started from, else the study's first draft."""
    review = opened.review
    chosen = None
    if review is not None and review.started_from_draft_id is not None:
        chosen = next((d for d in opened.drafts if d.id == review.started_from_draft_id), None)
    if chosen is None and opened.drafts:
        chosen = opened.drafts[0]
    if chosen is None:
        return "", ""
    return chosen.model_name, fmt.prose(split_sentences(chosen.text))


def history_rows(opened: OpenedStudy) -> list[list[str]]:
    """The versions of the study's review, newest first."""
    names = {d.id: d.model_name for d in opened.drafts}
    return [
        [
            str(v.version),
            v.reviewer,
            v.status,
            fmt.when(v.saved_at),
            v.comment if len(v.comment) <= 80 else v.comment[:80] + "…",
            names.get(v.started_from_draft_id, "") if v.started_from_draft_id else "",
            fmt.corrections_cell(v.corrections),
        ]
        for v in reversed(opened.history)
    ]


@guarded("wl_alert")
def open_row(context: AppContext, ids: Sequence[int] | None, index: Sequence[int] | int | None) -> Outputs:
    """Show one study of the worklist: images, versions and the word diff draft -> report."""
    row = index[0] if isinstance(index, list | tuple) else index
    if row is None or not ids or not 0 <= int(row) < len(ids):
        return {}
    study_id = int(ids[int(row)])
    store = context.store.get()
    opened = store.open_study(study_id)
    images = [(img.png, img.view) for img in store.study_images(study_id)]
    review = opened.review
    name, draft = _model_draft(opened)
    if review is None:
        diff = '<div class="rrg-muted">Not reviewed yet: no report to compare with the drafts.</div>'
    else:
        header = (
            f"<div><b>{fmt.escape(name or 'model draft')}</b> → "
            f"version {review.version} ({review.status})</div>"
        )
        diff = header + fmt.word_diff_html(draft, review.text)
    drafts = "".join(
        f"<div class='rrg-stored-draft'><b>{fmt.escape(d.model_name)}</b> ({fmt.escape(d.model_version)}, "
        f"{fmt.when(d.created_at)}): {fmt.escape(fmt.prose(split_sentences(d.text)))}</div>"
        for d in opened.drafts
    )
    study = opened.study
    flags = (
        ", ".join(([fmt.OUT_OF_DOMAIN] if study.out_of_domain else []) + list(study.disagreements)) or "none"
    )
    title = (
        f"#### Study #{study.id} · {fmt.escape(study.source_name or 'no name')} · "
        f"{'not reviewed' if review is None else f'version {review.version}, {review.status}'} · "
        f"flags: {flags}"
    )
    return {
        "wl_selected": study_id,
        "wl_title": title,
        "wl_images": [_pil(png) for png, _view in images],
        "wl_history": history_rows(opened),
        "wl_diff": diff,
        "wl_drafts": drafts or '<div class="rrg-muted">No drafts stored.</div>',
        "wl_open": gr.update(interactive=True),
        "wl_alert": "",
    }


def _pil(png: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("L")


@guarded("wl_alert")
def reopen(context: AppContext, study_id: int | None, progress: Progress = _no_progress) -> Outputs:
    """Open a stored study in the review tab: its images through both models, its review in the editor."""
    if not study_id:
        raise RRGError("choose a study in the worklist first")
    progress(0.05, desc="Reading the stored images")
    store = context.store.get()
    stored = store.study_images(int(study_id))
    study = store.get_study(int(study_id))
    views = read_stored([(img.view, img.png) for img in stored])
    state = ReviewState(views=views, study_id=int(study_id), source_name=study.source_name)
    result = run_models(context, views, progress)
    start_state(state, result)
    notes = record_study(context, state)
    if state.review is None:
        notes.append(("info", f"Study #{study_id} opened: not reviewed yet."))
    return {
        "state": state,
        "tabs": gr.Tabs(selected="review"),
        "alert": fmt.alerts(notes),
        "wl_alert": "",
        **view_outputs(state),
        **result_outputs(context, state),
        **editor_outputs(state),
    }
