"""Sentence support: how consistently a model makes the claims of its draft's sentences.

RadFlag's idea (arXiv 2411.00299): sample several alternative reports of the same study and check
each claim of the draft against them; a claim the model does not make consistently is weakly
supported. Here a sentence's claims are the labeler's reading of it (:func:`sentence_claims`: the
observations it names and their values); an alternative agrees when its own labeler reading gives
each of them the same value (:func:`agrees`); the sentence's support is the share of alternatives
that agree on all its claims. A sentence that names no observation has no support value (None).

The alternatives come from :meth:`~rrg_core.generators.base.ImageReportGenerator.alternatives`
(temperature sampling, seeded); :data:`METHOD` and the figures in :class:`SupportSettings` go with
every result, so a support value is never read without knowing how it was made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rrg_core.labeler import label_report, label_sentence

#: How the alternatives are made (recorded in every result).
METHOD = "temperature sampling"


@dataclass(frozen=True)
class SupportSettings:
    """How sentence support is computed: ``samples`` alternatives per draft at ``temperature`` (seeded
    with ``seed``); a sentence with support below ``weak_below`` is marked weakly supported.
    ``samples`` 0 turns sentence support off."""

    samples: int = 8
    temperature: float = 1.0
    seed: int = 0
    weak_below: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 0:
            raise ValueError(f"support samples must be a whole number of 0 or more, got {self.samples!r}")
        if not self.temperature > 0:
            raise ValueError(f"the sampling temperature must be positive, got {self.temperature!r}")
        if not 0.0 <= self.weak_below <= 1.0:
            raise ValueError(f"weak_below must lie in [0, 1], got {self.weak_below!r}")

    def describe(self) -> dict[str, object]:
        """What a result records about the method."""
        return {
            "method": METHOD,
            "samples": self.samples,
            "temperature": self.temperature,
            "seed": self.seed,
            "weak_below": self.weak_below,
        }


def sentence_claims(sentence: str) -> dict[str, int]:
    """The observations a sentence names, with the value the labeler reads (1, 0 or -1)."""
    return {name: int(value) for name, value in label_sentence(sentence).items()}


def agrees(claim: int, label: int | None) -> bool:
    """Whether an alternative's reading ``label`` of an observation agrees with the draft's ``claim``.

    A positive claim needs a positive reading; an uncertain one a positive or uncertain reading; a
    negative claim a negative reading or no mention (a report that does not name a finding does not
    assert it: unmentioned counts as negative, as in training).
    """
    if claim == 1:
        return label == 1
    if claim == -1:
        return label in (1, -1)
    return label in (0, None)


def support_values(
    sentences: Sequence[str], alternatives: Sequence[Mapping[str, int | None]]
) -> list[float | None]:
    """Per sentence, the share of ``alternatives`` (their labels) agreeing on all its claims; None for a
    sentence that names no observation, or when there are no alternatives."""
    values: list[float | None] = []
    for sentence in sentences:
        claims = sentence_claims(sentence)
        if not claims or not alternatives:
            values.append(None)
            continue
        agreeing = sum(
            all(agrees(claim, labels.get(name)) for name, claim in claims.items()) for labels in alternatives
        )
        values.append(round(agreeing / len(alternatives), 4))
    return values


def alternative_labels(texts: Sequence[str]) -> list[dict[str, int | None]]:
    """The labeler's reading of each alternative report."""
    return [
        {name: None if value is None else int(value) for name, value in label_report(text).labels.items()}
        for text in texts
    ]


def weak(value: float | None, settings: SupportSettings) -> bool:
    """Whether a support value marks its sentence as weakly supported."""
    return value is not None and value < settings.weak_below
