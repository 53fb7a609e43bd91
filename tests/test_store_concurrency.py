"""Concurrent saves: of 20 reviewers saving the same study from the same version, exactly one wins and
every other one is told, with their edit handed back. On SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from store_helpers import backend_params, fresh_url, png_bytes

from rrg_core.store import ReviewConflictError, Store, ViewImage, content_hash, open_store

THREADS = 20
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=backend_params())
def store(request: pytest.FixtureRequest, tmp_path: Path):
    with fresh_url(request.param, tmp_path) as url, open_store(url) as opened:
        yield opened


def race(count: int, work: Callable[[int], Any]) -> tuple[dict[int, Any], dict[int, BaseException]]:
    """Run ``work(i)`` on ``count`` threads released together; results and exceptions by thread."""
    barrier = threading.Barrier(count)
    results: dict[int, Any] = {}
    errors: dict[int, BaseException] = {}

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except BaseException as error:  # collected and checked by the test
            errors[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a save hung"
    return results, errors


@pytest.mark.parametrize("start_version", [0, 3], ids=["first-save", "later-save"])
def test_twenty_concurrent_saves_one_wins_no_edit_lost(store: Store, start_version: int):
    study = store.add_study(content_hash(b"race"), [ViewImage("frontal", png_bytes())])
    for version in range(start_version):
        store.save_review(study.id, "setup", f"v{version + 1}", {}, "draft", expected_version=version)

    def save(index: int):
        return store.save_review(
            study.id, f"reviewer_{index}", f"edit of reviewer {index}", {"Edema": index % 2}, "final",
            expected_version=start_version,
        )  # fmt: skip

    results, errors = race(THREADS, save)
    assert len(results) == 1, f"{len(results)} saves won: {sorted(results)}"
    ((winner, saved),) = results.items()
    assert saved.version == start_version + 1
    assert len(errors) == THREADS - 1
    for index, error in errors.items():
        assert isinstance(error, ReviewConflictError), repr(error)
        assert error.unsaved_text == f"edit of reviewer {index}"  # every loser keeps what they typed
        assert error.unsaved_labels["Edema"] == index % 2
        assert error.saved_by == f"reviewer_{winner}" and error.current_version == start_version + 1
        assert "changed since you opened it" in str(error)
    history = store.review_history(study.id)
    assert [v.version for v in history] == list(range(1, start_version + 2))
    assert history[-1].text == f"edit of reviewer {winner}"
    actions = [e.action for e in store.audit_events(study.id)]
    assert actions.count("review.saved") == start_version + 1
    assert actions.count("review.refused") == THREADS - 1


def test_each_reviewer_saving_in_turn_from_what_they_saw_all_succeed(store: Store):
    """Ten threads each retry from the version the conflict names: all edits land, versions contiguous."""
    study = store.add_study(content_hash(b"turns"), [ViewImage("frontal", png_bytes())])

    def save_until_accepted(index: int) -> int:
        version = 0
        while True:
            try:
                return store.save_review(
                    study.id, f"r{index}", f"text {index}", {}, "draft", expected_version=version
                ).version
            except ReviewConflictError as conflict:
                version = conflict.current_version  # "reopen" and save again

    results, errors = race(10, save_until_accepted)
    assert errors == {}
    assert sorted(results.values()) == list(range(1, 11))
    assert {v.text for v in store.review_history(study.id)} == {f"text {i}" for i in range(10)}


def test_concurrent_adds_of_the_same_study_make_one_study(store: Store):
    images = [ViewImage("frontal", png_bytes(1)), ViewImage("lateral", png_bytes(2))]
    results, errors = race(THREADS, lambda _: store.add_study(content_hash(b"same"), images))
    assert errors == {}
    assert len({study.id for study in results.values()}) == 1
    assert len(store.worklist()) == 1
    assert [e.action for e in store.audit_events()] == ["study.added"]


@pytest.mark.parametrize("backend", backend_params())
def test_processes_opening_a_new_database_together(backend: str, tmp_path: Path):
    """Three app processes started together on an empty database: one migrates, the others wait for it."""
    code = "import sys; from rrg_core.store import open_store; print(open_store(sys.argv[1]).worklist())"
    with fresh_url(backend, tmp_path) as url:
        command = [sys.executable, "-c", code, url]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        children = [subprocess.Popen(command, cwd=REPO_ROOT, **pipes) for _ in range(3)]
        outcomes = [child.communicate(timeout=120) for child in children]
        for child, (out, err) in zip(children, outcomes, strict=True):
            assert child.returncode == 0, err
            assert out.strip() == "[]"
        with open_store(url) as store:
            assert store.worklist() == []
