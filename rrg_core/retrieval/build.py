"""Build the retrieval indexes of a study set with a trained model (DCRRG or UAR).

Each model gives two indexes over the same studies, kept apart because they answer different
questions: ``image`` (the model's global image embedding of each study: studies that look alike)
and ``report`` (its global embedding of each study's cleaned report: the reports it places nearest to
an image, the UAR paper's Figure 3). DCRRG's are the DCCLIP global embeddings (zero prompt), UAR's
the CRA global features; both come from the models' generators (``embed_images``, ``embed_reports``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from typing import Any, Protocol

import torch
from torch import Tensor

from rrg_core.data.datasets import IMAGES_DIR, StudyRecord
from rrg_core.data.reports import clean_report
from rrg_core.progress import progress_bar
from rrg_core.retrieval.index import IndexSource, RetrievalError, RetrievalIndex

#: Model kind -> embedding kind -> what its vectors are (saved in each index's metadata).
EMBEDDINGS: dict[str, dict[str, str]] = {
    "dcrrg": {
        "image": "DCCLIP global image embedding (all-zero prompt)",
        "report": "DCCLIP global text embedding (all-zero prompt) of the cleaned report",
    },
    "uar": {
        "image": "CRA global image feature (mean of F^(I) over the visual tokens)",
        "report": "CRA global report feature (mean of F^(R) over the cleaned report's tokens)",
    },
}


class EmbeddingModel(Protocol):
    """What index building needs of a generator (both DCRRGGenerator and UARGenerator are one)."""

    batch_size: int

    def embed_images(self, stacks: Sequence[Tensor]) -> Tensor:
        """(n, D) global image embeddings of loaded studies ((V, 1, H, W) each)."""
        ...

    def embed_reports(self, texts: Sequence[str]) -> Tensor:
        """(n, D) global embeddings of cleaned report texts."""
        ...


def indexable(records: Sequence[StudyRecord]) -> list[StudyRecord]:
    """The studies worth retrieving: those with an image and a non-empty cleaned report."""
    return [r for r in records if r.image_paths and clean_report(r.report)]


def build_indexes(
    model: EmbeddingModel,
    model_kind: str,
    checkpoint_sha256: str,
    records: Sequence[StudyRecord],
    images: Iterable[Tensor],
    *,
    data_fingerprint: str | None = None,
    split: str | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, RetrievalIndex]:
    """The ``image`` and ``report`` indexes of ``records`` with ``model``'s embeddings.

    Args:
        model: the checkpoint's generator (:class:`EmbeddingModel`).
        model_kind: the checkpoint's kind, a key of :data:`EMBEDDINGS`.
        checkpoint_sha256: the hash of the checkpoint's weights (the indexes are tied to it).
        records: the studies, e.g. :func:`indexable` of the training split.
        images: one loaded stack per record, in record order (a lazy iterable is read batch by batch).
        data_fingerprint, split: where the studies come from, recorded with the indexes.
        progress: show tqdm bars.
        options: passed to :class:`RetrievalIndex` (backend, faiss_min_rows, chunk_rows).

    Returns:
        ``{"image": index, "report": index}`` over the same studies, in record order.
    """
    if model_kind not in EMBEDDINGS:
        raise RetrievalError(
            f"no retrieval embeddings known for model kind {model_kind!r}; known: {', '.join(EMBEDDINGS)}"
        )
    if not records:
        raise RetrievalError("no studies to index")
    stacks = iter(images)
    parts: list[Tensor] = []
    with progress_bar(
        total=len(records), unit="study", desc=f"{model_kind} image embeddings", show=progress
    ) as bar:
        for start in range(0, len(records), model.batch_size):
            wanted = min(model.batch_size, len(records) - start)
            batch = list(itertools.islice(stacks, wanted))
            if len(batch) != wanted:
                raise RetrievalError(f"{len(records)} studies but only {start + len(batch)} image stacks")
            with torch.inference_mode():
                parts.append(model.embed_images(batch).float().cpu())
            bar.update(len(batch))
    texts = [clean_report(r.report) for r in records]
    report_parts: list[Tensor] = []
    for start in progress_bar(
        range(0, len(texts), model.batch_size),
        unit="batch",
        desc=f"{model_kind} report embeddings",
        show=progress,
    ):
        with torch.inference_mode():
            report_parts.append(model.embed_reports(texts[start : start + model.batch_size]).float().cpu())
    vectors = {"image": torch.cat(parts), "report": torch.cat(report_parts)}
    ids = [r.id for r in records]
    reports = [r.report for r in records]
    paths = [str(PurePosixPath(IMAGES_DIR, r.image_paths[0])) for r in records]
    return {
        kind: RetrievalIndex(
            vectors[kind],
            ids,
            reports,
            paths,
            IndexSource(model_kind, kind, description, checkpoint_sha256, data_fingerprint, split),
            **options,
        )
        for kind, description in EMBEDDINGS[model_kind].items()
    }
