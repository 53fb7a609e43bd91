"""The labeler's version and its named departures from the CheXpert labeler's conventions.

:data:`LABELER_VERSION` changes whenever a change to the rules can change a label, so caches of labels
(training label caches, ``labels.json`` of a run folder) made by another version are relabelled, not reused.
"""

from __future__ import annotations

from dataclasses import dataclass

LABELER_VERSION = "2026-12-chexpert-2"
"""Bump on every change of mentions, negation/uncertainty or aggregation rules."""

CHEXPERT_SOURCE = "github.com/stanfordmlgroup/chexpert-labeler@44ddeb3 (phrases/, patterns/)"
"""Where the phrase lists and negation/uncertainty rules followed here were read."""


@dataclass(frozen=True)
class LabelerOptions:
    """Departures from CheXpert's reading, each off by default.

    ``granuloma_as_lesion``: read a granuloma (calcified or not) and "granulomatous disease" as Lung
    Lesion 1. CheXpert's Lung Lesion list (``phrases/mention/lung_lesion.txt``) has no granuloma and its
    unmention list drops "calcified nodule"; granuloma is one of its "other findings" that only block No
    Finding. The reason to turn it on: a granuloma is a (benign) nodular lesion, and an IU X-ray reader
    who wants every nodular lesion counted gets them; the price is Lung Lesion precision against any
    CheXpert-style labelling (0.21 in the measurement of issue #21).

    Scarring as Lung Opacity and healed fractures as Fracture are *not* departures: CheXpert's
    ``lung_opacity.txt`` lists "scar" and "parenchymal scarring" (with "pleural scar" unmentioned, which is
    Pleural Other), and ``fracture.txt`` lists "fracture" with no exclusion for healed or old ones. Both
    stay as they were, with no option.
    """

    granuloma_as_lesion: bool = False

    def tag(self) -> str:
        """A short string naming the options that differ from the defaults ("" for the defaults)."""
        return "+granuloma_as_lesion" if self.granuloma_as_lesion else ""


DEFAULT_OPTIONS = LabelerOptions()


def labeler_key(options: LabelerOptions = DEFAULT_OPTIONS) -> str:
    """The key of a label cache: the labeler's version and its options."""
    return LABELER_VERSION + options.tag()
