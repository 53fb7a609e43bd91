"""Tests for rrg_core.metrics against values computed by hand.

Java-dependent checks (METEOR, PTB tokenisation) start a JVM; they share one METEOR
run (a module fixture) so the file stays fast, and skip when Java is absent.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from rrg_core.errors import RRGError
from rrg_core.metrics import (
    NLG_METRICS,
    alignment_score,
    auroc,
    auroc_per_observation,
    category_relevance,
    chance_precision,
    clinical_efficacy,
    nlg_scores,
    precision_at_k,
    precision_at_ks,
    sanitize_text,
)
from rrg_core.metrics import nlg as nlg_module
from rrg_core.observations import OBSERVATIONS

needs_java = pytest.mark.skipif(
    shutil.which("java") is None, reason="METEOR and PTB tokenization need Java 17"
)
PYTHON_METRICS = tuple(name for name in NLG_METRICS if name != "METEOR")
approx = pytest.approx


# --- NLG -------------------------------------------------------------------------------------------


def test_bleu_is_corpus_level_with_one_brevity_penalty():
    # Pair A: "the heart is big" vs "the heart is normal": 1-grams 3/4, 2-grams 2/3, 3-grams 1/2, 4-grams 0/1.
    # Pair B: "the heart is" vs the same reference: 3/3, 2/2, 1/1, no 4-grams.
    # Pooled: 6/7, 4/5, 2/3; hypothesis length 7 vs reference length 8 -> BP = exp(1 - 8/7).
    refs = ["the heart is normal", "the heart is normal"]
    hyps = ["the heart is big", "the heart is"]
    scores = nlg_scores(refs, hyps, metrics=("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L"))
    bp = math.exp(1 - 8 / 7)
    assert scores["BLEU_1"] == approx(6 / 7 * bp, rel=1e-6)
    assert scores["BLEU_2"] == approx((6 / 7 * 4 / 5) ** (1 / 2) * bp, rel=1e-6)
    assert scores["BLEU_3"] == approx((6 / 7 * 4 / 5 * 2 / 3) ** (1 / 3) * bp, rel=1e-6)
    # No 4-gram matches: pycocoevalcap's smoothing (1e-15 / 1e-9) leaves a tiny positive value, not 0.
    assert 0 < scores["BLEU_4"] < 1e-3
    # ROUGE-L (beta 1.2), mean over pairs: A has P = R = 3/4; B has P = 1, R = 3/4.
    rouge_b = (1 + 1.2**2) * 1.0 * 0.75 / (0.75 + 1.2**2 * 1.0)
    assert scores["ROUGE_L"] == approx((0.75 + rouge_b) / 2, rel=1e-9)
    assert list(scores) == ["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L"]


def test_identical_reports_score_perfectly():
    refs = ["the heart size is normal .", "no focal consolidation pleural effusion or pneumothorax ."]
    scores = nlg_scores(refs, list(refs), metrics=PYTHON_METRICS)
    for key in ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L"):
        assert scores[key] == approx(1.0, abs=1e-6), key
    # CIDEr-D is 10 x the mean n-gram cosine when every report has n-grams of each order no other has.
    assert scores["CIDEr"] == approx(10.0, rel=1e-9)


def test_single_pair_scores_and_cider_is_zero():
    scores = nlg_scores(["the heart is normal ."], ["the heart is normal ."], metrics=PYTHON_METRICS)
    assert scores["BLEU_4"] == approx(1.0, abs=1e-6)
    # With one reference every n-gram's IDF is log(1/1) = 0.
    assert scores["CIDEr"] == 0.0


def test_empty_and_messy_hypotheses_without_java():
    refs = ["the heart is normal .", "lungs are clear ."]
    hyps = ["", "lungs  are\nclear\t||| ."]
    scores = nlg_scores(refs, hyps, metrics=("BLEU_1", "ROUGE_L"))
    # The second pair is identical once whitespace and "|||" are cleaned; the empty one scores 0.
    assert scores["ROUGE_L"] == approx(0.5)
    assert scores["BLEU_1"] < 1.0  # the brevity penalty sees the empty hypothesis


def test_sanitize_text():
    assert sanitize_text("  a\nb\r\n c\u2028d ||| e\t") == "a b c d e"
    assert sanitize_text("") == ""


@pytest.mark.parametrize(
    ("refs", "hyps", "message"),
    [
        (["a b"], ["a b", "c"], "1 references but 2 hypotheses"),
        ([], [], "no reports to score"),
        ("a b", "a b", "not one string"),
        (["a b", 3], ["a", "b"], "references[1] must be a string"),
        (["a b", "  \n "], ["a", "b"], "reference report(s) have no words (index 1)"),
    ],
)
def test_nlg_bad_input(refs, hyps, message):
    with pytest.raises(RRGError, match=re.escape(message)):
        nlg_scores(refs, hyps, metrics=("BLEU_1",))


def test_unknown_or_no_metric():
    with pytest.raises(RRGError, match="unknown NLG metric 'SPICE'"):
        nlg_scores(["a"], ["a"], metrics=("SPICE",))
    with pytest.raises(RRGError, match="no NLG metric chosen"):
        nlg_scores(["a"], ["a"], metrics=())
    # Names are case-insensitive and a lone string is one metric.
    assert set(nlg_scores(["a b"], ["a b"], metrics="rouge_l")) == {"ROUGE_L"}


def test_java_missing_gives_install_hint(monkeypatch):
    monkeypatch.setattr(nlg_module.shutil, "which", lambda name: None)
    with pytest.raises(RRGError, match="openjdk-17-jre-headless"):
        nlg_scores(["a b"], ["a b"])  # METEOR is in the default set
    with pytest.raises(RRGError, match="Java 17"):
        nlg_scores(["a b"], ["a b"], metrics=("BLEU_1",), tokenize=True)
    # Without METEOR and tokenisation, Java is not needed.
    assert nlg_scores(["a b"], ["a b"], metrics=("ROUGE_L",)) == {"ROUGE_L": 1.0}


class _StalledMeteor:
    """Stands in for pycocoevalcap's Meteor: a live process that never answers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.meteor_p = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def compute_score(self, gts, res):
        self.lock.acquire()  # as the real wrapper does, and never releases on error
        return float(self.meteor_p.stdout.readline().strip()), []


def test_meteor_watchdog_kills_a_stalled_jvm(monkeypatch):
    created = []
    monkeypatch.setattr(nlg_module, "Meteor", lambda: created.append(_StalledMeteor()) or created[-1])
    with pytest.raises(RRGError, match="timed out"):
        nlg_module._run_meteor({0: ["a"]}, {0: ["a"]}, timeout_s=0.5)
    meteor = created[0]
    assert meteor.meteor_p.poll() is not None  # the process is gone
    assert not meteor.lock.locked()  # so garbage collection cannot deadlock


@pytest.fixture(scope="module")
def meteor_run():
    """The one METEOR (JVM) run of this file: a perfect pair, an empty hypothesis, a messy one."""
    refs = ["the heart is normal .", "no pleural effusion or pneumothorax .", "lungs are clear ."]
    hyps = ["the heart is normal .", "", "lungs are\nclear ||| ."]
    return nlg_scores(refs, hyps)


@needs_java
def test_meteor_scores_all_metrics_in_one_run(meteor_run):
    assert list(meteor_run) == list(NLG_METRICS)
    assert all(math.isfinite(value) for value in meteor_run.values())
    # Two of three pairs are perfect (after cleaning), one is empty: METEOR lies strictly between.
    assert 0.3 < meteor_run["METEOR"] < 1.0
    assert meteor_run["ROUGE_L"] == approx(2 / 3)


@needs_java
def test_ptb_tokenize_lowercases_drops_punctuation_and_keeps_empty_aligned():
    refs = ["The heart is normal.", "No effusion."]
    hyps = ["", "no effusion"]
    assert nlg_scores(refs, hyps, metrics=("ROUGE_L",))["ROUGE_L"] == approx(0.0)
    scores = nlg_scores(refs, hyps, metrics=("BLEU_1", "ROUGE_L"), tokenize=True)
    # After PTB tokenisation the second pair is identical, the first (empty) scores 0.
    assert scores["ROUGE_L"] == approx(0.5)


# --- Clinical efficacy -----------------------------------------------------------------------------

# Three reports. Positive-vs-not per observation (uncertain counts as not):
#   Cardiomegaly     truth [1,0,0] predicted [1,1,0]: TP 1 FP 1 FN 0 -> P 1/2, R 1, F1 2/3
#   Edema            truth [1,0,0] (report 3 uncertain) predicted [0,0,1]: TP 0 FP 1 FN 1 -> 0, 0, 0
#   Pleural Effusion truth [0,1,0] predicted [0,1,0]: TP 1 -> 1, 1, 1
#   No Finding       truth [0,0,1] predicted [0,0,1]: TP 1 -> 1, 1, 1
#   the other 10: never positive -> 0, 0, 0 (zero_division = 0)
CE_REFS = [
    {"Cardiomegaly": 1, "Edema": 1},
    {"Cardiomegaly": 0, "pleural_effusion": "1.0"},
    {"Edema": -1, "No Finding": 1},
]
CE_HYPS = [
    {"Cardiomegaly": 1},
    {"Cardiomegaly": 1, "Pleural Effusion": 1, "Atelectasis": None},
    {"Edema": 1, "No Finding": 1, "Fracture": -1},
]


def test_ce_micro_and_macro_by_hand():
    ce = clinical_efficacy(CE_REFS, CE_HYPS)
    # Micro pools TP 3, FP 2, FN 1.
    assert (ce.micro.precision, ce.micro.recall, ce.micro.f1) == approx((3 / 5, 3 / 4, 6 / 9))
    assert ce.micro.support == 4
    # Macro: mean over all 14 observations, the 10 never-positive ones counting 0.
    assert (ce.macro.precision, ce.macro.recall, ce.macro.f1) == approx((2.5 / 14, 3 / 14, (8 / 3) / 14))
    assert ce.per_observation["Cardiomegaly"].f1 == approx(2 / 3)
    assert ce.per_observation["Edema"].support == 1
    assert ce.per_observation["Fracture"].f1 == 0.0
    assert ce.observations == OBSERVATIONS
    assert ce.num_reports == 3


def test_ce_restricted_observations():
    four = ["Cardiomegaly", "Edema", "Pleural Effusion", "No Finding"]
    ce = clinical_efficacy(CE_REFS, CE_HYPS, observations=four)
    assert (ce.macro.precision, ce.macro.recall, ce.macro.f1) == approx((2.5 / 4, 3 / 4, (8 / 3) / 4))
    assert ce.micro.f1 == approx(6 / 9)  # unchanged: the dropped observations had no counts
    without = clinical_efficacy(CE_REFS, CE_HYPS, exclude=("no finding",))
    assert len(without.observations) == 13 and "No Finding" not in without.per_observation
    assert (without.micro.precision, without.micro.recall, without.micro.f1) == approx((1 / 2, 2 / 3, 4 / 7))


def test_ce_perfect_single_report_and_to_dict():
    ce = clinical_efficacy([{"Edema": 1}], [{"Edema": 1.0}], observations=["Edema"])
    assert ce.micro.f1 == 1.0 and ce.macro.f1 == 1.0
    as_dict = ce.to_dict()
    assert as_dict["micro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert as_dict["observations"] == ["Edema"]


def test_ce_no_positives_anywhere_is_zero_not_nan():
    ce = clinical_efficacy([{}, {"Edema": 0}], [{}, {}])
    assert ce.micro.f1 == 0.0 and ce.macro.precision == 0.0


@pytest.mark.parametrize(
    ("refs", "hyps", "kwargs", "message"),
    [
        ([{}], [{}, {}], {}, "1 reference label sets but 2"),
        ([], [], {}, "no reports to score"),
        ([{"Heart": 1}], [{}], {}, "references\\[0\\]: unknown observation"),
        ([{}], [{"Edema": 2}], {}, "hypotheses\\[0\\]: label value 2"),
        ({"Edema": 1}, [{}], {}, "not a single dict"),
        ([{}], [{}], {"observations": ["Edema"], "exclude": ["Edema"]}, "no observation left"),
    ],
)
def test_ce_bad_input(refs, hyps, kwargs, message):
    with pytest.raises(RRGError, match=message):
        clinical_efficacy(refs, hyps, **kwargs)


# --- AUROC -----------------------------------------------------------------------------------------


def test_auroc_with_ties_by_hand():
    # Positives 0.4, 0.8, 0.9 vs negatives 0.1, 0.4, 0.8: wins 1 + 0.5 (tie), 2 + 0.5 (tie), 3 -> 7/9.
    assert auroc([0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.4, 0.8, 0.8, 0.9]) == approx(7 / 9)


def test_auroc_matches_pairwise_count_on_random_ties():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 2, 200)
    scores = rng.integers(0, 10, 200) / 10  # many ties
    pos, neg = scores[targets == 1], scores[targets == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auroc(targets, scores) == approx(wins / (pos.size * neg.size), rel=1e-12)


def test_auroc_edge_cases():
    assert auroc([0, 1], [0.2, 0.9]) == 1.0
    assert auroc([True, False], [0.2, 0.9]) == 0.0
    assert auroc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.5
    assert math.isnan(auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(auroc([0], [0.5]))
    assert auroc(torch.tensor([0, 1]), torch.tensor([0.1, 0.2], dtype=torch.bfloat16)) == 1.0


@pytest.mark.parametrize(
    ("targets", "scores", "message"),
    [
        ([0, 1], [0.1], "same length"),
        ([], [], "no samples"),
        ([0, -1], [0.1, 0.2], "0/1"),
        ([0, 1], [0.1, float("nan")], "NaN"),
    ],
)
def test_auroc_bad_input(targets, scores, message):
    with pytest.raises(RRGError, match=message):
        auroc(targets, scores)


def test_auroc_per_observation_mean_over_defined():
    rng = np.random.default_rng(0)
    scores = rng.random((4, 14))
    targets = np.zeros((4, 14))  # every column single-class (undefined) ...
    targets[:, 0] = [0, 0, 1, 1]  # ... but two
    scores[:, 0] = [0.1, 0.2, 0.3, 0.4]  # AUROC 1
    targets[:, 1] = [1, np.nan, 0, 0]  # NaN skips row 1: scores 0.5 vs 0.5 and 0.9 -> 0.5 / 2
    scores[:, 1] = [0.5, 0.0, 0.5, 0.9]
    summary = auroc_per_observation(targets, scores)
    assert summary.per_observation[OBSERVATIONS[0]] == 1.0
    assert summary.per_observation[OBSERVATIONS[1]] == approx(0.25)
    assert math.isnan(summary.per_observation[OBSERVATIONS[2]])
    assert summary.num_defined == 2
    assert summary.mean == approx(0.625) and summary.mean_or_none == approx(0.625)
    as_json = summary.per_observation_or_none()
    assert as_json[OBSERVATIONS[0]] == 1.0 and as_json[OBSERVATIONS[2]] is None


def test_auroc_per_observation_none_defined_and_shapes():
    summary = auroc_per_observation(np.ones((3, 2)), np.ones((3, 2)), observations=("Edema", "Fracture"))
    assert math.isnan(summary.mean) and summary.num_defined == 0 and summary.mean_or_none is None
    with pytest.raises(RRGError, match=r"\(N, 14\)"):
        auroc_per_observation(np.ones((3, 2)), np.ones((3, 2)))


# --- Precision@K -----------------------------------------------------------------------------------

# Query 0 ranks candidates 0 (0.9), 2 (0.5), 3 (0.5, tie broken by index), 1; relevant: 0 and 3.
# Query 1 has all similarities tied, so the order is 0, 1, 2, 3; relevant: 3.
SIM = np.array([[0.9, 0.1, 0.5, 0.5], [0.2, 0.2, 0.2, 0.2]])
REL = np.array([[1, 0, 0, 1], [0, 0, 0, 1]], dtype=bool)


@pytest.mark.parametrize(("k", "expected"), [(1, 0.5), (2, 0.25), (3, 1 / 3), (4, 0.375)])
def test_precision_at_k_by_hand(k, expected):
    assert precision_at_k(SIM, REL, k) == approx(expected)


def test_precision_at_ks_and_torch_input():
    expected = {1: 0.5, 2: 0.25, 4: 0.375}
    assert precision_at_ks(SIM, REL, (1, 2, 4)) == approx(expected)
    assert precision_at_ks(torch.tensor(SIM), torch.tensor(REL), (1, 2, 4)) == approx(expected)


def test_chance_precision_is_a_full_rankings_precision():
    assert chance_precision(REL) == approx((2 / 4 + 1 / 4) / 2)
    assert chance_precision(REL) == approx(precision_at_k(SIM, REL, 4))  # P@N: every candidate retrieved
    with pytest.raises(RRGError, match="True/False"):
        chance_precision(REL * 2)
    with pytest.raises(RRGError, match="non-empty"):
        chance_precision(np.zeros((0, 4)))


def test_precision_at_k_single_query_single_candidate():
    assert precision_at_k([[0.3]], [[True]], 1) == 1.0


@pytest.mark.parametrize(
    ("sim", "rel", "k", "message"),
    [
        (SIM, REL, 0, "between 1 and the number of candidates \\(4\\)"),
        (SIM, REL, 5, "between 1 and"),
        (SIM, REL, 2.0, "integer"),
        (SIM, REL[:, :3], 1, "one shape"),
        (np.zeros((0, 4)), np.zeros((0, 4)), 1, "non-empty"),
        (SIM, REL * 2, 1, "True/False"),
    ],
)
def test_precision_at_k_bad_input(sim, rel, k, message):
    with pytest.raises(RRGError, match=message):
        precision_at_k(sim, rel, k)


def test_category_relevance():
    relevance = category_relevance([0, 1], [0, 1, 1, 2])
    assert relevance.tolist() == [[True, False, False, False], [False, True, True, False]]
    named = category_relevance(["Edema"], np.array(["Edema", "Atelectasis"]))
    assert named.tolist() == [[True, False]]
    assert category_relevance(torch.tensor([2]), torch.tensor([2, 3])).tolist() == [[True, False]]
    with pytest.raises(RRGError, match="non-empty 1-D"):
        category_relevance([], [1])


# --- Alignment score -------------------------------------------------------------------------------


def test_alignment_score_by_hand():
    # Cosine matrix (images x reports): [[1, .707, 0], [0, .707, 1], [1, .707, 0]]; min 0, max 1.
    # Matched pairs (diagonal) 1, .707, 0 -> two of three above 0.5.
    images = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    reports = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    assert alignment_score(images, reports) == approx(2 / 3)
    # Cosine ignores feature scale.
    assert alignment_score(np.array(images) * 7, torch.tensor(reports) * 0.1) == approx(2 / 3)


def test_alignment_score_uses_whole_matrix_range():
    # Cosines [[0.8, -0.8], [0.6, 0.6]]: min -0.8, max 0.8, so the diagonal 0.8 and 0.6 become 1 and 0.875,
    # both above 0.5 (normalising over the diagonal alone would give 1 and 0: a score of 0.5).
    images = np.array([[1.0, 0.0], [0.0, 1.0]])
    reports = np.array([[0.8, 0.6], [-0.8, 0.6]])
    assert alignment_score(images, reports) == 1.0


def test_alignment_score_degenerate():
    assert math.isnan(alignment_score([[1.0, 2.0]], [[3.0, 1.0]]))  # N = 1: constant matrix
    assert math.isnan(alignment_score([[1.0, 0.0]] * 3, [[2.0, 0.0]] * 3))  # all parallel
    with pytest.raises(RRGError, match="zero vectors \\(rows \\[1\\]\\)"):
        alignment_score([[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(RRGError, match="non-empty"):
        alignment_score(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(RRGError, match="one shape"):
        alignment_score([[1.0, 0.0]], [[1.0, 0.0, 0.0]])


def test_roc_curves_are_stored_and_their_area_is_the_auroc():
    import numpy as np

    from rrg_core.metrics.ranking import auroc, auroc_per_observation, roc_curve

    rng = np.random.default_rng(0)
    targets = rng.random(200) < 0.3
    scores = np.round(rng.random(200) + targets * 0.4, 1)  # rounded: many ties
    curve = roc_curve(targets, scores, points=10_000)
    assert curve["fpr"][0] == curve["tpr"][0] == 0.0 and curve["fpr"][-1] == curve["tpr"][-1] == 1.0
    assert abs(np.trapezoid(curve["tpr"], curve["fpr"]) - auroc(targets, scores)) < 1e-3
    summary = auroc_per_observation(
        np.stack([targets, np.zeros(200)], 1).astype(float), np.stack([scores, scores], 1), ["a", "b"]
    )
    assert set(summary.curves) == {"a"}  # "b" has one class only: no AUROC, no curve
    assert len(roc_curve(targets, scores)["fpr"]) <= 101
