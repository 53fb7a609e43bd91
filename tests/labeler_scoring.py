"""Scoring of the sentence labeler against a hand-labelled JSONL set (shared by the dev and held-out tests).

A unit is an (observation, value) mention of a sentence: a true positive when both gold and labeler give that
observation that value; a wrong value counts as a false positive for the labeler's value and a false negative
for the gold value; a mention only one side has is a false positive or a false negative.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rrg_core.observations import OBSERVATIONS

Unit = tuple[str, int]
VALUES = (1, 0, -1)


@dataclass
class Score:
    """Counts over all sentences of a set, and the sentences the labeler got wrong."""

    tp: Counter[Unit] = field(default_factory=Counter)
    fp: Counter[Unit] = field(default_factory=Counter)
    fn: Counter[Unit] = field(default_factory=Counter)
    sentences: int = 0
    exact: int = 0
    errors: list[tuple[int, str, dict[str, int], dict[str, int]]] = field(default_factory=list)
    """(1-based line, sentence, gold, labeler) for every sentence not labelled exactly."""

    @property
    def exact_accuracy(self) -> float:
        return self.exact / self.sentences if self.sentences else 1.0

    def micro(self) -> tuple[float, float, float]:
        return prf(sum(self.tp.values()), sum(self.fp.values()), sum(self.fn.values()))

    def per_observation(self) -> dict[str, tuple[int, int, int]]:
        """Observation -> (tp, fp, fn) summed over its three values."""
        return {
            name: (
                sum(self.tp[(name, v)] for v in VALUES),
                sum(self.fp[(name, v)] for v in VALUES),
                sum(self.fn[(name, v)] for v in VALUES),
            )
            for name in OBSERVATIONS
            if name != "No Finding"
        }


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 (precision or recall 1.0 when undefined)."""
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def load_set(path: Path) -> list[tuple[str, dict[str, int]]]:
    """The (sentence, gold labels) pairs of a JSONL set; other keys of a line are ignored."""
    items = []
    for line in path.read_text().splitlines():
        item = json.loads(line)
        items.append((item["sentence"], {name: int(value) for name, value in item["labels"].items()}))
    return items


def score_set(items: list[tuple[str, dict[str, int]]], label: Callable[[str], Mapping[str, int]]) -> Score:
    """Score ``label`` (sentence -> {observation: value}) on the gold ``items``."""
    score = Score()
    for number, (sentence, labels) in enumerate(items, start=1):
        got_labels = {name: int(value) for name, value in label(sentence).items()}
        gold, got = set(labels.items()), set(got_labels.items())
        score.sentences += 1
        if gold == got:
            score.exact += 1
        else:
            score.errors.append((number, sentence, labels, got_labels))
        score.tp.update(gold & got)
        score.fp.update(got - gold)
        score.fn.update(gold - got)
    return score


def format_table(score: Score) -> str:
    """Per (observation, value) rows, an all-values row per observation, then the micro figures."""
    lines = [
        f"{'observation':28s}{'value':>6s}{'support':>9s}{'TP':>5s}{'FP':>5s}{'FN':>5s}"
        f"{'P':>7s}{'R':>7s}{'F1':>7s}"
    ]
    totals = score.per_observation()
    for name, (t_all, f_all, n_all) in totals.items():
        rows = [(str(v), score.tp[(name, v)], score.fp[(name, v)], score.fn[(name, v)]) for v in VALUES]
        shown = [row for row in rows if row[1] + row[2] + row[3]]
        if len(shown) > 1:
            shown.append(("all", t_all, f_all, n_all))
        for value, t, f, n in shown:
            p, r, f1 = prf(t, f, n)
            lines.append(f"{name:28s}{value:>6s}{t + n:>9d}{t:>5d}{f:>5d}{n:>5d}{p:>7.3f}{r:>7.3f}{f1:>7.3f}")
    micro = score.micro()
    lines.append(
        f"micro over mentions: P={micro[0]:.3f} R={micro[1]:.3f} F1={micro[2]:.3f}"
        f" (TP={sum(score.tp.values())} FP={sum(score.fp.values())} FN={sum(score.fn.values())});"
        f" sentences exactly right: {score.exact}/{score.sentences} = {score.exact_accuracy:.3f}"
    )
    return "\n".join(lines)
