"""Markdown tables of evaluation results: the papers' columns, the alignment figures, image dependence.

What ``python -m train evaluate`` prints; the numbers come from :mod:`rrg_core.evaluation` and
:mod:`rrg_core.image_dependence`, and nothing here computes a score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from rrg_core.evaluation import PRECISION_KS, RETRIEVAL_RELEVANCE, EvaluationResult, finite_or_none
from rrg_core.image_dependence import ImageDependence
from rrg_core.metrics import NLG_METRICS
from rrg_core.observations import OBSERVATIONS

TABLE_COLUMNS: tuple[str, ...] = (
    "B1",
    "B2",
    "B3",
    "B4",
    "MTR",
    "RL",
    "CIDEr",
    "P",
    "R",
    "F1",
    "AUROC",
    "P@1",
    "P@5",
    "studies/s",
)


def table_row(result: EvaluationResult) -> dict[str, float | None]:
    """The values of :data:`TABLE_COLUMNS` for one result (None where not computed); CE is macro."""
    macro, p_at_k = result.clinical.macro, result.precision_at_k or {}
    auroc = None if result.auroc is None else finite_or_none(result.auroc.mean)
    values = [result.nlg.get(key) for key in NLG_METRICS]  # B1..B4, MTR, RL, CIDEr: the same order
    values += [macro.precision, macro.recall, macro.f1, auroc, p_at_k.get(1), p_at_k.get(5)]
    return dict(zip(TABLE_COLUMNS, [*values, result.studies_per_second], strict=True))


def format_alignment_table(results: Mapping[str, EvaluationResult]) -> str:
    """A Markdown table of the global-alignment figures (UAR sec. 5.1-5.2): the alignment score and
    P@K in both retrieval directions, one row per model that has them; "" when none has."""
    rows = {name: r for name, r in results.items() if r.precision_at_k is not None}
    if not rows:
        return ""
    ks = [k for k in PRECISION_KS if k != 2]
    lines = [
        "| Model | Alignment | " + " | ".join(f"I->R P@{k}" for k in ks) + " | "
        + " | ".join(f"R->I P@{k}" for k in ks) + " | chance P@K |",
        "|---|" + "---:|" * (2 + 2 * len(ks)),
    ]  # fmt: skip
    for name, result in rows.items():
        reverse = result.report_to_image_precision_at_k or {}
        values = [
            result.alignment,
            *(result.precision_at_k.get(k) for k in ks),
            *(reverse.get(k) for k in ks),
            result.chance_precision,
        ]
        cells = ["-" if v is None or not math.isfinite(v) else f"{v:.3f}" for v in values]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Alignment: UAR footnote 3, the share of matched image-report pairs whose cosine similarity, min-max "
        f"normalised over all pairs, exceeds 0.5. P@K relevance: {RETRIEVAL_RELEVANCE}; chance P@K: what "
        "a random ranking scores."
    )
    return "\n".join(lines)


def format_table(results: Mapping[str, EvaluationResult]) -> str:
    """A Markdown table, one row per model, in :data:`TABLE_COLUMNS`; "-" where a value is absent."""
    lines = [
        "| Model | " + " | ".join(TABLE_COLUMNS) + " |",
        "|---|" + "---:|" * len(TABLE_COLUMNS),
    ]
    for name, result in results.items():
        cells = []
        for column, value in table_row(result).items():
            if value is None:
                cells.append("-")
            elif column == "studies/s":
                cells.append(f"{value:.1f}")
            else:
                cells.append(f"{value:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = sorted({result.num_studies for result in results.values()})
    lines.append("")
    lines.append(
        f"Studies: {', '.join(map(str, counts))}. P/R/F1: clinical efficacy, macro average over the "
        f"{len(OBSERVATIONS)} observations (the papers' form; micro, example-based and the CheXbert five are "
        f"in metrics.json). P@K relevance: {RETRIEVAL_RELEVANCE}."
    )
    return "\n".join(lines)


def format_image_dependence_table(figures: Mapping[str, ImageDependence]) -> str:
    """A Markdown table, one row per model; "" when there is none."""
    if not figures:
        return ""
    lines = [
        "| Model | distinct drafts | CE F1 micro | swapped-image CE F1 micro | kept |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, figure in figures.items():
        kept = "-" if figure.ce_kept is None else f"{figure.ce_kept:.2f}"
        lines.append(
            f"| {name} | {figure.distinct_drafts}/{figure.num_studies} | {figure.ce_micro_f1:.3f} | "
            f"{figure.swapped_ce_micro_f1:.3f} | {kept} |"
        )
    lines.append("")
    lines.append(
        "Image dependence: each study paired with another study's images (a seeded derangement); a model "
        "that reads the image keeps little of its CE F1 there, one that ignores it keeps all of it."
    )
    return "\n".join(lines)
