"""The words of a report that name one of the 14 observations, and which one.

The TIR heatmaps' pointing game plays each such word against its finding's mask, and the app shows
the UAR findings head's evidence for the observation a clicked word names. A word names a finding
whatever the sentence says of it ("no effusion" names Pleural Effusion): which state is stated is
the labeler's business, where the word points is this module's.
"""

from __future__ import annotations

from collections.abc import Sequence

from rrg_core.data.reports import sentence_spans

WORD_OBSERVATIONS: dict[str, str] = {
    **dict.fromkeys(("effusion", "effusions"), "Pleural Effusion"),
    "cardiomegaly": "Cardiomegaly",
    **dict.fromkeys(("pneumothorax", "pneumothoraces"), "Pneumothorax"),
    **dict.fromkeys(("nodule", "nodules", "mass", "masses", "lesion", "granuloma"), "Lung Lesion"),
    **dict.fromkeys(("opacity", "opacities", "opacification"), "Lung Opacity"),
    **dict.fromkeys(("consolidation", "consolidations"), "Consolidation"),
    "atelectasis": "Atelectasis",
    "edema": "Edema",
    **dict.fromkeys(("fracture", "fractures"), "Fracture"),
    "pneumonia": "Pneumonia",
    **dict.fromkeys(("thickening", "plaque"), "Pleural Other"),
    **dict.fromkeys(("widening", "widened"), "Enlarged Cardiomediastinum"),
    **dict.fromkeys(("pacemaker", "catheter", "tube", "wires", "sternotomy"), "Support Devices"),
}
"""Words that name one finding by themselves."""

_ENLARGED = ("enlarged", "enlargement")
_HEART = ("heart", "cardiac")
_MEDIASTINUM = ("mediastinum", "mediastinal", "cardiomediastinal")


def finding_words(words: Sequence[str]) -> list[tuple[int, str]]:
    """(position, observation) of every word of a report that names a finding.

    "enlarged"/"enlargement" names Cardiomegaly in a sentence about the heart and Enlarged
    Cardiomediastinum in one about the mediastinum; other words go through :data:`WORD_OBSERVATIONS`.
    """
    found: list[tuple[int, str]] = []
    for sentence in sentence_spans(words):
        context = set(words[sentence.start : sentence.stop])
        for position in range(sentence.start, sentence.stop):
            word = words[position]
            observation = WORD_OBSERVATIONS.get(word)
            if word in _ENLARGED:
                if context.intersection(_HEART):
                    observation = "Cardiomegaly"
                elif context.intersection(_MEDIASTINUM):
                    observation = "Enlarged Cardiomediastinum"
            if observation is not None:
                found.append((position, observation))
    return found


def named_observation(words: Sequence[str], position: int) -> str | None:
    """The observation that word ``position`` of ``words`` names (:func:`finding_words`), or None."""
    return dict(finding_words(words)).get(position)
