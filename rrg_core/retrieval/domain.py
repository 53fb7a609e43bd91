"""Out-of-domain check: how far a study's image embedding lies from the checkpoint's training studies.

The score of a study is the Mahalanobis distance of its global image embedding (the vector the
retrieval index is built from, before normalisation) to the training split's embeddings: their mean
and their covariance, shrunk towards a multiple of the identity (``shrinkage``) so that it inverts.
Unlike the cosine distance to the nearest neighbours, it notices an image whose embedding moves along
directions in which the training studies hardly vary, which is what a photograph or a real radiograph
does to a model trained on phantoms (``benchmarks/measure_trust.py`` compares the two).

The threshold is calibrated when the index is built, on the checkpoint's own validation split only
(never on outside images): the ``percentile``-th percentile of the validation studies' scores. A study
scoring above it is out of domain: it looks unlike anything the model was trained on.

Beside the indexes, ``CHECKPOINT/index/``: ``domain.json`` (the calibration, tied to the checkpoint's
weights by their hash, so a retrained checkpoint's old one is refused as its index is) and
``domain.safetensors`` (``mean`` (D,) and ``precision`` (D, D), float64).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import Tensor

from rrg_core.atomic_files import write_json_durably
from rrg_core.retrieval.files import BUILD_COMMAND, INDEX_DIR
from rrg_core.retrieval.index import IndexMismatchError, RetrievalError
from rrg_core.review_result import DomainCheck

FORMAT = "rrg-domain-calibration"
DOMAIN_FILE = "domain.json"
STATISTICS_FILE = "domain.safetensors"
METHOD = "Mahalanobis distance of the global image embedding to the training studies' embeddings"
DEFAULT_SHRINKAGE = 0.01
DEFAULT_PERCENTILE = 99.0


@dataclass(frozen=True)
class DomainCalibration:
    """A checkpoint's out-of-domain threshold and how it was found.

    ``threshold``: the ``percentile``-th percentile of the scores of ``val_studies`` studies of split
    ``split``, against statistics of ``train_studies`` training studies. ``data_description``: what the
    training studies are, in words, when known ("synthetic phantoms").
    """

    method: str
    shrinkage: float
    percentile: float
    threshold: float
    train_studies: int
    val_studies: int
    split: str
    checkpoint_sha256: str
    val_median: float
    val_max: float
    data_description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainCalibration:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RetrievalError(f"not an out-of-domain calibration (no format {FORMAT!r})")
        try:
            values = {name: data[name] for name in cls.__dataclass_fields__ if name != "data_description"}
            return cls(**values, data_description=data.get("data_description"))
        except (KeyError, TypeError) as error:
            raise RetrievalError(f"malformed out-of-domain calibration: {error}") from None


@dataclass(frozen=True)
class DomainModel:
    """The training embeddings' statistics and the calibrated threshold: scores studies."""

    calibration: DomainCalibration
    mean: Tensor
    precision: Tensor

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def scores(self, embeddings: Tensor) -> Tensor:
        """(N,) Mahalanobis distances of embeddings (N, D), on the CPU."""
        matrix = torch.as_tensor(embeddings).detach().to("cpu", torch.float64).reshape(len(embeddings), -1)
        if matrix.shape[1] != self.mean.shape[0]:
            raise RetrievalError(
                f"embeddings of {matrix.shape[1]} values for an out-of-domain model of {self.mean.shape[0]}"
            )
        centred = matrix - self.mean
        return ((centred @ self.precision) * centred).sum(dim=1).clamp(min=0.0).sqrt()


def statistics(train: Tensor, shrinkage: float) -> tuple[Tensor, Tensor]:
    """Mean (D,) and precision (D, D) of training embeddings (N, D), the covariance shrunk towards
    ``mean variance * I`` by ``shrinkage`` in [0, 1]."""
    matrix = torch.as_tensor(train).detach().to("cpu", torch.float64)
    if matrix.ndim != 2 or len(matrix) < 2:
        raise RetrievalError("out-of-domain statistics need the embeddings of at least two training studies")
    if not 0.0 <= shrinkage <= 1.0:
        raise RetrievalError(f"shrinkage must lie in [0, 1], got {shrinkage}")
    mean = matrix.mean(dim=0)
    centred = matrix - mean
    covariance = centred.T @ centred / (len(matrix) - 1)
    scale = float(covariance.diagonal().mean()) or 1.0
    shrunk = (1 - shrinkage) * covariance + shrinkage * scale * torch.eye(len(mean), dtype=torch.float64)
    shrunk = shrunk + 1e-9 * scale * torch.eye(len(mean), dtype=torch.float64)  # never singular
    return mean, torch.linalg.inv(shrunk)


def calibrate(
    train_embeddings: Tensor,
    val_embeddings: Tensor,
    *,
    checkpoint_sha256: str,
    split: str = "val",
    shrinkage: float = DEFAULT_SHRINKAGE,
    percentile: float = DEFAULT_PERCENTILE,
    data_description: str | None = None,
) -> DomainModel:
    """Fit the statistics on the training embeddings and the threshold on the validation ones."""
    if not 0 < percentile <= 100:
        raise RetrievalError(f"the percentile must lie in (0, 100], got {percentile}")
    if val_embeddings.ndim != 2 or len(val_embeddings) < 1:
        raise RetrievalError("calibration needs the embeddings of at least one validation study")
    mean, precision = statistics(train_embeddings, shrinkage)
    unfitted = DomainModel(
        DomainCalibration(METHOD, shrinkage, percentile, 0.0, len(train_embeddings), 0, split, "", 0, 0),
        mean,
        precision,
    )
    scores = unfitted.scores(val_embeddings).numpy()
    calibration = DomainCalibration(
        method=METHOD, shrinkage=shrinkage, percentile=percentile,
        threshold=round(float(np.percentile(scores, percentile)), 6), train_studies=len(train_embeddings),
        val_studies=len(scores), split=split, checkpoint_sha256=checkpoint_sha256,
        val_median=round(float(np.median(scores)), 6), val_max=round(float(scores.max()), 6),
        data_description=data_description,
    )  # fmt: skip
    return DomainModel(calibration, mean, precision)


def calibration_path(checkpoint_folder: str | os.PathLike) -> Path:
    """``CHECKPOINT/index/domain.json``."""
    return Path(checkpoint_folder) / INDEX_DIR / DOMAIN_FILE


def save_calibration(model: DomainModel, checkpoint_folder: str | os.PathLike) -> Path:
    """Write the statistics and the calibration beside the checkpoint's indexes; returns the JSON's path.

    The statistics go first and the JSON last (each by an atomic rename): a reader that finds the
    JSON finds its statistics.
    """
    path = calibration_path(checkpoint_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = path.with_name(f".{STATISTICS_FILE}.tmp")
    safetensors.torch.save_file(
        {"mean": model.mean.contiguous(), "precision": model.precision.contiguous()}, tensors
    )
    os.replace(tensors, path.with_name(STATISTICS_FILE))
    staging = path.with_name(f".{DOMAIN_FILE}.tmp")
    write_json_durably(staging, model.calibration.to_dict())
    os.replace(staging, path)
    return path


def load_calibration(checkpoint_folder: str | os.PathLike, checkpoint_sha256: str) -> DomainModel | None:
    """The checkpoint's out-of-domain model; None when none was saved (an index built before it existed).

    Raises:
        IndexMismatchError: it belongs to other weights (rebuild the index).
        RetrievalError: a file is unreadable or malformed.
    """
    path = calibration_path(checkpoint_folder)
    if not path.is_file():
        return None
    rebuild = f"rebuild it with {BUILD_COMMAND}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RetrievalError(f"{path} is not valid JSON ({error}): {rebuild}") from None
    calibration = DomainCalibration.from_dict(data)
    if calibration.checkpoint_sha256 != checkpoint_sha256:
        raise IndexMismatchError(
            f"{path} was calibrated for other weights (checkpoint {calibration.checkpoint_sha256[:12]}) than "
            f"the checkpoint it is loaded for ({checkpoint_sha256[:12]}): {rebuild}"
        )
    tensors = path.with_name(STATISTICS_FILE)
    try:
        with safetensors.safe_open(tensors, framework="pt", device="cpu") as handle:
            mean, precision = handle.get_tensor("mean"), handle.get_tensor("precision")
    except (safetensors.SafetensorError, OSError, RuntimeError, ValueError, TypeError) as error:
        raise RetrievalError(f"{tensors} is missing or corrupt ({error}): {rebuild}") from None
    if mean.ndim != 1 or tuple(precision.shape) != (len(mean), len(mean)):
        raise RetrievalError(f"{tensors} holds statistics of the wrong shapes: {rebuild}")
    return DomainModel(calibration, mean.to(torch.float64), precision.to(torch.float64))


def domain_check(
    scores: dict[str, tuple[float, DomainCalibration]], names: dict[str, str]
) -> DomainCheck | None:
    """The study's :class:`DomainCheck` from each model's (score, calibration); None when there are none.

    Out of domain when any model's score is above its threshold; the figures shown are those of the
    model that finds the study least familiar (highest score relative to its threshold).
    """
    if not scores:
        return None
    models = {
        key: {
            "in_domain": score <= calibration.threshold,
            "score": round(score, 4),
            "threshold": round(calibration.threshold, 4),
            "train_studies": calibration.train_studies,
        }
        for key, (score, calibration) in scores.items()
    }
    worst = max(scores, key=lambda key: scores[key][0] / max(scores[key][1].threshold, 1e-9))
    in_domain = all(model["in_domain"] for model in models.values())
    message = ""
    if not in_domain:
        calibrations = [calibration for _score, calibration in scores.values()]
        studies = max(c.train_studies for c in calibrations)
        described = next((c.data_description for c in calibrations if c.data_description), None)
        top = models[worst]
        flagged = " and ".join(names.get(key, key) for key, model in models.items() if not model["in_domain"])
        message = (
            f"This image is unlike the {studies:,} studies these models were trained on"
            f"{f' ({described})' if described else ''}: treat the drafts as meaningless. "
            f"({flagged} flagged it: its image embedding lies at a Mahalanobis distance of "
            f"{top['score']:.1f} from the training studies', beyond the {top['threshold']:.1f} "
            f"that {scores[worst][1].percentile:g}% of the {scores[worst][1].split} studies stay within.)"
        )
    return DomainCheck(in_domain, models[worst]["score"], models[worst]["threshold"], message, models)
