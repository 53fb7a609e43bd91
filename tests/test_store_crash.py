"""A process killed (SIGKILL) in the middle of a loop of saves leaves the database consistent, and every
save it acknowledged is there. On SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from store_helpers import backend_params, fresh_url, png_bytes

from rrg_core.store import ViewImage, content_hash, open_store

REPO_ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 3

# The child saves new versions as fast as it can and prints "saved <version>" only after the save
# returned (its transaction committed): a printed line is an acknowledged save.
CHILD = r"""
import sys
from rrg_core.store import NewDraft, ReviewConflictError, open_store

store = open_store(sys.argv[1])
study_id = int(sys.argv[2])
version = store.open_study(study_id).version
print("ready", version, flush=True)
while True:
    if version % 7 == 0:
        store.add_drafts(study_id, [NewDraft("DCRRG", "1", "h", f"draft at {version}")], ["Edema"])
    saved = store.save_review(
        study_id, "crash_test", f"text of version {version + 1}", {"Edema": 1}, "draft",
        comment="x" * (version % 50), expected_version=version,
    )
    version = saved.version
    print("saved", version, flush=True)
"""


@pytest.fixture(params=backend_params())
def store_url(request: pytest.FixtureRequest, tmp_path: Path):
    with fresh_url(request.param, tmp_path) as url:
        yield url


def run_and_kill(url: str, study_id: int, acknowledged_before_kill: int) -> list[int]:
    """Start the child, SIGKILL it once it acknowledged that many saves; the versions it acknowledged."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(study_id)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    acknowledged: list[int] = []
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first.startswith("ready"), first + child.stderr.read()
        while len(acknowledged) < acknowledged_before_kill:
            line = child.stdout.readline()
            assert line.startswith("saved"), line + child.stderr.read()
            acknowledged.append(int(line.split()[1]))
        child.send_signal(signal.SIGKILL)  # it is in the middle of its next save (or the one after)
        rest, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # Lines printed before the kill landed are acknowledged too; a cut-off last line is not.
    acknowledged += [int(line.split()[1]) for line in rest.splitlines(keepends=True) if line.endswith("\n")]
    assert child.returncode == -signal.SIGKILL
    return acknowledged


def test_sigkill_during_saves_loses_no_acknowledged_save(store_url: str):
    with open_store(store_url) as store:
        study = store.add_study(content_hash(b"crash"), [ViewImage("frontal", png_bytes())])
    acknowledged: list[int] = []
    for round_index in range(ROUNDS):
        acknowledged += run_and_kill(store_url, study.id, acknowledged_before_kill=15 + 11 * round_index)
        check_consistent(store_url, study.id, acknowledged)


def check_consistent(url: str, study_id: int, acknowledged: list[int]) -> None:
    with open_store(url) as store:
        if store.backend == "sqlite":
            with store.engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
                assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        history = store.review_history(study_id)
        versions = [v.version for v in history]
        assert versions == list(range(1, len(versions) + 1)), "versions are not contiguous"
        assert set(acknowledged) <= set(versions), "an acknowledged save is missing"
        assert all(v.text == f"text of version {v.version}" for v in history)
        latest = store.latest_review(study_id)
        assert latest is not None and latest.version == versions[-1] and latest == history[-1]
        saved_events = [e for e in store.audit_events(study_id, limit=100_000) if e.action == "review.saved"]
        assert [e.detail["version"] for e in saved_events] == versions  # each save and its audit, together
        with store.engine.connect() as connection:
            orphans = connection.execute(
                text("SELECT count(*) FROM drafts WHERE study_id NOT IN (SELECT id FROM studies)")
            ).scalar()
        assert orphans == 0
        # The database still takes saves after the crash.
        last = versions[-1]
        after = store.save_review(
            study_id, "after", f"text of version {last + 1}", {}, "draft", expected_version=last
        )
        assert after.version == last + 1
