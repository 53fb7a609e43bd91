"""A training takes over the threads its launcher grants while it runs (the app's first start)."""

from __future__ import annotations

import torch

from train.common.runtime import THREADS_FILE_VARIABLE, refresh_threads


def test_refresh_threads_applies_a_granted_count_once(tmp_path, monkeypatch) -> None:
    before = torch.get_num_threads()
    grants = tmp_path / "lane-threads"
    monkeypatch.setenv(THREADS_FILE_VARIABLE, str(grants))
    try:
        assert refresh_threads() is None  # nothing granted yet
        wanted = 1 if before != 1 else 2
        grants.write_text(f"{wanted}\n")
        assert refresh_threads() == wanted and torch.get_num_threads() == wanted
        assert refresh_threads() is None  # already applied
        for bad in ("0", "two", ""):
            grants.write_text(bad)
            assert refresh_threads() is None and torch.get_num_threads() == wanted
        monkeypatch.delenv(THREADS_FILE_VARIABLE)
        grants.write_text(str(before))
        assert refresh_threads() is None  # no launcher: nothing read
    finally:
        torch.set_num_threads(before)
