"""Clinical efficacy (CE): precision, recall and F1 of the observations a generated report states.

Both reports are labelled with the 14 CheXpert observations; an observation counts
as predicted when the generated report's label is positive and as present when the
reference's is. Unmentioned labels are "not positive". Uncertain labels follow
``uncertain_as``: ``"negative"`` (the default, recorded in every result) as R2Gen's
``compute_ce.py`` does (it maps -1 and blank to 0 before scoring) and as most
CheXbert-based tables do; ``"positive"`` as some code does (both sides alike).

Three forms, never to be mixed in one column (the same outputs can score micro .47 and macro .28):

* ``micro``: TP/FP/FN pooled over every report and observation;
* ``macro``: the mean over observations of per-observation P, R and F1;
* ``example_based``: P, R and F1 per report, then the mean over reports (the R2Gen lineage's
  "example-based" form, PromptMRG's; scikit-learn's ``average="samples"``). A report with no
  positive on either side scores 0 (``zero_division=0``), which only matters when few
  observations are scored: over the CheXbert five (:data:`CHEXBERT_FIVE`) every normal study does.

Which average do the papers' tables use?
    R2Gen's ``compute_ce.py`` (github.com/zhjohnchan/R2Gen, with ``compute_mlc`` in
    ``modules/metrics.py``) prints both: scikit-learn's ``precision/recall/f1_score``
    with ``average="macro"`` and ``average="micro"`` over all label columns (14). Asked
    which one the paper reports, the author answered "It's the macro-based score"
    (github.com/zhjohnchan/R2GenCMN/issues/12, 2023-08-10). The numbers agree: a micro F1
    is exactly the harmonic mean of micro P and R, but R2Gen's MIMIC-CXR row (P 0.333,
    R 0.273, F1 0.276; harmonic mean 0.300) is not. DCRRG does not say which average it
    uses; its own rows are not micro either (DCRRG: P 0.460, R 0.314, F1 0.376, harmonic
    mean 0.373, off by more than rounding), and it copies baseline rows (R2Gen's among
    them) from their papers. UAR reports no CE. So compare :attr:`ClinicalEfficacy.macro`
    with the tables; :attr:`ClinicalEfficacy.micro` is given too because it is the
    steadier number for rare observations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rrg_core.errors import RRGError
from rrg_core.observations import OBSERVATIONS, Label, canonical_name, is_positive, validate_labels

CHEXBERT_FIVE: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
"""The five observations of the CheXbert-based "CE-5" tables."""
UNCERTAIN_AS: tuple[str, ...] = ("negative", "positive")
"""How uncertain (-1) labels are counted; the first is the default."""


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1, and the support (number of positive reference labels)."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClinicalEfficacy:
    """CE scores: pooled (micro), averaged over observations (macro), averaged over reports
    (example-based), and per observation.

    ``support`` of ``micro``, ``macro`` and ``example_based`` is the total number of positive
    reference labels. ``per_observation`` follows :attr:`observations` order.
    """

    micro: PRF
    macro: PRF
    per_observation: dict[str, PRF]
    observations: tuple[str, ...]
    num_reports: int
    example_based: PRF | None = None
    uncertain_as: str = "negative"

    def to_dict(self) -> dict[str, object]:
        """Plain nested dicts (for JSON, logs and tables)."""
        return {
            "micro": vars(self.micro).copy(),
            "macro": vars(self.macro).copy(),
            "example_based": None if self.example_based is None else vars(self.example_based).copy(),
            "uncertain_as": self.uncertain_as,
            "per_observation": {name: vars(prf).copy() for name, prf in self.per_observation.items()},
            "observations": list(self.observations),
            "num_reports": self.num_reports,
        }


def clinical_efficacy(
    references: Sequence[Mapping[str, object]],
    hypotheses: Sequence[Mapping[str, object]],
    *,
    observations: Iterable[str] = OBSERVATIONS,
    exclude: Iterable[str] = (),
    uncertain_as: str = "negative",
) -> ClinicalEfficacy:
    """CE precision/recall/F1 of generated reports' labels against their references' labels.

    Args:
        references: one label mapping per reference report (observation name -> 1, 0, -1
            or None, as :func:`rrg_core.observations.validate_labels` reads them; missing
            names are unmentioned).
        hypotheses: the generated reports' label mappings, aligned with ``references``.
        observations: the observations to score (default: all 14, as R2Gen does).
        exclude: observations to leave out, e.g. ``("No Finding",)``.
        uncertain_as: ``"negative"`` (default) or ``"positive"``: how -1 counts, on both sides.

    Returns:
        :class:`ClinicalEfficacy`. Micro pools true/false positives and false negatives
        over every report and observation, then takes P = TP/(TP+FP), R = TP/(TP+FN),
        F1 = 2TP/(2TP+FP+FN). Macro is the unweighted mean over the observations of the
        per-observation P, R and F1 (so macro F1 is not the harmonic mean of macro P and
        R), as scikit-learn's ``average="macro"``. A zero denominator gives 0.0
        (scikit-learn's ``zero_division=0``), so an observation that neither side ever
        marks positive scores 0 and still pulls the macro average down, as in R2Gen.
        The papers' tables use the macro average (see the module docstring for the source).
        Example-based: per report P, R, F1 (0 where a denominator is 0), then their means.

    Raises:
        RRGError: empty input, different lengths, bad observation names or label values,
            no observation left to score, or an unknown ``uncertain_as``.
    """
    if uncertain_as not in UNCERTAIN_AS:
        raise RRGError(f"uncertain_as must be one of {', '.join(UNCERTAIN_AS)}, got {uncertain_as!r}")
    names = _choose_observations(observations, exclude)
    truth = _positive_matrix(references, names, "references", uncertain_as)
    predicted = _positive_matrix(hypotheses, names, "hypotheses", uncertain_as)
    if truth.shape[0] != predicted.shape[0]:
        raise RRGError(
            f"got {truth.shape[0]} reference label sets but {predicted.shape[0]} hypothesis label sets"
        )
    if truth.shape[0] == 0:
        raise RRGError("no reports to score: references and hypotheses are empty")
    tp = np.sum(truth & predicted, axis=0)
    fp = np.sum(~truth & predicted, axis=0)
    fn = np.sum(truth & ~predicted, axis=0)
    per_observation = {name: _prf(tp[j], fp[j], fn[j]) for j, name in enumerate(names)}
    micro = _prf(tp.sum(), fp.sum(), fn.sum())
    rows = per_observation.values()
    macro = PRF(
        precision=float(np.mean([prf.precision for prf in rows])),
        recall=float(np.mean([prf.recall for prf in rows])),
        f1=float(np.mean([prf.f1 for prf in rows])),
        support=micro.support,
    )
    rows = list(zip(np.sum(truth & predicted, axis=1), predicted.sum(axis=1), truth.sum(axis=1), strict=True))
    example_based = PRF(  # per report (t: true positives, s: said positive, p: present), then the mean
        precision=float(np.mean([_ratio(int(t), int(s)) for t, s, _ in rows])),
        recall=float(np.mean([_ratio(int(t), int(p)) for t, _, p in rows])),
        f1=float(np.mean([_ratio(2 * int(t), int(s + p)) for t, s, p in rows])),
        support=micro.support,
    )
    return ClinicalEfficacy(
        micro, macro, per_observation, names, int(truth.shape[0]), example_based, uncertain_as
    )


def _choose_observations(observations: Iterable[str], exclude: Iterable[str]) -> tuple[str, ...]:
    if isinstance(observations, str):
        observations = (observations,)
    if isinstance(exclude, str):
        exclude = (exclude,)
    dropped = {canonical_name(name) for name in exclude}
    chosen = dict.fromkeys(canonical_name(name) for name in observations)  # ordered, deduplicated
    names = tuple(name for name in chosen if name not in dropped)
    if not names:
        raise RRGError("no observation left to score after `observations` and `exclude`")
    return names


def _positive_matrix(
    label_sets: Sequence[Mapping[str, object]], names: tuple[str, ...], what: str, uncertain_as: str
) -> np.ndarray:
    """(reports, observations) booleans: is the observation positive in that report."""
    if isinstance(label_sets, Mapping | str):
        kind = type(label_sets).__name__
        raise RRGError(f"{what} must be a list of label mappings (one per report), not a single {kind}")
    rows = []
    for i, labels in enumerate(label_sets):
        try:
            complete = validate_labels(labels)
        except RRGError as exc:
            raise RRGError(f"{what}[{i}]: {exc}") from exc
        if uncertain_as == "positive":
            rows.append([complete[name] in (Label.POSITIVE, Label.UNCERTAIN) for name in names])
        else:
            rows.append([is_positive(complete[name]) for name in names])
    return np.array(rows, dtype=bool).reshape(len(rows), len(names))


def _prf(tp: int, fp: int, fn: int) -> PRF:
    tp, fp, fn = int(tp), int(fp), int(fn)
    return PRF(
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        support=tp + fn,
    )


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0
