"""Progress bars draw on a terminal only: in a log file they would be carriage-return noise."""

from __future__ import annotations

import io

from rrg_core.progress import progress_bar


def test_no_bar_is_drawn_into_a_file_or_when_not_asked_for() -> None:
    log = io.StringIO()  # not a terminal, as a log file or CI's output
    with progress_bar(range(3), file=log) as bar:
        assert bar.disable and list(bar) == [0, 1, 2]
    assert log.getvalue() == ""
    assert progress_bar(range(3), show=False).disable


def test_a_terminal_gets_its_bar() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    with progress_bar(range(3), file=screen, desc="step1") as bar:
        assert not bar.disable
        list(bar)
    assert "step1" in screen.getvalue()
