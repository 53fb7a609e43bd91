"""Build the shared context and serve the page (used by ``app.py`` and the end-to-end test)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr

from rrg_core.checkpoints import find_checkpoints
from rrg_core.pipeline import ReviewPipeline
from ui.context import TRAINED_ON_FILE, AppContext, StoreHandle, read_checkpoint_info
from ui.layout import build_app

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: Uploads larger than this are refused by the server before any callback runs.
MAX_FILE_SIZE = "100mb"


def make_context(
    checkpoints: str | os.PathLike,
    db_url: str | None,
    *,
    data_root: str | os.PathLike | None = None,
    device: str | None = None,
    neighbours: int = 6,
) -> AppContext:
    """Load the models under ``checkpoints`` and open (lazily) the review database at ``db_url``.

    ``data_root``: the data set folder the retrieval indexes were built from, when the indexes do
    not record it (for the neighbours' images).
    """
    pipeline = ReviewPipeline.from_checkpoints(checkpoints, device=device, neighbours=neighbours)
    folders = find_checkpoints(checkpoints)
    root = Path(data_root) if data_root else None
    infos = {key: read_checkpoint_info(key, folders[key], root) for key in pipeline.models if key in folders}
    note = Path(checkpoints) / TRAINED_ON_FILE
    trained_on = note.read_text(encoding="utf-8").strip() if note.is_file() else None
    context = AppContext(
        pipeline=pipeline, store=StoreHandle(db_url), checkpoints=infos, trained_on=trained_on
    )
    try:
        context.store.get()
    except Exception as error:
        logger.warning("review database not available at start-up (saving will retry): %s", error)
    return context


def css() -> str:
    """The page's style sheet."""
    return (ASSETS / "style.css").read_text(encoding="utf-8")


def serve(
    context: AppContext,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    auth: Any = None,
    block: bool = True,
    quiet: bool = False,
) -> gr.Blocks:
    """Build the page and serve it; ``block`` False returns once the server runs (tests)."""
    app = build_app(context)
    app.queue(default_concurrency_limit=2)
    app.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        auth_message="rrg-review: sign in with your reviewer login" if auth else None,
        prevent_thread_lock=not block,
        css=css(),
        max_file_size=MAX_FILE_SIZE,
        allowed_paths=[str(context.examples_dir)],
        ssr_mode=False,
        show_error=False,
        quiet=quiet,
        footer_links=[],
    )
    return app
