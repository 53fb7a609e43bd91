"""Errors of the review store: :class:`rrg_core.errors.RRGError` subclasses whose messages say what to do."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rrg_core.errors import RRGError


class StoreError(RRGError):
    """The store refused an operation (bad input, unknown study, a schema it cannot use)."""


class StoreUnavailableError(StoreError):
    """The database cannot be used right now: unreachable, read-only or locked by another program."""


class ReviewConflictError(StoreError):
    """A save was refused because someone saved the study after the caller opened it.

    Nothing is overwritten. The refused edit travels with the error (``unsaved_text``,
    ``unsaved_labels``, ``unsaved_status``, ``unsaved_comment``) so the page can give it
    back to the reviewer, who reopens the study and merges.
    """

    def __init__(
        self,
        *,
        study_id: int,
        expected_version: int,
        current_version: int,
        saved_by: str | None,
        saved_at: datetime | None,
        unsaved_text: str,
        unsaved_labels: dict[str, Any],
        unsaved_status: str,
        unsaved_comment: str,
    ) -> None:
        self.study_id = study_id
        self.expected_version = expected_version
        self.current_version = current_version
        self.saved_by = saved_by
        self.saved_at = saved_at
        self.unsaved_text = unsaved_text
        self.unsaved_labels = unsaved_labels
        self.unsaved_status = unsaved_status
        self.unsaved_comment = unsaved_comment
        super().__init__(self._message())

    def _message(self) -> str:
        if self.current_version < self.expected_version:
            # Only a caller's mistake gets here (a version it never read); the edit is kept all the same.
            who = f"it is at version {self.current_version}, not a later one"
        else:
            when = self.saved_at.strftime("%Y-%m-%d %H:%M:%S UTC") if self.saved_at else "an unknown time"
            who = f"version {self.current_version} was saved by {self.saved_by or 'someone'} at {when}"
        return (
            f"study {self.study_id} changed since you opened it: {who}, and you opened version "
            f"{self.expected_version}. Your edit was NOT saved and nothing was overwritten; your text is "
            f"kept. Reopen the study to see the new version, then merge your changes and save again."
        )
