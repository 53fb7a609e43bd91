"""Rule-based CheXpert-style labeler: mention extraction, negation/uncertainty, aggregation.

Public API: :func:`label_report`, :func:`label_reports`, :func:`label_sentence`, :class:`ReportLabels`;
command line: ``python -m rrg_core.labeler --reports REPORTS.csv --out LABELS.csv``.

Conventions: the CheXpert labeler's (stanfordmlgroup/chexpert-labeler; :mod:`.conventions` names the
commit). Its phrase lists (``phrases/mention``, ``phrases/unmention``) define what each observation covers
(:mod:`.mentions`), its ``patterns/`` which mentions are negative or uncertain (:mod:`.context`), and its
aggregation the report's labels:

* Within a report, positive > uncertain > negative.
* No Finding is 1 when no observation other than Support Devices is 1 or -1 *and* none of CheXpert's "other
  findings" (emphysema, granuloma, calcification, blunting, degenerative change, ...) is stated; else it is
  unmentioned. Its attributed sentences are the report's "no acute disease" / "normal chest" sentences.
* Granuloma is not a Lung Lesion, "the lungs are clear" and "sharp costophrenic angles" name no observation,
  costophrenic blunting is not a Pleural Effusion, sternotomy wires and clips are not Support Devices,
  vascular congestion is Edema -1, "stable cardiomediastinal silhouette" is Enlarged Cardiomediastinum -1.
  Scarring is Lung Opacity and a healed fracture is a Fracture, as CheXpert's lists have them.
* Departures, off by default, in :class:`LabelerOptions` (with their reasons): ``granuloma_as_lesion``.
  Kept readings where words are read more narrowly than CheXpert's substrings are listed in
  :mod:`.mentions` and :mod:`.context`.

:data:`LABELER_VERSION` changes with every rule change; label caches are keyed by it.
"""

from rrg_core.labeler.conventions import DEFAULT_OPTIONS, LABELER_VERSION, LabelerOptions, labeler_key
from rrg_core.labeler.core import ReportLabels, label_report, label_reports, label_sentence

__all__ = [
    "DEFAULT_OPTIONS",
    "LABELER_VERSION",
    "LabelerOptions",
    "ReportLabels",
    "label_report",
    "label_reports",
    "label_sentence",
    "labeler_key",
]
