"""Rule-based CheXpert-style labeler: mention extraction, negation/uncertainty, aggregation.

Public API: :func:`label_report`, :func:`label_reports`, :func:`label_sentence`, :class:`ReportLabels`;
command line: ``python -m rrg_core.labeler --reports REPORTS.csv --out LABELS.csv``.

Labelling conventions (chosen here; the CheXpert labeler differs on some):

* A statement of normal size is a negative mention: "heart size is normal", "normal cardiac
  silhouette" -> Cardiomegaly 0; "mediastinum is unremarkable" -> Enlarged Cardiomediastinum 0; a
  normal "cardiomediastinal silhouette" is negative for both. "Borderline" / "upper limits of normal"
  heart size is Cardiomegaly -1. "Stable/unchanged cardiomegaly", "no change in cardiomegaly" are 1.
* "The lungs are clear" -> Lung Opacity 0 (only Lung Opacity; it says nothing about effusion or
  pneumothorax). "Costophrenic angles are sharp" -> Pleural Effusion 0.
* A granuloma (calcified or not) and "granulomatous disease" -> Lung Lesion 1: it is a (benign)
  nodular lesion, and IU reports name it often. A nodular opacity/density is a Lung Lesion only.
* Scarring -> Lung Opacity (pleural scarring -> Pleural Other). Emphysema, hyperinflation, tortuous
  aorta, hilar findings and "no acute bony abnormality" name no observation.
* Costophrenic blunting -> Pleural Effusion 1. Healed/old fractures -> Fracture 1.
* Devices removed ("PICC removed") -> Support Devices 0. Surgical clips, stents, sternotomy -> 1.
* "No acute cardiopulmonary abnormality" names no observation; No Finding comes only from the rule:
  1 when no observation other than Support Devices is 1 or -1, else unmentioned (CheXpert's rule).
  Its attributed sentences are the report's "no acute disease" / "normal chest" sentences.
* Within a report, positive > uncertain > negative.
"""

from rrg_core.labeler.core import ReportLabels, label_report, label_reports, label_sentence

__all__ = ["ReportLabels", "label_report", "label_reports", "label_sentence"]
