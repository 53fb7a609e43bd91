"""Evaluation metrics for generated reports and for the models behind them.

- :mod:`~rrg_core.metrics.nlg`: BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap).
- :mod:`~rrg_core.metrics.clinical`: clinical efficacy (CE) precision/recall/F1 from
  CheXpert observation labels: micro, macro and example-based, over 14 or the CheXbert five.
- :mod:`~rrg_core.metrics.ranking`: AUROC per observation, retrieval Precision@K and
  UAR's alignment score.
- :mod:`~rrg_core.metrics.thresholds`: per-observation F1-maximising decision thresholds.
"""

from rrg_core.metrics.clinical import CHEXBERT_FIVE, PRF, UNCERTAIN_AS, ClinicalEfficacy, clinical_efficacy
from rrg_core.metrics.nlg import (
    JAVA_METRICS,
    NLG_METRICS,
    java_available,
    nlg_scores,
    sanitize_text,
)
from rrg_core.metrics.ranking import (
    ALIGNMENT_THRESHOLD,
    AurocSummary,
    alignment_score,
    auroc,
    auroc_per_observation,
    category_relevance,
    chance_precision,
    precision_at_k,
    precision_at_ks,
)
from rrg_core.metrics.thresholds import choose_micro_thresholds, choose_thresholds

__all__ = [
    "ALIGNMENT_THRESHOLD",
    "CHEXBERT_FIVE",
    "JAVA_METRICS",
    "NLG_METRICS",
    "PRF",
    "UNCERTAIN_AS",
    "AurocSummary",
    "ClinicalEfficacy",
    "alignment_score",
    "auroc",
    "auroc_per_observation",
    "category_relevance",
    "chance_precision",
    "choose_micro_thresholds",
    "choose_thresholds",
    "clinical_efficacy",
    "java_available",
    "nlg_scores",
    "precision_at_k",
    "precision_at_ks",
    "sanitize_text",
]
