"""What the model-backed :class:`~rrg_core.evaluation.ReportGenerator`\\ s share.

:class:`ImageReportGenerator` holds a loaded model with its vocabulary, checks the arguments every
generator takes, keeps the model in eval mode and stacks a batch's views; the DCRRG and UAR
generators add only what their models do differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rrg_core.data.datasets import StudyRecord
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import RRGError
from rrg_core.evaluation import GeneratedReport
from rrg_core.models.preprocess import Preprocess
from rrg_core.observations import OBSERVATIONS
from rrg_core.study_input import ViewSource, load_study

#: One study's loaded views: a (V, 1, H, W) tensor, or a list of (1, H, W) views (sizes may differ).
StudyViews = Tensor | Sequence[Tensor]


def _views_of(stack: StudyViews) -> list[Tensor]:
    """A study's views as a list of (1, H, W) tensors; refuses anything else."""
    views = list(stack.unbind(0)) if isinstance(stack, Tensor) and stack.dim() == 4 else None
    if views is None and not isinstance(stack, Tensor):
        views = list(stack)
    if not views or any(not isinstance(v, Tensor) or v.dim() != 3 or v.shape[0] != 1 for v in views):
        shape = tuple(stack.shape) if isinstance(stack, Tensor) else f"{len(list(stack))} views"
        raise RRGError(f"a study's images must be (V, 1, H, W) grey views, got {shape}")
    return views


@dataclass
class BatchDrafts:
    """What a model writes for a batch of N studies: report token ids (no BOS), the image embeddings
    (N, D) for retrieval, and (DCRRG) the observation probabilities (N, 14) for AUROC."""

    token_ids: list[list[int]]
    image_embeddings: Tensor
    probabilities: Tensor | None = None


class ImageReportGenerator:
    """A model that writes reports from a study's views, behind the ReportGenerator protocol.

    Args:
        model: the loaded model (moved to ``device`` and put in eval mode here).
        vocab: the checkpoint's vocabulary; it must have the model's ``vocab_size`` tokens.
        vocab_size: the model's output vocabulary size.
        device: where the model runs.
        preprocess: the checkpoint's ``preprocess`` block; its transform turns one grey view
            (1, H, W) in [0, 1] into the model's input (C, S, S).
        beam_size, name, batch_size, max_length: as the subclasses document them.
    """

    needs_images = True

    def __init__(
        self,
        model: nn.Module,
        vocab: Vocabulary,
        vocab_size: int,
        *,
        device: str | torch.device,
        preprocess: Preprocess,
        beam_size: int,
        name: str,
        batch_size: int,
        max_length: int | None,
    ) -> None:
        if beam_size < 1 or batch_size < 1:
            raise RRGError(f"beam size and batch size must be at least 1, got {beam_size} and {batch_size}")
        if len(vocab) != vocab_size:
            raise RRGError(f"vocabulary of {len(vocab)} tokens for a model of {vocab_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.preprocess = preprocess
        self.transform: Callable[[Tensor], Tensor] = preprocess.transform()
        self.beam_size, self.name, self.batch_size, self.max_length = beam_size, name, batch_size, max_length

    @torch.no_grad()
    def generate(self, records: Sequence[StudyRecord], images: list[Tensor] | None) -> list[GeneratedReport]:
        """One report per record, in batches of ``batch_size`` studies (:meth:`draft_batch`)."""
        stacks = self.check_inputs(records, images)
        self.eval_mode()
        reports: list[GeneratedReport] = []
        for start in range(0, len(records), self.batch_size):
            drafts = self.draft_batch(stacks[start : start + self.batch_size])
            embeddings = drafts.image_embeddings.float().cpu()
            for offset, tokens in enumerate(drafts.token_ids):
                probabilities = None
                if drafts.probabilities is not None:
                    probabilities = dict(
                        zip(OBSERVATIONS, drafts.probabilities[offset].tolist(), strict=True)
                    )
                reports.append(
                    GeneratedReport(
                        id=records[start + offset].id,
                        text=self.vocab.decode(tokens),
                        probabilities=probabilities,
                        image_embedding=embeddings[offset].tolist(),
                    )
                )
        return reports

    def draft(self, views: Sequence[ViewSource] | ViewSource, study_id: str = "study") -> GeneratedReport:
        """The draft of one study from its views (paths, bytes or arrays; PNG, JPEG or DICOM): its
        ``.text`` and what the model adds (probabilities, image embedding)."""
        study = load_study(views)
        record = StudyRecord(id=study_id, report="", image_paths=(), split="")
        return self.generate([record], [study.views])[0]

    def draft_batch(self, stacks: Sequence[Tensor]) -> BatchDrafts:
        """The model's drafts for one batch of loaded studies; each subclass says how."""
        raise NotImplementedError

    @torch.no_grad()
    def alternatives(
        self, stacks: Sequence[Tensor], samples: int, *, temperature: float = 1.0, seed: int = 0
    ) -> list[list[str]]:
        """``samples`` alternative reports per loaded study, drawn at ``temperature`` (decoded, cleaned
        text). Seeded, so a study gets the same alternatives on every call: what the sentence support of
        :mod:`rrg_core.support` compares the draft with."""
        stacks = list(stacks)
        self.eval_mode()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        out: list[list[str]] = []
        for start in range(0, len(stacks), self.batch_size):
            batch = self.sample_batch(
                stacks[start : start + self.batch_size], samples, temperature, generator
            )
            out.extend([self.vocab.decode(ids) for ids in rows] for rows in batch)
        return out

    def sample_batch(
        self, stacks: Sequence[Tensor], samples: int, temperature: float, generator: torch.Generator
    ) -> list[list[list[int]]]:
        """Per study of one batch, ``samples`` sampled token-id lists; each subclass says how."""
        raise NotImplementedError

    @torch.no_grad()
    def embed_images(self, stacks: Sequence[Tensor]) -> Tensor:
        """(N, D) float32 global image embeddings of loaded studies ((V, 1, H, W) each), on the CPU.

        The same vectors as :meth:`generate`'s ``image_embedding``, without writing a report (no beam
        search): what a retrieval index of a study set is built from.
        """
        stacks = list(stacks)
        if not stacks:
            raise RRGError("no studies to embed")
        self.eval_mode()
        parts = [
            self.image_embedding_batch(stacks[start : start + self.batch_size]).float().cpu()
            for start in range(0, len(stacks), self.batch_size)
        ]
        return torch.cat(parts)

    def image_embedding_batch(self, stacks: Sequence[Tensor]) -> Tensor:
        """(n, D) global image embeddings of one batch of loaded studies; each subclass says how."""
        raise NotImplementedError

    def stack_views(self, stacks: Sequence[StudyViews], views: int | None = None) -> Tensor:
        """Loaded grey views (per study a (V, 1, H, W) tensor, or a list of (1, H, W) views of any
        sizes, in [0, 1]) -> (N, V', C, S, S) on the device.

        ``views`` None: V' is the batch's most views; an int: exactly that many. A study with fewer
        repeats its views in turn (a single view becomes V' copies), one with more keeps the first.
        """
        if not stacks:
            raise RRGError("no studies to stack")
        studies = [_views_of(stack) for stack in stacks]
        count = views if views is not None else max(len(study) for study in studies)
        chosen = [[study[i % len(study)] for i in range(count)] for study in studies]
        return torch.stack([torch.stack([self._to_input(view) for view in views]) for views in chosen])

    def _to_input(self, view: Tensor) -> Tensor:
        return self.transform(view.to(self.device, non_blocking=True))

    def check_inputs(self, records: Sequence[StudyRecord], images: list[Tensor] | None) -> list[Tensor]:
        """The image stacks of ``records``; refuses a missing or mis-sized list."""
        if images is None:
            raise RRGError(f"{self.name} writes reports from images: none were given")
        if len(images) != len(records):
            raise RRGError(f"{len(records)} studies but {len(images)} image stacks")
        return list(images)

    def eval_mode(self) -> None:
        """Back to eval mode if a caller switched the shared model to training (e.g. between
        epochs): dropout and batch-norm updates must not leak into generated reports."""
        if self.model.training:
            self.model.eval()
