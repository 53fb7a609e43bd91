"""The page served until the models exist: it says so, and nothing more."""

from __future__ import annotations

import gradio as gr

TITLE = "rrg-review"
NOT_BUILT_MESSAGE = (
    "The report-drafting models (DCRRG and UAR) are not built yet, so this page cannot draft reports. "
    "What exists today is the foundation: image loading (PNG, JPEG, DICOM), report cleaning and "
    "vocabulary, data set readers and evaluation metrics. See the README for what works."
)


def build_placeholder_app() -> gr.Blocks:
    """A one-message Gradio page that states honestly what is not there yet."""
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\n\n{NOT_BUILT_MESSAGE}")
    return app
