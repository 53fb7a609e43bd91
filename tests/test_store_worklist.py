"""The review store's worklist (its filters and reviewers), the export of reviewed studies and the audit
log. On SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_helpers import add_study, backend_params, fresh_url, save, two_drafts

from rrg_core.store import Store, StoreError, open_store


@pytest.fixture(params=backend_params())
def store(request: pytest.FixtureRequest, tmp_path: Path):
    with fresh_url(request.param, tmp_path) as url, open_store(url) as opened:
        yield opened


# --- worklist --------------------------------------------------------------------------------------


def test_worklist_filters(store: Store):
    agreed, disputed, unreviewed = add_study(store, "a"), add_study(store, "b"), add_study(store, "c")
    two_drafts(store, disputed.id)
    save(store, agreed.id, 0, reviewer="dr_a", status="final")
    save(store, disputed.id, 0, reviewer="dr_a")
    save(store, disputed.id, 1, reviewer="dr_b")

    def ids(**filters) -> list[int]:
        return [row.study.id for row in store.worklist(**filters)]

    assert ids() == [disputed.id, agreed.id, unreviewed.id]  # most recently changed first
    assert ids(status="final") == [agreed.id]
    assert ids(status="draft") == [disputed.id]
    assert ids(status="unreviewed") == [unreviewed.id]
    assert ids(reviewer="dr_a") == [disputed.id, agreed.id]  # anyone who saved a version
    assert ids(reviewer="dr_b") == [disputed.id]
    assert ids(reviewer="nobody") == []
    assert ids(has_disagreement=True) == [disputed.id]
    assert ids(has_disagreement=False) == [agreed.id, unreviewed.id]
    assert ids(status="draft", reviewer="dr_a", has_disagreement=True) == [disputed.id]
    assert ids(limit=1, offset=1) == [agreed.id]
    row = store.worklist(status="draft")[0]
    assert (row.status, row.reviewer, row.version) == ("draft", "dr_b", 2)
    empty = store.worklist(status="unreviewed")[0]
    assert (empty.status, empty.reviewer, empty.version, empty.updated_at) == ("unreviewed", None, 0, None)
    assert store.reviewers() == ["dr_a", "dr_b"]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"status": "done"}, "worklist status"),
        ({"reviewer": ""}, "empty"),
        ({"has_disagreement": "yes"}, "True, False or None"),
        ({"limit": 0}, "at least 1"),
        ({"offset": -1}, "at least 0"),
    ],
)
def test_worklist_refuses_bad_filters(store: Store, filters: dict, message: str):
    with pytest.raises(StoreError, match=message):
        store.worklist(**filters)


# --- export ----------------------------------------------------------------------------------------


def test_final_reviews_for_export(store: Store):
    final, draft = add_study(store, "a"), add_study(store, "b")
    add_study(store, "c")
    save(store, final.id, 0, status="final", text="first final")
    save(store, final.id, 1, status="final", text="second final")
    save(store, draft.id, 0, status="draft")
    exported = list(store.final_reviews())
    assert [(r.study.id, r.review.version, r.review.text) for r in exported] == [
        (final.id, 2, "second final")
    ]
    assert [i.view for i in exported[0].images] == ["frontal", "lateral"]
    assert exported[0].images[0].png.startswith(b"\x89PNG")
    assert [r.study.id for r in store.final_reviews(status="draft")] == [draft.id]
    assert [r.study.id for r in store.final_reviews(status=None)] == [final.id, draft.id]
    with pytest.raises(StoreError, match="draft, final"):
        store.final_reviews(status="approved")


# --- audit -----------------------------------------------------------------------------------------


def test_audit_events(store: Store):
    study = add_study(store)
    save(store, study.id, 0, reviewer="dr_a")
    store.record_event("dr_a", "study.viewed", study.id, {"tab": "attention"})
    login = store.record_event("dr_b", "login")
    events = store.audit_events(study.id)
    assert [(e.actor, e.action) for e in events] == [
        ("rrg-review", "study.added"),
        ("dr_a", "review.saved"),
        ("dr_a", "study.viewed"),
    ]
    assert events[1].detail["version"] == 1 and events[2].detail == {"tab": "attention"}
    assert store.audit_events()[-1] == login and login.study_id is None
    assert len(store.audit_events(limit=2)) == 2
    with pytest.raises(StoreError, match="JSON object"):
        store.record_event("dr_a", "x", None, ["not", "a", "dict"])
    with pytest.raises(StoreError, match="no study 77"):
        store.record_event("dr_a", "x", 77)
