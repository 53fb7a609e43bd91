"""Sentence and report labelling: mentions + context per sentence, then aggregation over the report."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from rrg_core.data.reports import raw_sentences
from rrg_core.labeler.context import classify, clause_of, clauses
from rrg_core.labeler.conventions import DEFAULT_OPTIONS, LabelerOptions
from rrg_core.labeler.mentions import OTHER, find_mentions, implies_cardiomegaly
from rrg_core.observations import NO_FINDING, OBSERVATIONS, Label, LabelDict

SUPPORT_DEVICES = "Support Devices"

# Precedence when one observation is mentioned more than once: positive > uncertain > negative.
_RANK = {Label.POSITIVE: 3, Label.UNCERTAIN: 2, Label.NEGATIVE: 1}

# Sentences that state a normal study; they are what "No Finding" is described by when it is positive.
_NORMAL_STUDY = re.compile(
    r"\bno (?:acute|active)(?:/acute)? (?:cardiopulmonary |pulmonary |intrathoracic |chest )?"
    r"(?:disease|abnormalit\w*|process|findings?)\b|\bnormal (?:chest|study|examination)\b"
    r"|\bno (?:acute )?cardiopulmonary (?:disease|abnormalit\w*|process|findings?)\b"
)

_PATHOLOGIES = tuple(name for name in OBSERVATIONS if name not in (NO_FINDING, SUPPORT_DEVICES))

_CSV_VALUES = {Label.POSITIVE: "1.0", Label.NEGATIVE: "0.0", Label.UNCERTAIN: "-1.0", None: ""}


@dataclass(frozen=True)
class ReportLabels:
    """A report's labels (all 14 observations, CheXpert order) and, per observation, its sentences."""

    labels: LabelDict
    sentences: dict[str, tuple[str, ...]]

    def to_csv_row(self) -> list[str]:
        """The labels as the CheXpert labeler writes them: "1.0", "0.0", "-1.0" or "" per observation."""
        return [_CSV_VALUES[self.labels[name]] for name in OBSERVATIONS]


def _better(old: Label | None, new: Label) -> Label:
    return new if old is None or _RANK[new] > _RANK[old] else old


@lru_cache(maxsize=65536)
def _label_lowered(sentence: str, options: LabelerOptions = DEFAULT_OPTIONS) -> tuple[tuple[str, Label], ...]:
    """(observation, value) pairs; ``OTHER`` is there when an other finding is positive or uncertain."""
    # Cached: report sentences repeat a great deal ("No pneumothorax" is in hundreds of IU reports).
    mentions = find_mentions(sentence, options)
    if not mentions:
        return ()
    clause_list = clauses(sentence)
    finding_spans = [(m.start, m.end) for m in mentions if m.fixed is None]
    result: dict[str, Label] = {}
    for mention in mentions:
        value = mention.fixed
        if value is None:
            clause = clause_of(clause_list, mention.start)
            value = classify(sentence, clause, mention.start, mention.end, finding_spans)
            if mention.hedged and value is not Label.NEGATIVE:
                value = Label.UNCERTAIN
        if mention.observation == OTHER:
            if value is not Label.NEGATIVE:
                result[OTHER] = Label.POSITIVE
            continue
        if value is not Label.NEGATIVE and implies_cardiomegaly(sentence, mention):
            result["Cardiomegaly"] = _better(result.get("Cardiomegaly"), Label.UNCERTAIN)
        result[mention.observation] = _better(result.get(mention.observation), value)
    return tuple(result.items())


def label_sentence(sentence: str, options: LabelerOptions = DEFAULT_OPTIONS) -> dict[str, Label]:
    """The observations one sentence mentions and their values; unmentioned ones are absent.

    "No Finding" never appears: it is a report-level conclusion (see :func:`label_report`).
    """
    pairs = _label_lowered(" ".join(sentence.lower().split()), options)
    return {name: value for name, value in pairs if name != OTHER}


def _no_finding(labels: LabelDict, other: bool) -> Label | None:
    """CheXpert's rule: positive when nothing but Support Devices is positive or uncertain, other findings
    (emphysema, granuloma, degenerative change, ...) included."""
    if other:
        return None
    for name in _PATHOLOGIES:
        value = labels[name]
        if value is Label.POSITIVE or value is Label.UNCERTAIN:
            return None
    return Label.POSITIVE


def label_report(text: str, options: LabelerOptions = DEFAULT_OPTIONS) -> ReportLabels:
    """Label a report: per-sentence mentions aggregated (positive > uncertain > negative) + No Finding."""
    labels: LabelDict = dict.fromkeys(OBSERVATIONS)
    attributed: dict[str, list[str]] = {name: [] for name in OBSERVATIONS}
    sentences = raw_sentences(text)
    other = False
    for sentence in sentences:
        for name, value in _label_lowered(" ".join(sentence.lower().split()), options):
            if name == OTHER:
                other = True
                continue
            labels[name] = _better(labels[name], value)
            attributed[name].append(sentence)
    labels[NO_FINDING] = _no_finding(labels, other)
    if labels[NO_FINDING] is not None:
        attributed[NO_FINDING] = [s for s in sentences if _NORMAL_STUDY.search(s.lower())]
    return ReportLabels(labels, {name: tuple(found) for name, found in attributed.items()})


def label_reports(texts: Iterable[str], options: LabelerOptions = DEFAULT_OPTIONS) -> list[ReportLabels]:
    """Label many reports, in order."""
    return [label_report(text, options) for text in texts]
