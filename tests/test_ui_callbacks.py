"""The page's callbacks without a browser: drafting, heatmaps, labels, the editor and its saves, the
worklist, and every kind of bad input (files, names, reports, databases) as a message in the page."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import app_checkpoints

from rrg_core.observations import OBSERVATIONS
from rrg_core.pipeline import ReviewPipeline
from rrg_core.review_result import TokenAttention
from ui import editor, review, worklist
from ui.context import StoreHandle
from ui.images import MAX_UPLOAD_BYTES
from ui.server import make_context
from ui.session import ReviewState

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
FRONTAL, LATERAL = str(EXAMPLES / "phantom1_frontal.png"), str(EXAMPLES / "phantom1_lateral.png")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(phantoms, tmp_path_factory):
    return app_checkpoints(phantoms, tmp_path_factory.mktemp("ui_checkpoints"))


@pytest.fixture
def context(checkpoints, tmp_path):
    return make_context(checkpoints, f"sqlite:///{tmp_path / 'reviews.sqlite'}", device="cpu")


@pytest.fixture
def drafted(context):
    out = review.analyse(context, [FRONTAL, LATERAL])
    assert "rrg-error" not in out["alert"], out["alert"]
    return out["state"], out


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


# -- drafting and looking ---------------------------------------------------------------------------


def test_analyse_shows_both_drafts_the_table_neighbours_and_records_the_study(context, drafted):
    state, out = drafted
    assert state.study_id is not None and set(state.draft_ids) == {"dcrrg", "uar"}
    assert out["dcrrg_draft"] and out["uar_draft"]
    assert len(out["uar_draft"]) == len(state.result.drafts["uar"].tokens)  # one entry per clickable word
    assert [row[0] for row in out["table"]] == list(OBSERVATIONS)
    assert "Nearest training studies" in out["neighbours"] and "data:image/png;base64," in out["neighbours"]
    assert out["image"].shape == (160, 160) and out["image"].dtype == np.uint8
    assert out["view_choice"]["visible"] is True  # two views
    assert out["level"]["visible"] is True  # the phantoms are 16-bit PNGs: window/level applies
    assert out["editor"] == "" and out["status"] == "draft"


def test_a_word_and_a_sentence_of_the_uar_draft_give_heatmaps(drafted):
    state, _ = drafted
    word = review.select_word(state, 0)
    assert word["heatmap"].shape == (160, 160, 3) and "the word" in word["heat_caption"]
    sentence = review.select_sentence(state, 0)
    if state.result.drafts["uar"].sentences:
        assert sentence["heatmap"].shape == (160, 160, 3) and "sentence" in sentence["heat_caption"]
    bad = review.select_word(state, 10_000)
    assert "click a word" in bad["alert"] and "heatmap" not in bad


def test_a_finding_word_shows_the_findings_heads_evidence(drafted):
    state, _ = drafted
    saved = state.result.attention
    views, height, width = saved.maps.shape[1:]
    evidence = np.zeros((len(OBSERVATIONS), views, height, width), dtype=np.float32)
    evidence[OBSERVATIONS.index("Pleural Effusion"), 0, height - 1, width - 1] = 2.0  # one hot cell
    words = ["small", "pleural", "effusion", "."]
    maps = np.full((len(words), views, height, width), 1.0 / (views * height * width), dtype=np.float32)
    state.result.attention = TokenAttention(words, maps, evidence)
    try:
        effusion = review.select_word(state, 2)
        assert (
            "evidence for Pleural Effusion" in effusion["heat_caption"]
            and "“effusion”" in effusion["heat_caption"]
        )
        assert np.array_equal(state.heat.maps, evidence[OBSERVATIONS.index("Pleural Effusion")] / 2.0)
        assert "text-to-image attention" in review.select_word(state, 0)["heat_caption"]
        state.result.attention = TokenAttention(words, maps)  # a model without the findings head
        assert "text-to-image attention" in review.select_word(state, 2)["heat_caption"]
    finally:
        state.result.attention = saved


def test_window_level_redraws_the_view_and_the_heatmap(drafted):
    state, out = drafted
    review.select_word(state, 0)
    before = out["image"]
    changed = review.set_window(state, out["level"]["value"], out["window"]["value"] / 4)
    assert not np.array_equal(changed["image"], before) and changed["heatmap"] is not None
    refused = review.set_window(state, 100.0, 0.0)
    assert "width above 0" in refused["alert"]
    reset = review.reset_window(state)
    assert np.array_equal(reset["image"], before)
    other = review.choose_view(state, state.view_labels()[1])
    assert state.current == 1 and other["image"] is not None


def test_attribution_of_an_observation(drafted, context):
    state, _ = drafted
    out = review.attribute(context, state, "Cardiomegaly", "gradcam")
    assert (
        out["heatmap"].shape == (160, 160, 3)
        and "Grad-CAM attribution of Cardiomegaly" in out["heat_caption"]
    )
    review.choose_view(state, state.view_labels()[1])
    moved = review.heat_image(state)
    assert moved[0] is None and "computed on view 1" in moved[1]
    assert "choose an observation" in review.attribute(context, state, "Heart", "gradcam")["alert"]


def test_attribution_without_dcrrg_says_why_in_the_page(drafted, context):
    state, _ = drafted
    reason = "DCRRG checkpoint x could not be loaded: broken"
    only_uar = ReviewPipeline([context.pipeline.models["uar"]], missing={"dcrrg": reason})
    out = review.attribute(replace(context, pipeline=only_uar), state, "Cardiomegaly", "gradcam")
    assert "attributions need DCRRG, which is not loaded" in out["alert"] and reason in out["alert"]
    assert "heatmap" not in out


def test_attributions_share_the_pipelines_attributor(drafted, context):
    state, _ = drafted
    review.attribute(context, state, "Cardiomegaly", "gradcam")
    built = context.pipeline._attributor
    review.attribute(context, state, "Edema", "gradcam")
    assert built is not None and context.pipeline._attributor is built
    assert not hasattr(context, "attributor")


def test_clicking_a_label_cycles_it_and_marks_it_edited(drafted):
    state, _ = drafted
    start = state.labels["Edema"]
    out = review.toggle_label(state, [OBSERVATIONS.index("Edema"), 1])
    assert state.labels["Edema"] != start and out["table"][OBSERVATIONS.index("Edema")][1].endswith("✎")
    for _ in range(3):
        review.toggle_label(state, [OBSERVATIONS.index("Edema"), 1])
    assert state.labels["Edema"] == start
    picked = review.toggle_label(state, [OBSERVATIONS.index("Fracture"), 0])
    assert picked["attr_observation"]["value"] == "Fracture"


# -- the editor ---------------------------------------------------------------------------------------


def test_start_insert_save_and_a_conflicting_save_keeps_the_text(drafted, context):
    state, _ = drafted
    started = editor.start_from(state, "dcrrg", "")
    text = started["editor"]
    assert text and state.started_from == "dcrrg"
    assert all(choice[0].startswith("UAR: ") for choice in started["insert_choice"]["choices"])
    typed = text + " My own sentence."
    assert (
        "was not replaced" in editor.start_from(state, "uar", typed)["save_alert"]
    )  # own text never overwritten
    inserted = editor.insert_sentence(state, "Extra sentence.", typed)
    assert inserted["editor"] == typed + " Extra sentence."
    saved = editor.save(context, state, typed, "final", "dr_a", "checked")
    assert "Saved version 1 (final)" in saved["save_alert"] and "editor" not in saved
    # Someone else opened the same study at version 1 and saves first.
    other = review.analyse(context, [FRONTAL, LATERAL])["state"]
    assert other.study_id == state.study_id and other.version == 1
    assert editor.save(context, other, "their text", "draft", "dr_b", "")["save_alert"].count(
        "Saved version 2"
    )
    refused = editor.save(context, state, typed + " more", "final", "dr_a", "")
    assert "changed since you opened it" in refused["save_alert"] and "their text" in refused["save_alert"]
    assert "editor" not in refused and state.version == 1
    history = context.store.get().review_history(state.study_id)
    assert [v.version for v in history] == [1, 2] and history[0].started_from_draft_id == state.draft_ids[
        "dcrrg"
    ]
    assert history[0].labels == state.labels


def test_a_study_opened_again_shows_its_saved_review(drafted, context):
    state, _ = drafted
    editor.save(context, state, "The heart is normal.", "draft", "dr_a", "")
    again = review.analyse(context, [FRONTAL, LATERAL])
    assert again["editor"] == "The heart is normal." and "reviewed before" in again["alert"]
    assert len(context.store.get().drafts(state.study_id)) == 2  # the same drafts are not stored twice


# -- the worklist --------------------------------------------------------------------------------------


def test_worklist_filters_opens_a_study_with_its_diff_and_reopens_it(drafted, context):
    state, _ = drafted
    editor.start_from(state, "uar", "")
    draft_text = editor._draft_prose(state, "uar")
    editor.save(context, state, draft_text + " Added words.", "final", "dr_w", "")
    listed = worklist.refresh(context, "final", "any", "any")
    assert listed["wl_ids"] == [state.study_id] and listed["wl_table"][0][4] == "dr_w"
    assert "dr_w" in listed["wl_reviewer"]["choices"]
    assert worklist.refresh(context, "draft", "any", "any")["wl_ids"] == []
    assert worklist.refresh(context, "any", "nobody", "any")["wl_ids"] == []
    opened = worklist.open_row(context, listed["wl_ids"], [0, 2])
    assert '<ins class="rrg-ins">Added words.</ins>' in opened["wl_diff"]
    assert opened["wl_history"][0][:3] == ["1", "dr_w", "final"] and len(opened["wl_images"]) == 2
    back = worklist.reopen(context, state.study_id)
    assert back["state"].study_id == state.study_id and back["editor"].endswith("Added words.")
    assert back["state"].version == 1


# -- bad input ----------------------------------------------------------------------------------------


def test_a_16_bit_dicom_gets_window_level_and_a_modality_warning(context):
    from pydicom.data import get_testdata_file

    out = review.analyse(context, [get_testdata_file("CT_small.dcm")])
    assert out["level"]["visible"] and out["window"]["visible"] and out["reset_window"]["visible"]
    assert "modality CT" in out["alert"] and out["dcrrg_draft"]
    state = out["state"]
    wide = review.set_window(state, out["level"]["value"], out["window"]["maximum"])["image"]
    narrow = review.set_window(state, out["level"]["value"], out["window"]["minimum"])["image"]
    assert wide.std() < narrow.std()  # a narrow window is the high-contrast one


def test_bad_uploads_are_messages(context, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert "not an image this app can read" in _text(review.analyse(context, [str(text)])["alert"])
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:
        handle.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: no disk used
    assert "files over 64 MB are not read" in _text(review.analyse(context, [str(huge)])["alert"])
    assert "no image chosen" in _text(review.analyse(context, None)["alert"])
    assert "at most 8 views" in _text(review.analyse(context, [FRONTAL] * 9)["alert"])


def test_a_dicom_without_pixels_is_a_message(context, tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(tmp_path / "empty.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.Modality = "CR"
    dataset.save_as(tmp_path / "empty.dcm", enforce_file_format=True)
    out = review.analyse(context, [str(tmp_path / "empty.dcm")])
    assert "rrg-error" in out["alert"] and "pixel" in _text(out["alert"]).lower()
    assert "Traceback" not in out["alert"]


@pytest.mark.parametrize(
    ("reviewer", "status", "text", "message"),
    [
        ("dr_a", "final", "   ", "empty report cannot be saved as final"),
        ("<script>alert(1)</script>", "draft", "ok", "may not contain &lt; &gt;"),
        ("x" * 10_000, "draft", "ok", "10,000 characters long"),
        ("", "draft", "ok", "enter your name"),
    ],
)
def test_bad_saves_are_messages_and_keep_the_text(drafted, context, reviewer, status, text, message):
    state, _ = drafted
    out = editor.save(context, state, text, status, reviewer, "")
    assert message in out["save_alert"] and "editor" not in out and "<script>" not in out["save_alert"]
    assert context.store.get().latest_review(state.study_id) is None


def _unusable(context, url: str) -> None:
    context.store.reset()
    context.store = StoreHandle(url)


def test_an_unreachable_database_is_a_message_and_the_study_is_stored_later(checkpoints, tmp_path):
    context = make_context(checkpoints, "postgresql+psycopg://rrg:pw@127.0.0.1:1/rrg", device="cpu")
    out = review.analyse(context, [FRONTAL])  # the drafts are shown all the same
    assert (
        out["dcrrg_draft"]
        and "not yet in the review database" in out["alert"]
        and "cannot be reached" in out["alert"]
    )
    state = out["state"]
    refused = editor.save(context, state, "Kept text.", "draft", "dr_a", "")
    assert "cannot be reached" in refused["save_alert"] and "nothing typed was lost" in refused["save_alert"]
    assert "editor" not in refused
    _unusable(context, f"sqlite:///{tmp_path / 'back.sqlite'}")  # the database comes back
    saved = editor.save(context, state, "Kept text.", "draft", "dr_a", "")
    assert "Saved version 1" in saved["save_alert"]
    assert context.store.get().latest_review(state.study_id).text == "Kept text."


def test_a_read_only_database_is_a_message(drafted, context, tmp_path):
    state, _ = drafted
    path = Path(context.store.get().engine.url.database)
    _unusable(context, f"sqlite:///file:{path}?mode=ro&uri=true")
    out = editor.save(context, state, "Text.", "draft", "dr_a", "")
    assert "read-only" in out["save_alert"] and "editor" not in out


def test_a_locked_database_is_a_message(drafted, context, monkeypatch):
    import rrg_core.store.database as database

    state, _ = drafted
    path = context.store.get().engine.url.database
    monkeypatch.setattr(database, "BUSY_TIMEOUT_S", 0.2)
    context.store.reset()  # reopened with the short busy timeout
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        out = editor.save(context, state, "Text.", "draft", "dr_a", "")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "locked" in out["save_alert"] and "editor" not in out
    assert "Saved version 1" in editor.save(context, state, "Text.", "draft", "dr_a", "")["save_alert"]


def test_an_unexpected_failure_is_a_plain_message(drafted, context, monkeypatch):
    state, _ = drafted

    def broken(*_args, **_kwargs):
        raise KeyError("internal detail")

    monkeypatch.setattr(review, "heat_image", broken)
    out = review.select_word(state, 0)
    assert (
        "Something went wrong on the server (KeyError)" in out["alert"]
        and "internal detail" not in out["alert"]
    )


def test_callbacks_without_a_study_say_so():
    empty = ReviewState()
    assert "draft a study first" in editor.start_from(empty, "dcrrg", "")["save_alert"]
    assert "no UAR draft" in review.select_word(empty, 0)["alert"]
    assert review.toggle_label(empty, [0, 1]) == {}


def test_the_table_renders_the_html_its_cells_are_written_in(context):
    """The probability bar, the description (escaped text, or a withheld one struck through) and the
    drafts' labels are HTML: shown as plain text, a description's "<unk>" read "&lt;unk&gt;"."""
    from ui.layout import build_app

    blocks = build_app(context)
    table = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "rrg-table")
    assert table.datatype == ["str", "str", "html", "html", "html"]
