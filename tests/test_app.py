"""app.py's options and exposure rule, reviewer logins, the demo bootstrap's steps, the model card and the
page's formatting helpers (fast: no model, no server)."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import pytest

import app
from rrg_core.observations import OBSERVATIONS
from rrg_core.review_result import Disagreement, ModelDraft, Neighbour, ObservationRow
from ui import bootstrap, model_card
from ui import formatting as fmt
from ui.auth import AuthError, UserFile, is_loopback


def test_defaults_serve_on_loopback_with_the_demo_models(monkeypatch):
    for name in ("RRG_CHECKPOINTS", "RRG_HOST", "RRG_PORT", "RRG_DB", "RRG_AUTH_FILE"):
        monkeypatch.delenv(name, raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.checkpoints, args.db, args.auth_file) == (
        "127.0.0.1",
        7860,
        None,
        None,
        None,
    )
    monkeypatch.setenv("RRG_CHECKPOINTS", "/runs")
    assert app.parse_args([]).checkpoints == "/runs"
    assert app.parse_args(["--checkpoints", "x", "--db", "sqlite:///r.db"]).db == "sqlite:///r.db"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_needs_no_logins(host):
    assert is_loopback(host)
    app.check_exposure(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.org", "::"])
def test_any_other_address_refuses_to_start_without_logins(host):
    assert not is_loopback(host)
    with pytest.raises(SystemExit, match=r"will not serve on .* without reviewer logins"):
        app.check_exposure(host, None)
    app.check_exposure(host, "users.json")


def test_logins_are_salted_scrypt_hashes_in_a_private_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users.json"
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("correct horse battery\n"))
    assert app.main(["--auth-file", str(path), "--add-user", "dr_a", "--password-stdin"]) == 0
    assert "dr_a" in capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "correct horse" not in path.read_text()
    users = UserFile.load(path)
    assert users.check("dr_a", "correct horse battery")
    assert not users.check("dr_a", "wrong password") and not users.check("nobody", "correct horse battery")
    users.add("dr_b", "another password")
    first, second = UserFile.load(path).users["dr_a"], UserFile.load(path).users["dr_b"]
    assert first["salt"] != second["salt"] and first["scrypt"]["n"] >= 2**14
    with pytest.raises(AuthError, match="at least 8"):
        users.add("dr_c", "short")
    with pytest.raises(AuthError, match="not allowed"):
        users.add("<b>x</b>", "long enough password")
    with pytest.raises(AuthError, match="no logins file"):
        UserFile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(AuthError, match="not an rrg-review logins file"):
        UserFile.load(tmp_path / "bad.json")


@pytest.fixture
def build_env(monkeypatch):
    """No bootstrap variables from the machine running the tests, and two cores."""
    for name in (bootstrap.LANES_VARIABLE, *bootstrap.THREAD_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(bootstrap.os, "cpu_count", lambda: 2)
    return monkeypatch


class _Runs:
    """A fake runner: records each step (its log's name) and the variables it was given, fails the steps in
    ``fail``; the steps in ``wait`` wait for one another, so the test fails unless they run at once."""

    def __init__(self, fail=(), wait=()):
        self.calls, self.envs, self.fail = [], {}, set(fail)
        self.wait, self.barrier = set(wait), threading.Barrier(max(1, len(wait)))

    def __call__(self, command, log, env):
        step = log.stem
        self.calls.append(step)
        self.envs[step] = dict(env)
        if step in self.wait:
            self.barrier.wait(timeout=10)
        return 1 if step in self.fail else 0

    def lane(self, prefix):
        return [step for step in self.calls if step.startswith(prefix)]


def test_the_bootstrap_runs_the_two_models_side_by_side_each_in_order(tmp_path, build_env):
    runs, lines = _Runs(wait={"dcrrg", "uar"}), []  # both trainings must be running at once
    root = tmp_path / "demo"
    folder = bootstrap.demo_checkpoints(root, run=runs, say=lines.append)
    assert folder == root / "checkpoints"
    assert runs.calls[0] == "phantoms" and len(runs.calls) == 7
    assert runs.lane("dcrrg") == ["dcrrg", "dcrrg-index-domain", "dcrrg-eval"]
    assert runs.lane("uar") == ["uar", "uar-index-domain", "uar-eval"]
    assert all((root / f"{step}.done").exists() for step in runs.calls)
    assert "synthetic phantoms" in (folder / "TRAINED_ON.txt").read_text()
    log = root / "logs" / "dcrrg.log"
    assert any(line.startswith("[DCRRG] DCRRG (demo preset) done in") and str(log) in line for line in lines)
    assert any(line.startswith("[UAR] UAR (demo preset): python -m train uar") for line in lines)
    assert lines[-1].startswith("Demo models ready in")


def test_the_bootstrap_runs_each_step_once_and_resumes_each_lane_where_it_was(tmp_path, build_env):
    root, quiet = tmp_path / "demo", (lambda _line: None)
    bootstrap.demo_checkpoints(root, run=_Runs(), say=quiet)
    runs = _Runs()
    bootstrap.demo_checkpoints(root, run=runs, say=quiet)
    assert runs.calls == []  # cached
    (root / "uar.done").unlink()
    bootstrap.demo_checkpoints(root, run=runs, say=quiet)
    assert runs.calls == ["uar"]
    for marker in ("dcrrg-index-domain", "dcrrg-eval", "uar-eval"):
        (root / f"{marker}.done").unlink()
    runs = _Runs()
    bootstrap.demo_checkpoints(root, run=runs, say=quiet)
    assert runs.lane("dcrrg") == ["dcrrg-index-domain", "dcrrg-eval"] and runs.lane("uar") == ["uar-eval"]


def test_a_failed_step_stops_its_lane_the_other_lane_finishes_and_keeps_its_markers(tmp_path, build_env):
    stopped = threading.Event()

    class _UARStillTraining(_Runs):
        def __call__(self, command, log, env):
            if log.stem == "uar":  # still training when the DCRRG lane has given up
                assert stopped.wait(timeout=10)
            return super().__call__(command, log, env)

    def say(line):
        if "the DCRRG lane stops here" in line:
            stopped.set()

    runs, root = _UARStillTraining(fail={"dcrrg"}), tmp_path / "a"
    with pytest.raises(
        bootstrap.BootstrapError, match=r"'DCRRG \(demo preset\)' failed .* output is in .*dcrrg\.log"
    ):
        bootstrap.demo_checkpoints(root, run=runs, say=say)
    assert runs.lane("dcrrg") == ["dcrrg"] and runs.lane("uar") == ["uar", "uar-index-domain", "uar-eval"]
    assert sorted(path.name for path in root.glob("*.done")) == [
        "phantoms.done",
        "uar-eval.done",
        "uar-index-domain.done",
        "uar.done",
    ]
    runs = _Runs()
    bootstrap.demo_checkpoints(root, run=runs, say=lambda _line: None)
    assert runs.calls == ["dcrrg", "dcrrg-index-domain", "dcrrg-eval"]
    with pytest.raises(
        bootstrap.BootstrapError, match=r"'DCRRG retrieval index' failed.*; .*'UAR \(demo preset\)'"
    ):
        bootstrap.demo_checkpoints(
            tmp_path / "b", run=_Runs(fail={"dcrrg-index-domain", "uar"}), say=lambda _line: None
        )
    lines = []
    bootstrap.demo_checkpoints(tmp_path / "c", run=_Runs(fail={"uar-eval", "dcrrg-eval"}), say=lines.append)
    assert sum("going on without it" in line for line in lines) == 2
    with pytest.raises(bootstrap.BootstrapError, match="phantom data set"):
        bootstrap.demo_checkpoints(tmp_path / "d", run=_Runs(fail={"phantoms"}), say=lambda _line: None)
    assert not (tmp_path / "d" / "logs" / "dcrrg.log").exists()


def test_lane_steps_share_the_cores_unless_the_user_chose_the_threads(tmp_path, build_env):
    runs = _Runs(wait=("dcrrg", "uar"))
    bootstrap.demo_checkpoints(tmp_path / "a", run=runs, say=lambda _line: None)
    assert runs.envs.pop("phantoms") == {}  # alone: the environment as it is
    grants = str(tmp_path / "a" / "logs" / "lane-threads")
    one = {"OMP_NUM_THREADS": "1", "RRG_TRAIN_THREADS": "1", bootstrap.THREADS_FILE_VARIABLE: grants}
    assert runs.envs["dcrrg"] == one and runs.envs["uar"] == one  # the two trainings ran at once
    build_env.setattr(bootstrap.os, "cpu_count", lambda: 16)
    runs = _Runs(wait=("dcrrg", "uar"))
    bootstrap.demo_checkpoints(tmp_path / "b", run=runs, say=lambda _line: None)
    assert runs.envs["uar"]["OMP_NUM_THREADS"] == runs.envs["uar"]["RRG_TRAIN_THREADS"] == "8"
    build_env.setenv("RRG_TRAIN_THREADS", "3")
    runs = _Runs()
    bootstrap.demo_checkpoints(tmp_path / "c", run=runs, say=lambda _line: None)
    assert len(runs.envs) == 7 and all(env == {} for env in runs.envs.values())


def test_one_lane_runs_the_steps_in_order_as_before(tmp_path, build_env):
    sequential = [
        "phantoms",
        "dcrrg",
        "uar",
        "dcrrg-index-domain",
        "uar-index-domain",
        "dcrrg-eval",
        "uar-eval",
    ]
    runs, lines = _Runs(), []
    bootstrap.demo_checkpoints(tmp_path / "a", run=runs, say=lines.append, lanes=1)
    assert runs.calls == sequential and all(env == {} for env in runs.envs.values())
    assert lines[1].startswith("[1/7] phantom data set") and lines[-2].startswith("    done in")
    build_env.setenv(bootstrap.LANES_VARIABLE, "1")
    runs = _Runs(fail={"dcrrg"})
    with pytest.raises(bootstrap.BootstrapError, match=r"'DCRRG \(demo preset\)' failed"):
        bootstrap.demo_checkpoints(tmp_path / "b", run=runs, say=lambda _line: None)
    assert runs.calls == ["phantoms", "dcrrg"]  # one lane: the first failure stops the build
    build_env.setenv(bootstrap.LANES_VARIABLE, "two")
    with pytest.raises(bootstrap.BootstrapError, match="at least 1"):
        bootstrap.demo_checkpoints(tmp_path / "c", run=runs, say=lambda _line: None)


def test_cache_root_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert bootstrap.cache_root() == tmp_path / "rrg-review"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")
    assert bootstrap.cache_root() == Path.home() / ".cache" / "rrg-review"


def _evaluation(f1: float, auroc: float | None) -> dict:
    per = {name: {"precision": f1, "recall": f1, "f1": f1, "support": 3} for name in OBSERVATIONS}
    return {
        "model": "X",
        "num_studies": 20,
        "nlg": {"BLEU_1": 0.4, "BLEU_4": 0.2, "CIDEr": 0.5},
        "clinical_efficacy": {"micro": {"precision": 0.3, "recall": 0.2, "f1": 0.25}, "per_observation": per},
        "auroc": None
        if auroc is None
        else {"mean": auroc, "per_observation": dict.fromkeys(OBSERVATIONS, auroc)},
        "studies_per_second": 12.0,
    }


class _Info:
    def __init__(self, metrics):
        self.metrics = metrics


class _Context:
    def __init__(self, checkpoints):
        self.checkpoints = checkpoints


def test_model_card_tables_and_what_the_roc_figure_lacks():
    context = _Context(
        {
            "dcrrg": _Info({"step1": {}, "test": _evaluation(0.5, 0.8)}),
            "uar": _Info({"test": _evaluation(0.1, None)}),
        }
    )
    tables = model_card.evaluation_markdown(context)
    assert "#### Split `test` (20 / 20 studies)" in tables and "| BLEU_4 | 0.200 | 0.200 |" in tables
    assert "| Pleural Effusion | 0.500 (n=3) | 0.800 | 0.100 (n=3) | – |" in tables
    figure, note = model_card.roc_figure(context)
    assert figure is not None and "not those points" in note and "DCRRG" in note
    curves = {name: {"fpr": [0, 0.5, 1], "tpr": [0, 0.8, 1]} for name in OBSERVATIONS}
    context.checkpoints["dcrrg"].metrics["test"]["auroc"]["curves"] = curves
    figure, note = model_card.roc_figure(context)
    assert figure is not None and note.startswith("ROC curves")
    empty = _Context({"dcrrg": _Info({})})
    assert "No evaluation results" in model_card.evaluation_markdown(empty)
    assert model_card.roc_figure(empty)[0] is None


def _draft(text: str) -> ModelDraft:
    from rrg_core.data.reports import split_sentences
    from rrg_core.labeler import label_report
    from rrg_core.observations import labels_to_json

    return ModelDraft(
        "uar",
        "UAR",
        "h",
        text,
        split_sentences(text),
        text.split(),
        labels_to_json(label_report(text).labels),
    )


def test_drafts_are_flagged_where_they_disagree():
    draft = _draft("the heart is enlarged . no pleural effusion .")
    flag = Disagreement("Cardiomegaly", {"uar": 1, "dcrrg": None}, 0.2, 0.5, ["the drafts differ"])
    sentences = fmt.sentence_highlights(draft, [flag])
    assert sentences == [("The heart is enlarged. ", "⚑ Cardiomegaly"), ("No pleural effusion. ", None)]
    words = fmt.word_highlights(draft, [flag])
    assert len(words) == len(draft.tokens)
    assert (
        [c for _w, c in words[:4]] == ["⚑ Cardiomegaly"] * 4 and words[4][1] is None and words[6][1] is None
    )
    assert "⚑ Cardiomegaly" in fmt.disagreements_html([flag]) and "No disagreement" in fmt.disagreements_html(
        []
    )


def test_html_helpers_escape_everything_shown():
    assert fmt.alert("<img src=x onerror=alert(1)>") == (
        '<div class="rrg-alert rrg-error" role="alert">&lt;img src=x onerror=alert(1)&gt;</div>'
    )
    cards = fmt.neighbours_html({"uar": [Neighbour("<s1>", "a <b>report</b>", "images/x.png", 0.9)]}, {})
    assert "&lt;s1&gt;" in cards and "<b>report" not in cards and "image not found" in cards
    diff = fmt.word_diff_html("the heart <is> normal", "the heart is enlarged")
    assert (
        '<del class="rrg-del">&lt;is&gt; normal</del>' in diff
        and '<ins class="rrg-ins">is enlarged</ins>' in diff
    )
    assert "4 words in the draft: 2 removed, 2 added" in diff


def test_probability_bar_marks_the_threshold_and_table_rows():
    bar = fmt.probability_bar(0.7, 0.4)
    assert "width:70.0%" in bar and "left:calc(40.0% - 1px)" in bar and "#c2410c" in bar  # above: orange
    assert "#2563eb" in fmt.probability_bar(0.1, 0.4) and "n/a" in fmt.probability_bar(None, None)
    labels = dict.fromkeys(OBSERVATIONS, 0)
    rows = fmt.observation_rows([], {**labels, "Edema": 1}, {}, [], labels)
    assert len(rows) == 14 and rows[OBSERVATIONS.index("Edema")][1] == "positive ✎"
    assert fmt.NEXT_LABEL == {1: 0, 0: -1, -1: None, None: 1}
    shown = ObservationRow("Edema", 0.9, 0.5, 1, "mild <b>edema</b> .")
    withheld = ObservationRow("Edema", 0.9, 0.5, 1, "", withheld="there is no pulmonary edema .")
    assert fmt.description_cell(shown) == "mild &lt;b&gt;edema&lt;/b&gt; ."
    cell = fmt.description_cell(withheld)
    assert "<s" in cell and "there is no pulmonary edema ." in cell and "(withheld)" in cell
    assert fmt.prose(["the heart is normal", "no effusion"]) == "The heart is normal. No effusion."


def test_a_lane_that_ends_leaves_its_cores_to_the_other(tmp_path, build_env):
    class SlowDCRRG(_Runs):
        def __call__(self, command, log, env):
            if log.stem == "dcrrg":  # train until the UAR lane is over
                deadline = time.monotonic() + 10
                while "uar-eval" not in self.calls and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.2)
            return super().__call__(command, log, env)

    runs = SlowDCRRG()
    bootstrap.demo_checkpoints(tmp_path / "a", run=runs, say=lambda _line: None)
    assert runs.envs["dcrrg"]["RRG_TRAIN_THREADS"] == "1"
    # the running DCRRG training is granted the freed core through the file its harness reads
    assert Path(runs.envs["dcrrg"][bootstrap.THREADS_FILE_VARIABLE]).read_text().strip() == "2"
    assert runs.envs["dcrrg-eval"]["OMP_NUM_THREADS"] == runs.envs["dcrrg-eval"]["RRG_TRAIN_THREADS"] == "2"
