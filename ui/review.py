"""Callbacks of the review tab: draft a study, look at its views, heatmaps and observation table.

Each returns a dict of named outputs (see :mod:`ui.guard`); the layout binds the names to
components. Gradio is used only for ``gr.update`` and the progress bar.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr
import numpy as np

from rrg_core.data.finding_words import named_observation
from rrg_core.data.reports import sentence_spans
from rrg_core.errors import RRGError
from rrg_core.explain.overlay import normalise_map
from rrg_core.observations import OBSERVATIONS
from rrg_core.review_result import ReviewResult
from ui import formatting as fmt
from ui.context import AppContext
from ui.guard import Outputs, guarded
from ui.images import LoadedView, heat_overlay, read_uploads
from ui.records import record_study
from ui.session import Heat, ReviewState

logger = logging.getLogger(__name__)

ATTRIBUTION_METHODS = [
    ("Grad-CAM", "gradcam"),
    ("Integrated Gradients", "integrated_gradients"),
    ("Occlusion", "occlusion"),
]
METHOD_NAMES = {value: name for name, value in ATTRIBUTION_METHODS}
Progress = Callable[..., Any]


def _no_progress(*_args: Any, **_kwargs: Any) -> None:
    return None


# -- what the view panel shows ----------------------------------------------------------------------


def heat_image(state: ReviewState) -> tuple[np.ndarray | None, str]:
    """The heatmap over the current view, and its caption (None and a hint when there is none)."""
    view, heat = state.view, state.heat
    if view is None:
        return None, ""
    if heat is None:
        return None, "Click a word or a sentence of the UAR draft, or ask for an attribution."
    if heat.view is not None:
        if heat.view != state.current:
            return (
                None,
                f"{heat.caption}: computed on view {heat.view + 1}; press “Show attribution” for this view.",
            )
        return heat_overlay(view, heat.maps[0], normalise=False), heat.caption
    if state.current >= len(heat.maps):
        return None, f"{heat.caption}: UAR read {len(heat.maps)} view(s); this view has no map."
    return heat_overlay(view, heat.maps[state.current], normalise=False), heat.caption


def view_outputs(state: ReviewState) -> Outputs:
    """The view selector, window/level sliders, the image and the heatmap."""
    view = state.view
    if view is None:
        return {
            "view_choice": gr.update(choices=[], value=None, visible=False),
            "level": gr.update(visible=False),
            "window": gr.update(visible=False),
            "reset_window": gr.update(visible=False),
            "window_note": "",
            "image": None,
            "heatmap": None,
            "heat_caption": "",
        }
    lo, hi = view.value_range()
    span = max(hi - lo, 1e-3)
    heatmap, caption = heat_image(state)
    labels = state.view_labels()
    note = view.describe()
    if view.adjustable:
        note += " · window/level changes the display only; the models read the image's own window"
    return {
        "view_choice": gr.update(choices=labels, value=labels[state.current], visible=len(labels) > 1),
        "level": gr.update(
            minimum=lo,
            maximum=hi,
            value=float(np.clip(view.centre, lo, hi)),
            step=span / 500,
            visible=view.adjustable,
        ),
        "window": gr.update(
            minimum=span / 500,
            maximum=2 * span,
            value=float(np.clip(view.width, span / 500, 2 * span)),
            step=span / 500,
            visible=view.adjustable,
        ),
        "reset_window": gr.update(visible=view.adjustable),
        "window_note": note,
        "image": view.display(),
        "heatmap": heatmap,
        "heat_caption": caption,
    }


def result_outputs(context: AppContext, state: ReviewState) -> Outputs:
    """Drafts, flags, the observation table, the attribution choices and the neighbours."""
    result = state.result
    if result is None:
        return {}
    drafts = result.drafts
    flags = result.disagreements
    weak_below = (result.support or {}).get("weak_below")
    uar = drafts.get("uar")
    sentences = [fmt.prose([s.text]) for s in sentence_spans(uar.tokens)] if uar else []
    flagged = [d.observation for d in flags]
    by_probability = sorted(result.observations, key=lambda row: -row.probability)
    default_observation = (
        flagged[0] if flagged else (by_probability[0].observation if by_probability else OBSERVATIONS[0])
    )
    return {
        "domain_warning": fmt.domain_html(result.domain),
        "dcrrg_draft": fmt.sentence_highlights(drafts["dcrrg"], flags, weak_below)
        if "dcrrg" in drafts
        else [(result.missing.get("dcrrg", "DCRRG is not loaded."), None)],
        "uar_draft": fmt.word_highlights(uar, flags, weak_below)
        if uar
        else [(result.missing.get("uar", "UAR is not loaded."), None)],
        "support_note": fmt.support_note(drafts, result.support),
        "uar_sentences": gr.update(choices=[(s, i) for i, s in enumerate(sentences)], value=None),
        "flags": fmt.disagreements_html(flags) + fmt.missing_html(result.missing),
        "table": table_value(state),
        "attr_observation": gr.update(value=default_observation),
        "neighbours": neighbours_value(context, result),
    }


def table_value(state: ReviewState) -> list[list[str]]:
    """The observation table's rows for the current labels."""
    result = state.result
    if result is None:
        return []
    return fmt.observation_rows(
        result.observations, state.labels, result.drafts, result.disagreements, state.model_labels
    )


def neighbours_value(context: AppContext, result: ReviewResult) -> str:
    """The neighbours' cards, with their images where the index's data folder is known."""
    thumbs = {}
    for key, found in result.neighbours.items():
        for i, neighbour in enumerate(found):
            thumbs[(key, i)] = fmt.thumbnail_uri(context.neighbour_image(key, neighbour.image_path))
    reason = "the data set folder of the retrieval index is unknown or moved: start the app with --data DIR"
    return fmt.neighbours_html(result.neighbours, thumbs, reason)


# -- drafting -------------------------------------------------------------------------------------


def run_models(context: AppContext, views: Sequence[LoadedView], progress: Progress) -> ReviewResult:
    """Both models on the views (the pipeline runs one request at a time)."""
    progress(0.3, desc="Running DCRRG and UAR")
    return context.pipeline.review([v.radiograph for v in views])


def start_state(state: ReviewState, result: ReviewResult) -> None:
    """Set the labels and the heatmap for a fresh result."""
    state.result = result
    state.model_labels = fmt.starting_labels(result.observations, result.drafts)
    state.labels = dict(state.model_labels)
    state.heat = None
    state.current = 0


@guarded("alert")
def analyse(context: AppContext, files: Sequence[str] | None, progress: Progress = _no_progress) -> Outputs:
    """Read the uploads, run both models, record the study and show everything."""
    progress(0.05, desc="Reading the images")
    views = read_uploads(files)
    state = ReviewState(views=views, source_name=views[0].name)
    result = run_models(context, views, progress)
    start_state(state, result)
    progress(0.8, desc="Recording the study")
    notes = [("warning", w) for w in result.warnings]
    notes += record_study(context, state)
    progress(1.0, desc="Done")
    return {
        "state": state,
        "alert": fmt.alerts(notes)
        or fmt.alert(f"Drafted in {result.timings.get('total', 0):.1f} s.", "success"),
        **view_outputs(state),
        **result_outputs(context, state),
        **editor_outputs(state),
    }


def editor_outputs(state: ReviewState, text: str | None = None) -> Outputs:
    """The editor as a study opens: its saved review, or empty until a draft is chosen."""
    from ui.editor import editor_footing

    return editor_footing(state, text)


# -- looking --------------------------------------------------------------------------------------


@guarded("alert")
def choose_view(state: ReviewState, choice: str | None) -> Outputs:
    """Show another view of the study."""
    labels = state.view_labels()
    if choice in labels:
        state.current = labels.index(choice)
    return {"state": state, **view_outputs(state)}


@guarded("alert")
def set_window(state: ReviewState, level: float, width: float) -> Outputs:
    """Apply the window/level sliders to the current view (display only)."""
    view = state.view
    if view is None:
        return {}
    view.set_window(level, width)
    heatmap, caption = heat_image(state)
    return {"state": state, "image": view.display(), "heatmap": heatmap, "heat_caption": caption}


@guarded("alert")
def reset_window(state: ReviewState) -> Outputs:
    """Back to the image's own window."""
    if state.view is not None:
        state.view.reset_window()
    return {"state": state, **view_outputs(state)}


def _need_attention(state: ReviewState) -> ReviewResult:
    result = state.result
    if result is None or result.attention is None or "uar" not in result.drafts:
        raise RRGError("no UAR draft to explain: draft a study first (UAR must be loaded)")
    return result


@guarded("alert")
def select_word(state: ReviewState, index: int | None) -> Outputs:
    """The heatmap of word ``index`` of the UAR draft: for a word that names a finding, the findings
    head's evidence for that observation (what made the draft state it, under label context); for
    any other word, or a model without the head, the word's TIR attention."""
    result = _need_attention(state)
    attention = result.attention
    tokens = attention.tokens
    if index is None or not 0 <= int(index) < len(tokens):
        raise RRGError("click a word of the UAR draft")
    index = int(index)
    observation = named_observation(tokens, index)
    if observation is not None and attention.evidence is not None:
        maps = normalise_map(attention.evidence[OBSERVATIONS.index(observation)]).numpy()
        caption = (
            f"UAR findings head's evidence for {observation}, which the word “{tokens[index]}” names "
            f"(gradient × input; word {index + 1}). The sentence list shows the attention."
        )
    else:
        maps = normalise_map(attention.maps[index]).numpy()
        caption = f"UAR text-to-image attention of the word “{tokens[index]}” (word {index + 1})"
    state.heat = Heat(maps, caption)
    heatmap, caption = heat_image(state)
    return {"state": state, "heatmap": heatmap, "heat_caption": caption}


@guarded("alert")
def select_sentence(state: ReviewState, index: int | None) -> Outputs:
    """The TIR heatmap of a sentence of the UAR draft: the mean of its words' maps."""
    if index is None:
        return {}
    result = _need_attention(state)
    spans = sentence_spans(result.attention.tokens)
    if not 0 <= int(index) < len(spans):
        raise RRGError("choose one of the sentences of the UAR draft")
    span = spans[int(index)]
    maps = normalise_map(result.attention.maps[span.start : span.stop].mean(axis=0)).numpy()
    state.heat = Heat(maps, f"UAR attention of the sentence “{fmt.prose([span.text])}”")
    heatmap, caption = heat_image(state)
    return {"state": state, "heatmap": heatmap, "heat_caption": caption}


@guarded("alert")
def attribute(
    context: AppContext, state: ReviewState, observation: str, method: str, progress: Progress = _no_progress
) -> Outputs:
    """The captum attribution of one observation by DCRRG's Step-1 head, on the current view."""
    view = state.view
    if view is None:
        raise RRGError("draft a study first: attributions are computed on its image")
    if observation not in OBSERVATIONS:
        raise RRGError("choose an observation for the attribution")
    progress(0.1, desc=f"{METHOD_NAMES.get(method, method)} of {observation}")
    # The pipeline builds captum's attributor once and runs it behind the lock its drafts take:
    # the hooks on DCRRG must never fire during another request's forward pass.
    found = context.pipeline.attribute(view.radiograph, observation, method)
    caption = (
        f"{METHOD_NAMES.get(found.method, found.method)} attribution of {observation} by DCRRG's Step-1 "
        f"classifier on view {state.current + 1} (probability on this view {found.probability:.2f}; "
        f"{found.seconds:.1f} s)"
    )
    state.heat = Heat(found.heatmap.numpy()[None], caption, view=state.current)
    heatmap, caption = heat_image(state)
    return {"state": state, "heatmap": heatmap, "heat_caption": caption, "alert": ""}


@guarded("alert")
def toggle_label(state: ReviewState, index: Sequence[int] | None) -> Outputs:
    """A click on the table: on a label, the next label; on an observation, pick it for attribution."""
    if state.result is None or not index or len(index) < 2:
        return {}
    row, column = int(index[0]), int(index[1])
    if not 0 <= row < len(OBSERVATIONS):
        return {}
    name = OBSERVATIONS[row]
    if column == fmt.LABEL_COLUMN:
        state.labels[name] = fmt.NEXT_LABEL[state.labels.get(name)]
        return {"state": state, "table": table_value(state)}
    return {"attr_observation": gr.update(value=name)}
