"""DCRRG as a report generator: drafts, Step-1 probabilities, embeddings and Table 7.

:class:`DCRRGGenerator` wraps a loaded :class:`~rrg_core.models.dcrrg.DCRRG` for evaluation and
serving: it takes the studies' views as the data sets load them, applies the checkpoint's
preprocessing and returns, per study, the Step-4 report, the 14 Step-1 observation probabilities
(for AUROC) and the DCCLIP global image embedding (for image-to-report P@K, with
:meth:`DCRRGGenerator.embed_reports` on the text side); :meth:`DCRRGGenerator.review_batch` adds
Table 7 from the same encoder pass.

Views: each study's views are transformed one by one and stacked as (V, 3, H, W); a batch is
(N, V, 3, H, W) and the model fuses the views (mean of pooled features, feature maps side by side).
A study with fewer views than the batch's most repeats its views in turn to match (a single view is
repeated, as :mod:`rrg_core.models.dcrrg.dcclip` prescribes), so mixed batches need no second pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional

from rrg_core.checkpoints import Checkpoint, CheckpointError
from rrg_core.data.vocab import Vocabulary
from rrg_core.generators.base import BatchDrafts, ImageReportGenerator
from rrg_core.models.dcrrg import DCRRG, Descriptions, EncoderFeatures, default_preprocess, load_dcrrg
from rrg_core.models.dcrrg import read_preprocess as read_dcrrg_preprocess
from rrg_core.models.preprocess import Preprocess
from rrg_core.observations import OBSERVATIONS
from rrg_core.review_result import ObservationRow
from rrg_core.table_consistency import HEDGES, description_contradicts, hedged_finding, reconcile


def checked_row(row: ObservationRow) -> ObservationRow:
    """``row`` as it is, or with its description moved to ``withheld`` when the labeler reads it as
    saying the opposite of the row's label: Table 7 never shows "Edema, positive: there is no
    pulmonary edema". A model trained with ``label_prompts`` writes each description for its label,
    so this is rare; it stays as the guarantee on inputs unlike any training image."""
    if not description_contradicts(row.observation, row.label, row.description):
        return row
    return dataclasses.replace(row, description="", withheld=row.description)


class DCRRGGenerator(ImageReportGenerator):
    """DCRRG behind the ReportGenerator protocol (module docstring); always in eval mode, no gradients.

    Args:
        model: a DCRRG (moved to ``device`` and put in eval mode here).
        vocab: the checkpoint's vocabulary; reports are ``vocab.decode(ids)``, the cleaned form.
        device: where the model runs; images are moved there before the transform, so resizing runs
            on the accelerator too.
        preprocess: the checkpoint's preprocessing; None for the backbone's own (224 px and its
            normalisation). Small presets train at other sizes and record it.
        beam_size: beam width of the Step-4 report (and of Table 7's descriptions).
        name: the model's name in evaluation results.
        batch_size: studies per forward pass; :func:`~rrg_core.evaluation.evaluate_model` may pass
            larger batches, which are split (to bound memory during beam search).
        max_length: token limit of a generated report; None for the model's own.
    """

    def __init__(
        self,
        model: DCRRG,
        vocab: Vocabulary,
        *,
        device: str | torch.device,
        preprocess: Preprocess | None = None,
        beam_size: int = 3,
        name: str = "DCRRG",
        batch_size: int = 16,
        max_length: int | None = None,
    ) -> None:
        super().__init__(
            model, vocab, model.config.vocab_size, device=device,
            preprocess=preprocess or default_preprocess(model.config), beam_size=beam_size, name=name,
            batch_size=batch_size, max_length=max_length,
        )  # fmt: skip

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, device: str | torch.device, *, beam_size: int = 3
    ) -> DCRRGGenerator:
        """The model, vocabulary and preprocessing of a ``dcrrg`` checkpoint."""
        model, checkpoint = load_dcrrg(checkpoint, device)
        if checkpoint.vocab is None:
            raise CheckpointError(f"{checkpoint.folder}: a DCRRG checkpoint needs its vocab.json")
        preprocess = read_dcrrg_preprocess(checkpoint, model.config)
        return cls(model, checkpoint.vocab, device=device, preprocess=preprocess, beam_size=beam_size)

    # -- the ReportGenerator protocol ------------------------------------------------------------

    def draft_batch(self, stacks: Sequence[Tensor]) -> BatchDrafts:
        """Step-4 reports, Step-1 probabilities and DCCLIP global image embeddings of one batch."""
        return self._drafts(self._encode(stacks))

    @torch.no_grad()
    def review_batch(self, stacks: Sequence[Tensor]) -> tuple[BatchDrafts, list[list[ObservationRow]]]:
        """:meth:`draft_batch` and Table 7 of one batch from one encoder pass: what the serving
        pipeline shows for each study."""
        self.eval_mode()
        features = self._encode(stacks)
        table = self.model.describe(features, beam_size=self.beam_size, max_length=self.max_length)
        rows = self.observation_rows(table)
        return self._drafts(features, rows), rows

    def observation_rows(self, table: Descriptions) -> list[list[ObservationRow]]:
        """Table 7 per study: observation, probability, threshold, label, decoded description; a
        description that contradicts its row's label is withheld (:func:`checked_row`)."""
        thresholds = self.model.thresholds.tolist()
        probabilities, labels = table.probabilities.tolist(), table.labels.tolist()
        return [
            [
                checked_row(
                    ObservationRow(
                        observation=name,
                        probability=round(float(probabilities[b][k]), 4),
                        threshold=round(float(thresholds[k]), 4),
                        label=int(labels[b][k]),
                        description=self.vocab.decode(table.description_ids[b][k]),
                    )
                )
                for k, name in enumerate(OBSERVATIONS)
            ]
            for b in range(len(table.description_ids))
        ]

    def _encode(self, stacks: Sequence[Tensor]) -> EncoderFeatures:
        # One encoder pass serves the Step-1 heads, the embedding and the decoder memory.
        return self.model.features(self.prepare(stacks))

    def _drafts(
        self, features: EncoderFeatures, rows: list[list[ObservationRow]] | None = None
    ) -> BatchDrafts:
        probabilities = self.model.observation_probabilities(features)
        embeddings = self.global_image_embedding(features.pooled)
        ids = self.model.generate(features, beam_size=self.beam_size, max_length=self.max_length)
        if self.model.config.reconcile_report:
            if rows is None:
                table = self.model.describe(features, beam_size=self.beam_size, max_length=self.max_length)
                rows = self.observation_rows(table)
            ids = [self.reconciled(report, table_rows) for report, table_rows in zip(ids, rows, strict=True)]
        return BatchDrafts(ids, embeddings, probabilities)

    def reconciled(self, report: list[int], rows: list[ObservationRow]) -> list[int]:
        """``report`` (ids) made to state what its Table 7 says (:func:`reconcile`): the sentences
        that contradict a row dropped, the row descriptions of unstated present findings appended,
        and for an abnormal study with no finding over its threshold the hedge on the nearest one
        (:func:`hedged_finding`; left out if the vocabulary lacks one of its words)."""
        sentences = self._sentences(report)
        labels = [r.label for r in rows]
        descriptions = [r.description for r in rows]
        keep, added = reconcile([self.vocab.decode(s) for s in sentences], labels, descriptions)
        appended = [self.vocab.encode(descriptions[k], 1000)[1:] for k in added]
        hedged = hedged_finding(rows)
        hedge = [] if hedged is None else self.vocab.encode(HEDGES[hedged], 1000)[1:]
        if hedge and self.vocab.unk_id not in hedge:
            appended.append(hedge)
        body = [i for k in keep for i in sentences[k]]
        body += [i for ids in appended for sentence in self._sentences(ids) for i in sentence]
        return [*body, self.vocab.eos_id]

    def _sentences(self, ids: list[int]) -> list[list[int]]:
        """Token ids (no BOS) up to EOS, split after each "."."""
        period, sentences, current = self.vocab.token_id("."), [], []
        for i in ids:
            if i == self.vocab.eos_id:
                break
            current.append(i)
            if i == period:
                sentences.append(current)
                current = []
        return sentences + ([current] if current else [])

    def sample_batch(
        self, stacks: Sequence[Tensor], samples: int, temperature: float, generator: torch.Generator
    ) -> list[list[list[int]]]:
        """Step-4 reports sampled at ``temperature`` (the alternatives of :meth:`alternatives`)."""
        return self.model.sample(
            self._encode(stacks), samples=samples, temperature=temperature, max_length=self.max_length,
            generator=generator,
        )  # fmt: skip

    def image_embedding_batch(self, stacks: Sequence[Tensor]) -> Tensor:
        """(n, P) unit-length DCCLIP global image embeddings of one batch (the encoder pass only)."""
        uni, _ = self.model.clip.encode_image(self.prepare(stacks))
        return self.global_image_embedding(uni)

    def global_image_embedding(self, uni: Tensor) -> Tensor:
        """Pooled image features (n, C) -> the unit-length DCCLIP global image embedding (n, P)."""
        return functional.normalize(self.model.clip.global_embedding(uni, "image"), dim=-1)

    @torch.no_grad()
    def embed_reports(self, texts: Sequence[str]) -> Tensor:
        """(N, P) unit-length DCCLIP global text embeddings (zero prompt) of cleaned reports, on the CPU."""
        self.eval_mode()
        texts = list(texts)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            uni = self.model.clip.encode_text(texts[start : start + self.batch_size])
            parts.append(functional.normalize(self.model.clip.global_embedding(uni, "text"), dim=-1).cpu())
        if not parts:
            return torch.empty(0, self.model.config.clip.projection_dim)
        return torch.cat(parts).float()

    def prepare(self, stacks: Sequence[Tensor]) -> Tensor:
        """Loaded views ((V, 1, H, W) per study, [0, 1]) -> (N, V_max, 3, h, w) on the device."""
        return self.stack_views(stacks)
