"""The page: Gradio Blocks with three tabs (Review, Worklist, Model card) wired to the callbacks.

Callbacks (``ui.review``, ``ui.editor``, ``ui.worklist``) return dicts of named outputs; here
each event lists the names it may change, and :func:`_outputs` turns the dict into Gradio's tuple
(``gr.skip()`` for a name the callback left alone, so e.g. a refused save never touches the
editor's text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from rrg_core.observations import OBSERVATIONS
from ui import editor, model_card, review, training_plot, worklist
from ui import formatting as fmt
from ui.context import AppContext
from ui.session import ReviewState

TITLE = "rrg-review"
VIEW_OUTPUTS = [
    "view_choice",
    "level",
    "window",
    "reset_window",
    "window_note",
    "image",
    "heatmap",
    "heat_caption",
]
RESULT_OUTPUTS = [
    "domain_warning",
    "support_note",
    "dcrrg_draft",
    "uar_draft",
    "uar_sentences",
    "flags",
    "table",
    "attr_observation",
    "neighbours",
]
EDITOR_OUTPUTS = ["editor", "status", "comment", "insert_choice", "study_info", "save_alert"]
STUDY_OUTPUTS = ["state", "alert", *VIEW_OUTPUTS, *RESULT_OUTPUTS, *EDITOR_OUTPUTS]
WORKLIST_OPEN = [
    "wl_selected",
    "wl_title",
    "wl_images",
    "wl_history",
    "wl_diff",
    "wl_drafts",
    "wl_open",
    "wl_alert",
]
HEADER = (
    '<div class="rrg-header"><span class="rrg-title">rrg-review</span>'
    '<span class="rrg-sub">chest X-ray report drafting with DCRRG and UAR, side by side</span>'
    '<span class="rrg-warn">Drafts are not for clinical use without a radiologist\'s review</span></div>'
)


def _outputs(result: dict[str, Any], names: Sequence[str]) -> tuple[Any, ...]:
    return tuple(result.get(name, gr.skip()) for name in names)


def _state(value: ReviewState | None) -> ReviewState:
    return value if isinstance(value, ReviewState) else ReviewState()


def build_app(context: AppContext) -> gr.Blocks:
    """The whole page over ``context`` (models, store, checkpoint facts)."""
    c: dict[str, Any] = {}
    with gr.Blocks(title=TITLE, fill_width=True, analytics_enabled=False) as app:
        c["state"] = gr.State(None)
        gr.HTML(HEADER)
        with gr.Tabs(selected="review", elem_id="rrg-tabs") as tabs:
            c["tabs"] = tabs
            with gr.Tab("Review", id="review", elem_id="rrg-tab-review"):
                _review_tab(context, c)
            with gr.Tab("Worklist", id="worklist", elem_id="rrg-tab-worklist") as worklist_tab:
                _worklist_tab(c)
            with gr.Tab("Model card", id="model-card", elem_id="rrg-tab-card") as card_tab:
                _model_card_tab(context, c)
        _wire_review(context, c)
        _wire_editor(context, c)
        _wire_worklist(context, c, worklist_tab)
        card_tab.select(lambda: model_card.corrections_markdown(context), None, [c["card_corrections"]])
        app.load(_who, None, [c["reviewer"]])
    return app


def _who(request: gr.Request) -> Any:
    """The logged-in reviewer's name, when the app runs with logins."""
    name = getattr(request, "username", None)
    return name if name else gr.skip()


# -- layout -----------------------------------------------------------------------------------------


def _review_tab(context: AppContext, c: dict[str, Any]) -> None:
    c["alert"] = gr.HTML(elem_id="rrg-alert")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=280):
            c["files"] = gr.File(
                label="Views of one study (PNG, JPEG or DICOM)",
                file_count="multiple",
                type="filepath",
                height=140,
                elem_id="rrg-files",
            )
            c["analyse"] = gr.Button("Draft reports", variant="primary", elem_id="rrg-analyse")
            examples = context.examples()
            if examples:
                gr.Examples(
                    examples=[[paths] for paths in examples],
                    inputs=[c["files"]],
                    label="Examples: synthetic phantoms",
                    example_labels=[
                        f"phantom {k + 1} ({len(p)} view{'s' if len(p) > 1 else ''})"
                        for k, p in enumerate(examples)
                    ],
                )
            c["view_choice"] = gr.Radio(label="View", visible=False, elem_id="rrg-view")
            c["level"] = gr.Slider(label="Window level", visible=False, elem_id="rrg-level")
            c["window"] = gr.Slider(label="Window width", visible=False, elem_id="rrg-width")
            c["reset_window"] = gr.Button("Reset window", size="sm", visible=False)
            c["window_note"] = gr.Markdown(elem_classes=["rrg-small"])
        with gr.Column(scale=5, min_width=360):
            with gr.Row():
                c["image"] = gr.Image(
                    label="Image",
                    height=280,
                    interactive=False,
                    elem_id="rrg-image",
                    buttons=["fullscreen"],
                    format="png",
                )
                c["heatmap"] = gr.Image(
                    label="Heatmap",
                    height=280,
                    interactive=False,
                    elem_id="rrg-heatmap",
                    buttons=["fullscreen"],
                    format="png",
                )
            c["heat_caption"] = gr.Markdown(elem_id="rrg-heat-caption", elem_classes=["rrg-small"])
            with gr.Row():
                c["attr_observation"] = gr.Dropdown(
                    list(OBSERVATIONS),
                    value=OBSERVATIONS[0],
                    label="Observation",
                    scale=2,
                    elem_id="rrg-attr-observation",
                )
                c["attr_method"] = gr.Dropdown(
                    review.ATTRIBUTION_METHODS,
                    value="gradcam",
                    label="Attribution method",
                    scale=2,
                    elem_id="rrg-attr-method",
                )
            c["attr"] = gr.Button("Show attribution", size="sm", elem_id="rrg-attr")
        with gr.Column(scale=6, min_width=420):
            c["domain_warning"] = gr.HTML(elem_id="rrg-domain")
            with gr.Row(equal_height=True):
                c["dcrrg_draft"] = gr.HighlightedText(
                    label="DCRRG draft",
                    show_legend=True,
                    show_inline_category=False,
                    combine_adjacent=False,
                    interactive=False,
                    elem_id="rrg-dcrrg",
                )
                c["uar_draft"] = gr.HighlightedText(
                    label="UAR draft: click a word for its heatmap",
                    show_legend=True,
                    show_inline_category=False,
                    combine_adjacent=False,
                    interactive=False,
                    elem_id="rrg-uar",
                )
            c["support_note"] = gr.HTML(elem_id="rrg-support")
            c["uar_sentences"] = gr.Radio(
                label="…or a sentence of the UAR draft", choices=[], elem_id="rrg-sentences"
            )
            c["flags"] = gr.HTML(elem_id="rrg-flags")
    with gr.Row(equal_height=False):
        with gr.Column(scale=7, min_width=480):
            c["table"] = gr.Dataframe(
                headers=fmt.TABLE_HEADERS,
                datatype=["str", "str", "html", "html", "html"],
                interactive=False,
                label="Observations (the DCRRG paper's Table 7): click a label to change it",
                elem_id="rrg-table",
                max_height=560,
                wrap=True,
                column_widths=["17%", "15%", "23%", "27%", "18%"],
            )
        with gr.Column(scale=5, min_width=380):
            _editor(c)
    c["neighbours"] = gr.HTML(elem_id="rrg-neighbours")


def _editor(c: dict[str, Any]) -> None:
    gr.Markdown("#### Report", elem_classes=["rrg-h"])
    c["study_info"] = gr.Markdown(editor.study_info(ReviewState()), elem_id="rrg-study-info")
    with gr.Row():
        c["start_dcrrg"] = gr.Button("Start from DCRRG", size="sm", elem_id="rrg-start-dcrrg")
        c["start_uar"] = gr.Button("Start from UAR", size="sm", elem_id="rrg-start-uar")
    with gr.Row(equal_height=True):
        c["insert_choice"] = gr.Dropdown(
            choices=[], label="Sentence of a draft", scale=4, elem_id="rrg-insert-choice"
        )
        c["insert"] = gr.Button("Insert", size="sm", scale=1, elem_id="rrg-insert")
    c["editor"] = gr.Textbox(label="Report text", lines=7, max_lines=18, elem_id="rrg-editor")
    with gr.Row():
        c["status"] = gr.Radio(["draft", "final"], value="draft", label="Status", elem_id="rrg-status")
        c["reviewer"] = gr.Textbox(label="Reviewer", elem_id="rrg-reviewer")
    c["comment"] = gr.Textbox(label="Comment", lines=1, elem_id="rrg-comment")
    c["save"] = gr.Button("Save review", variant="primary", elem_id="rrg-save")
    c["save_alert"] = gr.HTML(elem_id="rrg-save-alert")


def _worklist_tab(c: dict[str, Any]) -> None:
    with gr.Row(equal_height=True):
        c["wl_status"] = gr.Dropdown(
            worklist.STATUS_CHOICES, value=worklist.ANY, label="Status", elem_id="rrg-wl-status"
        )
        c["wl_reviewer"] = gr.Dropdown(
            [worklist.ANY], value=worklist.ANY, label="Reviewer", elem_id="rrg-wl-reviewer"
        )
        c["wl_flag"] = gr.Dropdown(
            worklist.FLAG_CHOICES, value=worklist.ANY, label="Disagreement", elem_id="rrg-wl-flag"
        )
        c["wl_domain"] = gr.Dropdown(
            worklist.DOMAIN_CHOICES, value=worklist.ANY, label="Domain", elem_id="rrg-wl-domain"
        )
        c["wl_refresh"] = gr.Button("Refresh", elem_id="rrg-wl-refresh")
    c["wl_alert"] = gr.HTML(elem_id="rrg-wl-alert")
    c["wl_table"] = gr.Dataframe(
        headers=fmt.WORKLIST_HEADERS,
        interactive=False,
        label="Studies: click one to open it",
        elem_id="rrg-wl-table",
        max_height=300,
        wrap=True,
        column_widths=["6%", "17%", "6%", "8%", "12%", "7%", "14%", "30%"],
    )
    c["wl_ids"] = gr.State([])
    c["wl_selected"] = gr.State(None)
    c["wl_title"] = gr.Markdown(elem_id="rrg-wl-title")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=240):
            c["wl_images"] = gr.Gallery(
                label="Views (as stored)", columns=2, height=220, elem_id="rrg-wl-images"
            )
            c["wl_open"] = gr.Button("Open in the review tab", interactive=False, elem_id="rrg-wl-open")
        with gr.Column(scale=5):
            gr.Markdown("#### Model draft → report (word diff)", elem_classes=["rrg-h"])
            c["wl_diff"] = gr.HTML(elem_id="rrg-wl-diff")
            c["wl_history"] = gr.Dataframe(
                headers=fmt.HISTORY_HEADERS,
                interactive=False,
                label="Versions (newest first)",
                elem_id="rrg-wl-history",
                max_height=240,
                wrap=True,
            )
            c["wl_drafts"] = gr.HTML(elem_id="rrg-wl-drafts")


def _model_card_tab(context: AppContext, c: dict[str, Any]) -> None:
    gr.Markdown(model_card.NOT_CLINICAL, elem_classes=["rrg-warnbox"])
    gr.Markdown("### Loaded checkpoints\n\n" + model_card.checkpoints_markdown(context))
    gr.Markdown("### What reviewers corrected")
    c["card_corrections"] = gr.Markdown(elem_id="rrg-card-corrections")
    gr.Markdown("### Training curves")
    for found in training_plot.training_curves(context):
        gr.Markdown(f"#### {found.title}\n\n{found.note}", elem_classes=["rrg-curves-note"])
        if found.figure is not None:
            gr.Plot(found.figure, show_label=False, elem_id=f"rrg-curves-{found.key}")
    gr.Markdown("### Evaluation\n\n" + model_card.evaluation_markdown(context))
    figure, note = model_card.roc_figure(context)
    gr.Markdown("### ROC curves per observation\n\n" + note)
    if figure is not None:
        gr.Plot(figure, show_label=False)


# -- events -----------------------------------------------------------------------------------------


def _wire_review(context: AppContext, c: dict[str, Any]) -> None:
    def outs(names: Sequence[str]) -> list[Any]:
        return [c[name] for name in names]

    def analyse(files: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        return _outputs(review.analyse(context, files, progress), STUDY_OUTPUTS)

    c["analyse"].click(analyse, [c["files"]], outs(STUDY_OUTPUTS))

    def choose_view(state: Any, choice: str) -> tuple[Any, ...]:
        return _outputs(review.choose_view(_state(state), choice), ["state", "alert", *VIEW_OUTPUTS])

    c["view_choice"].input(
        choose_view, [c["state"], c["view_choice"]], outs(["state", "alert", *VIEW_OUTPUTS])
    )

    window_names = ["state", "alert", "image", "heatmap", "heat_caption"]

    def set_window(state: Any, level: float, width: float) -> tuple[Any, ...]:
        return _outputs(review.set_window(_state(state), level, width), window_names)

    for slider in (c["level"], c["window"]):
        slider.release(set_window, [c["state"], c["level"], c["window"]], outs(window_names))

    def reset_window(state: Any) -> tuple[Any, ...]:
        return _outputs(review.reset_window(_state(state)), ["state", "alert", *VIEW_OUTPUTS])

    c["reset_window"].click(reset_window, [c["state"]], outs(["state", "alert", *VIEW_OUTPUTS]))

    heat_names = ["state", "alert", "heatmap", "heat_caption"]

    def select_word(state: Any, evt: gr.SelectData) -> tuple[Any, ...]:
        index = evt.index if isinstance(evt.index, int) else None
        return _outputs(review.select_word(_state(state), index), heat_names)

    c["uar_draft"].select(select_word, [c["state"]], outs(heat_names))

    def select_sentence(state: Any, index: Any) -> tuple[Any, ...]:
        return _outputs(review.select_sentence(_state(state), index), heat_names)

    c["uar_sentences"].input(select_sentence, [c["state"], c["uar_sentences"]], outs(heat_names))

    def attribute(
        state: Any,
        observation: str,
        method: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[Any, ...]:
        return _outputs(review.attribute(context, _state(state), observation, method, progress), heat_names)

    c["attr"].click(attribute, [c["state"], c["attr_observation"], c["attr_method"]], outs(heat_names))

    table_names = ["state", "alert", "table", "attr_observation"]

    def toggle(state: Any, evt: gr.SelectData) -> tuple[Any, ...]:
        index = evt.index if isinstance(evt.index, list | tuple) else None
        return _outputs(review.toggle_label(_state(state), index), table_names)

    c["table"].select(toggle, [c["state"]], outs(table_names))


def _wire_editor(context: AppContext, c: dict[str, Any]) -> None:
    names = ["state", "editor", "insert_choice", "study_info", "save_alert"]
    for key in ("dcrrg", "uar"):

        def start(state: Any, text: str, key: str = key) -> tuple[Any, ...]:
            return _outputs(editor.start_from(_state(state), key, text), names)

        c[f"start_{key}"].click(start, [c["state"], c["editor"]], [c[n] for n in names])

    def insert(state: Any, sentence: str, text: str) -> tuple[Any, ...]:
        return _outputs(editor.insert_sentence(_state(state), sentence, text), ["editor", "save_alert"])

    c["insert"].click(insert, [c["state"], c["insert_choice"], c["editor"]], [c["editor"], c["save_alert"]])

    save_names = ["state", "save_alert", "study_info"]

    def save(state: Any, text: str, status: str, reviewer: str, comment: str) -> tuple[Any, ...]:
        return _outputs(editor.save(context, _state(state), text, status, reviewer, comment), save_names)

    c["save"].click(
        save, [c["state"], c["editor"], c["status"], c["reviewer"], c["comment"]], [c[n] for n in save_names]
    )


def _wire_worklist(context: AppContext, c: dict[str, Any], tab: gr.Tab) -> None:
    list_names = ["wl_table", "wl_ids", "wl_reviewer", "wl_alert"]
    filters = [c["wl_status"], c["wl_reviewer"], c["wl_flag"], c["wl_domain"]]

    def refresh(status: str, reviewer: str, flag: str, domain: str) -> tuple[Any, ...]:
        return _outputs(worklist.refresh(context, status, reviewer, flag, domain), list_names)

    outputs = [c[n] for n in list_names]
    c["wl_refresh"].click(refresh, filters, outputs)
    tab.select(refresh, filters, outputs)
    for component in filters:
        component.input(refresh, filters, outputs)

    def open_row(ids: list[int], evt: gr.SelectData) -> tuple[Any, ...]:
        return _outputs(worklist.open_row(context, ids, evt.index), WORKLIST_OPEN)

    c["wl_table"].select(open_row, [c["wl_ids"]], [c[n] for n in WORKLIST_OPEN])

    reopen_names = [*STUDY_OUTPUTS, "tabs", "wl_alert"]

    def reopen(study_id: int, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        return _outputs(worklist.reopen(context, study_id, progress), reopen_names)

    c["wl_open"].click(reopen, [c["wl_selected"]], [c[n] for n in reopen_names])
