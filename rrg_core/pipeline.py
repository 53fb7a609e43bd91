"""ReviewPipeline: from a study's X-ray views to both drafts and the evidence behind them.

The one contract between the models and everything that shows or stores their output (the app,
the store, ``python -m train review``)::

    pipeline = rrg_core.load_pipeline("runs/checkpoints")
    result = pipeline.review(["frontal.dcm", "lateral.png"])
    print(result.drafts["dcrrg"].text, result.disagreements)

Models load once and serve many calls. Calls are serialised by a lock: the two CPU cores are
better used by one request's batched tensors than by two requests fighting over them, and the
models keep no per-request state, so nothing else needs guarding.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from rrg_core.checkpoints import CheckpointError, find_checkpoints, load_checkpoint
from rrg_core.data.reports import split_sentences
from rrg_core.disagreements import find_disagreements
from rrg_core.errors import RRGError
from rrg_core.generators import BatchDrafts, load_generator
from rrg_core.labeler import label_report
from rrg_core.observations import OBSERVATIONS, labels_to_json
from rrg_core.retrieval import DomainCalibration, DomainModel, load_calibration, load_index
from rrg_core.retrieval.domain import domain_check
from rrg_core.review_result import MODELS, ModelDraft, Neighbour, ReviewResult, TokenAttention
from rrg_core.study_input import LoadedStudy, ViewSource, load_study
from rrg_core.support import SupportSettings, alternative_labels, support_values

logger = logging.getLogger(__name__)

#: One study: its views (or a single view).
StudySource = Sequence[ViewSource] | ViewSource
#: Display names of the model keys.
MODEL_NAMES = {"dcrrg": "DCRRG", "uar": "UAR"}


class NeighbourIndex(Protocol):
    """What the pipeline needs of a retrieval index: the k nearest studies of each query row."""

    def search(self, queries: Tensor, k: int) -> list[list[Neighbour]]: ...


@dataclass
class LoadedModel:
    """A loaded generator with what the result records about it."""

    key: str
    generator: Any
    checkpoint_hash: str
    data_fingerprint: str | None
    vocabulary: tuple[str, ...]
    index: NeighbourIndex | None = None
    #: The checkpoint (run) folder it was loaded from; None for models built in memory.
    folder: Path | None = None
    #: The out-of-domain statistics and threshold saved beside the index (None: no domain check).
    domain: DomainModel | None = None


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def part(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


class ReviewPipeline:
    """Both models (either may be missing), their retrieval indexes and the review logic.

    Build it with :meth:`from_checkpoints`; tests may pass loaded models directly.

    Args:
        models: the loaded models by key ("dcrrg", "uar").
        missing: for each model key not loaded, why (shown in every result).
        neighbours: how many retrieval neighbours each result lists.
        support: how sentence support is computed (:class:`~rrg_core.support.SupportSettings`; its
            ``samples`` 0 turns it off).
    """

    def __init__(
        self,
        models: Sequence[LoadedModel],
        *,
        missing: dict[str, str] | None = None,
        neighbours: int = 5,
        support: SupportSettings | None = None,
    ) -> None:
        if neighbours < 0:
            raise ValueError(f"neighbours must be 0 or more, got {neighbours}")
        self.models = {model.key: model for model in models}
        unknown = set(self.models) - set(MODELS)
        if unknown:
            raise ValueError(f"unknown model key(s) {sorted(unknown)}; expected {MODELS}")
        self.missing = {key: reason for key, reason in (missing or {}).items() if key not in self.models}
        for key in MODELS:
            if key not in self.models and key not in self.missing:
                self.missing[key] = f"no {MODEL_NAMES[key]} checkpoint was given"
        self.neighbours = neighbours
        self.support = support if support is not None else SupportSettings()
        self.compatibility_warnings = _compatibility_warnings(list(self.models.values()))
        self._lock = threading.Lock()
        self._attributor: Any = None

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_checkpoints(
        cls,
        root: str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
        beam_size: int = 3,
        neighbours: int = 5,
        support: SupportSettings | None = None,
    ) -> ReviewPipeline:
        """Load the newest DCRRG and UAR checkpoints under ``root`` (default ``RRG_CHECKPOINTS``).

        A model whose checkpoint is absent or unreadable is left out and named in ``missing``; the
        pipeline refuses to start only when neither model loads.
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        found = find_checkpoints(root)
        models, missing = [], {}
        for key in MODELS:
            if key not in found:
                missing[key] = f"no {MODEL_NAMES[key]} checkpoint under {root or 'RRG_CHECKPOINTS'}"
                continue
            try:
                models.append(load_model(key, found[key], device, beam_size=beam_size))
            except RRGError as error:
                logger.warning("%s not loaded: %s", key, error)
                missing[key] = f"{MODEL_NAMES[key]} checkpoint {found[key]} could not be loaded: {error}"
        if not models:
            raise CheckpointError("no model could be loaded: " + "; ".join(missing.values()))
        return cls(models, missing=missing, neighbours=neighbours, support=support)

    # -- reviewing -------------------------------------------------------------------------------

    def review(self, images: StudySource, *, study_id: str | None = None) -> ReviewResult:
        """Review one study of one or more views (paths, bytes, arrays; PNG, JPEG or DICOM)."""
        return self.review_batch([images], study_ids=[study_id])[0]

    def review_batch(
        self,
        studies: Sequence[StudySource],
        *,
        study_ids: Sequence[str | None] | None = None,
    ) -> list[ReviewResult]:
        """Review many studies; the models run on them in batches. An unreadable image raises
        :class:`~rrg_core.data.images.ImageLoadError` naming its study, before any model runs."""
        ids = list(study_ids) if study_ids is not None else [None] * len(studies)
        if len(ids) != len(studies):
            raise ValueError(f"{len(studies)} studies but {len(ids)} study ids")
        timer = _Timer()
        with timer.part("load"):
            loaded = [_load(study, k, ids[k]) for k, study in enumerate(studies)]
        results = [
            ReviewResult(
                study_id=study_id, views=study.meta, missing=dict(self.missing),
                warnings=[*study.warnings, *self.compatibility_warnings],
            )
            for study_id, study in zip(ids, loaded, strict=True)
        ]  # fmt: skip
        if not loaded:
            return results
        views = [study.views for study in loaded]
        domain: list[dict[str, tuple[float, DomainCalibration]]] = [{} for _ in results]
        with self._lock:
            if "dcrrg" in self.models:
                self._run_dcrrg(self.models["dcrrg"], views, results, timer, domain)
            if "uar" in self.models:
                self._run_uar(self.models["uar"], views, results, timer, domain)
            if self.support.samples:
                for key, model in self.models.items():
                    with timer.part(f"support_{key}"):
                        self._support(model, views, results)
        with timer.part("labels"):
            for result, scores in zip(results, domain, strict=True):
                _flag(result)
                result.domain = domain_check(scores, MODEL_NAMES)
                result.support = self.support.describe() if self.support.samples else None
        share = {name: round(seconds / len(results), 4) for name, seconds in timer.seconds.items()}
        for result in results:
            result.timings = {**share, "total": round(sum(share.values()), 4)}
        return results

    def attribute(self, view: ViewSource, observation: str, method: str = "gradcam", **options: Any) -> Any:
        """Captum attribution of DCRRG's Step-1 head for ``observation`` on one view, on demand (an
        :class:`rrg_core.explain.attribution.Attribution`: heatmap, overlay, probability, seconds).

        ``method``: ``ig``, ``gradcam`` or ``occlusion``; ``options`` go to ``attribute`` (target,
        settings). Kept out of :meth:`review`: Integrated Gradients and occlusion cost seconds.
        """
        if "dcrrg" not in self.models:
            raise RRGError(f"attributions need DCRRG, which is not loaded: {self.missing.get('dcrrg')}")
        grey = load_study([view]).views[0]
        with self._lock:
            if self._attributor is None:
                from rrg_core.explain.attribution import ObservationAttributor

                self._attributor = ObservationAttributor.from_generator(self.models["dcrrg"].generator)
            return self._attributor.attribute(grey, observation, method, **options)

    def _run_dcrrg(
        self,
        model: LoadedModel,
        views: list[list[Tensor]],
        results: list[ReviewResult],
        timer: _Timer,
        domain: list[dict[str, tuple[float, DomainCalibration]]],
    ) -> None:
        generator = model.generator
        with timer.part("dcrrg"):  # the report and Table 7 share one image-encoder pass
            drafts, tables = [], []
            size = generator.batch_size
            for start in range(0, len(views), size):
                batch_drafts, batch_tables = generator.review_batch(views[start : start + size])
                drafts.extend(_split(batch_drafts))
                tables.extend(batch_tables)
        for k, result in enumerate(results):
            result.drafts["dcrrg"] = _draft(model, generator.vocab.decode_tokens(drafts[k].token_ids[0]))
            result.observations = tables[k]
        with timer.part("retrieval"):
            embeddings = torch.cat([d.image_embeddings for d in drafts])
            self._neighbours(model, "dcrrg", embeddings, results, domain)

    def _run_uar(
        self,
        model: LoadedModel,
        views: list[list[Tensor]],
        results: list[ReviewResult],
        timer: _Timer,
        domain: list[dict[str, tuple[float, DomainCalibration]]],
    ) -> None:
        generator = model.generator
        with timer.part("uar"):
            explanations = generator.explain(views, with_embeddings=True)
        for explanation, result in zip(explanations, results, strict=True):
            result.drafts["uar"] = _draft(model, explanation.words)
            evidence = explanation.evidence
            result.attention = TokenAttention(
                list(explanation.words),
                explanation.attention.numpy(),
                None if evidence is None else evidence.numpy(),
            )
        with timer.part("retrieval"):
            embeddings = torch.stack([e.image_embedding for e in explanations])
            self._neighbours(model, "uar", embeddings, results, domain)

    def _neighbours(
        self,
        model: LoadedModel,
        key: str,
        embeddings: Tensor,
        results: list[ReviewResult],
        domain: list[dict[str, tuple[float, DomainCalibration]]],
    ) -> None:
        """The retrieval neighbours and the out-of-domain score of each study, from its image embedding."""
        queries = embeddings.float().cpu()
        queries = queries.reshape(len(queries), -1)
        if model.domain is not None:
            for found, score in zip(domain, model.domain.scores(queries).tolist(), strict=True):
                found[key] = (float(score), model.domain.calibration)
        if model.index is None or self.neighbours == 0:
            return
        found = model.index.search(queries, self.neighbours)
        for result, neighbours in zip(results, found, strict=True):
            result.neighbours[key] = [dataclasses.replace(n, score=round(n.score, 4)) for n in neighbours]

    def _support(self, model: LoadedModel, views: list[list[Tensor]], results: list[ReviewResult]) -> None:
        """Each sentence's support among the model's alternative drafts (:mod:`rrg_core.support`)."""
        alternatives = getattr(model.generator, "alternatives", None)
        if alternatives is None:
            return
        settings = self.support
        texts = alternatives(views, settings.samples, temperature=settings.temperature, seed=settings.seed)
        for result, drafts in zip(results, texts, strict=True):
            draft = result.drafts.get(model.key)
            if draft is not None:
                draft.support = support_values(draft.sentences, alternative_labels(drafts))


def load_model(
    key: str, folder: str | os.PathLike, device: torch.device, *, beam_size: int = 3
) -> LoadedModel:
    """Load one checkpoint folder as the pipeline's model ``key`` ("dcrrg" or "uar"), with the
    retrieval index saved beside it when there is one."""
    checkpoint = load_checkpoint(folder, expected_kind=key)
    generator = load_generator(checkpoint, device, beam_size=beam_size)
    index = load_index(checkpoint, "image", missing_ok=True)
    return LoadedModel(
        key=key,
        generator=generator,
        checkpoint_hash=checkpoint.sha256[:16],
        data_fingerprint=checkpoint.data_fingerprint,
        vocabulary=tuple(checkpoint.vocab.tokens) if checkpoint.vocab is not None else (),
        index=index,
        folder=checkpoint.folder,
        domain=load_calibration(checkpoint.folder, checkpoint.sha256),
    )


def _load(study: StudySource, k: int, study_id: str | None) -> LoadedStudy:
    try:
        return load_study(study)
    except RRGError as error:
        name = f"study {study_id}" if study_id else f"study {k + 1}"
        raise type(error)(f"{name}: {error}") from error


def _split(batch: BatchDrafts) -> list[BatchDrafts]:
    """A batch's drafts as one-study slices."""
    return [_slice(batch, offset) for offset in range(len(batch.token_ids))]


def _slice(batch: BatchDrafts, offset: int) -> BatchDrafts:
    probabilities = None if batch.probabilities is None else batch.probabilities[offset : offset + 1]
    return BatchDrafts([batch.token_ids[offset]], batch.image_embeddings[offset : offset + 1], probabilities)


def _draft(model: LoadedModel, words: Sequence[str]) -> ModelDraft:
    text = " ".join(words)
    return ModelDraft(
        model=model.key,
        name=model.generator.name,
        checkpoint_hash=model.checkpoint_hash,
        text=text,
        sentences=split_sentences(text) if text else [],
        tokens=list(words),
        labels=labels_to_json(label_report(text).labels) if text else dict.fromkeys(OBSERVATIONS),
    )


def _flag(result: ReviewResult) -> None:
    labels = {key: draft.labels for key, draft in result.drafts.items()}
    result.disagreements = find_disagreements(labels, MODEL_NAMES, result.observations or None)


def _compatibility_warnings(models: list[LoadedModel]) -> list[str]:
    """Warnings when the two checkpoints were trained on different data or vocabularies: their drafts
    are still drafts, but comparing them means less."""
    if len(models) < 2:
        return []
    first, second = models
    pair = f"the {MODEL_NAMES[first.key]} and {MODEL_NAMES[second.key]} checkpoints"
    warnings = []
    fingerprints = (first.data_fingerprint, second.data_fingerprint)
    if all(fingerprints) and fingerprints[0] != fingerprints[1]:
        warnings.append(
            f"{pair} were trained on different data (fingerprints {fingerprints[0]} and {fingerprints[1]}): "
            "compare their drafts with care"
        )
    if first.vocabulary and second.vocabulary and first.vocabulary != second.vocabulary:
        warnings.append(
            f"{pair} have different vocabularies ({len(first.vocabulary)} and {len(second.vocabulary)} words)"
        )
    return warnings
