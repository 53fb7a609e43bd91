"""Progress bars that draw only on a terminal.

In a log file (the app's demo build, a batch job, CI) a tqdm bar is a run of carriage-return
redraws; there the commands' own one-line summaries say what happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Iterable[Any] | None = None, *, show: bool = True, **options: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one), drawn when ``show`` and stderr is a terminal."""
    # disable=None is tqdm's own "off unless the output is a terminal"
    return tqdm(iterable, disable=None if show else True, **options)
