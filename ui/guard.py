"""Every callback's safety net: a failure becomes a readable message in the page, never a stack trace.

Callbacks return a dict of named outputs (``{"alert": html, "editor": text, ...}``); the layout
turns it into Gradio's output tuple. :func:`guarded` catches what a callback raises and returns
only the message under the callback's alert name, so every other output (the editor's text above
all) is left exactly as it was.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from rrg_core.errors import RRGError
from rrg_core.store import ReviewConflictError, StoreUnavailableError
from ui.formatting import alert

logger = logging.getLogger(__name__)

Outputs = dict[str, Any]


def error_message(error: BaseException) -> tuple[str, str]:
    """(kind, message) for an exception: its own message for the errors users cause, a generic line
    (details in the server log) for anything else."""
    if isinstance(error, ReviewConflictError):
        return "warning", str(error)
    if isinstance(error, StoreUnavailableError):
        return (
            "error",
            f"{error} Your text is still in the editor: nothing typed was lost. Try again shortly.",
        )
    if isinstance(error, RRGError | ValueError):
        return "error", str(error)
    if isinstance(error, MemoryError):
        return "error", "The server ran out of memory on this request; try a smaller image."
    return "error", (
        f"Something went wrong on the server ({type(error).__name__}). Nothing was saved by this request; "
        "the details are in the server log."
    )


def guarded(alert_name: str = "alert") -> Callable[[Callable[..., Outputs]], Callable[..., Outputs]]:
    """Decorate a callback so that an exception becomes ``{alert_name: <alert html>}``."""

    def decorate(function: Callable[..., Outputs]) -> Callable[..., Outputs]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Outputs:
            try:
                return function(*args, **kwargs)
            except Exception as error:  # the page must survive anything a callback raises
                known = isinstance(error, RRGError | ValueError | MemoryError)
                if known:
                    logger.info("%s refused: %s", function.__name__, error)
                else:
                    logger.exception("%s failed", function.__name__)
                kind, message = error_message(error)
                return {alert_name: alert(message, kind)}

        return wrapper

    return decorate
