"""A trained UAR model as a :class:`~rrg_core.evaluation.ReportGenerator`, with TIR heatmaps for the app.

:class:`UARGenerator` takes the studies' views as the data sets load them ((V, 1, H, W) in [0, 1]),
applies the transform its checkpoint recorded (resize to the input size, grey or grey-to-RGB, mean
and std), and returns per study the beam-search report and the CRA global image feature (the mean
of F^(I) over all visual tokens) as the image embedding; :meth:`UARGenerator.embed_reports` gives
the CRA global report feature (the mean of F^(R) over the report's tokens) of report texts, so that
evaluation can score image/report retrieval and UAR's alignment score on the features the triplet
loss aligned. :meth:`UARGenerator.explain` returns, for every generated word, its text-to-image
attention over each view's token grid: the heatmaps of the paper's Figure 6.

Views: a study with fewer views than the model takes repeats its views in turn (a single frontal
view is given to both view slots); extra views are dropped, the frontal view coming first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional

from rrg_core.checkpoints import Checkpoint, CheckpointError
from rrg_core.data.finding_words import named_observation
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import RRGError
from rrg_core.generators.base import BatchDrafts, ImageReportGenerator
from rrg_core.labeler import label_report
from rrg_core.models.preprocess import Preprocess
from rrg_core.models.sampling import sample_sequences
from rrg_core.models.uar import ABLATIONS, UAR, UARConfig, load_uar
from rrg_core.models.uar import read_preprocess as read_uar_preprocess
from rrg_core.models.uar.config import default_preprocess
from rrg_core.models.uar.decoding import UARGeneration
from rrg_core.models.uar.evidence import findings_evidence
from rrg_core.observations import OBSERVATIONS
from rrg_core.table_consistency import report_disagreements


@dataclass(frozen=True)
class UARExplanation:
    """One study's generated report with a heatmap per word.

    ``attention`` (len(words), V, h, w): the text-to-image attention (mean over heads and decoder
    layers) that produced each word, over each view's token grid; each word's map sums to 1 over all
    views together. :meth:`upsampled` stretches the maps to an image size for overlays.
    """

    text: str
    words: list[str]
    attention: Tensor
    #: The CRA global image feature (d,) when :meth:`UARGenerator.explain` was asked for it.
    image_embedding: Tensor | None = None
    #: (14, V, h, w): the findings head's evidence for each observation
    #: (:func:`~rrg_core.models.uar.evidence.findings_evidence`); None for a model without the head.
    evidence: Tensor | None = None

    def word_evidence(self, position: int) -> tuple[str, Tensor] | None:
        """The observation that word ``position`` names and the findings head's evidence map of it
        (V, h, w), or None when the word names no finding or the model has no findings head."""
        if self.evidence is None:
            return None
        observation = named_observation(self.words, position)
        return None if observation is None else (observation, self.evidence[OBSERVATIONS.index(observation)])

    def upsampled(self, size: int | tuple[int, int]) -> Tensor:
        """(len(words), V, H, W): each cell's weight spread over its pixels (bilinear)."""
        if not self.words:
            height, width = (size, size) if isinstance(size, int) else size
            return self.attention.new_zeros((0, self.attention.shape[1], height, width))
        return functional.interpolate(self.attention, size=size, mode="bilinear", align_corners=False)


class UARGenerator(ImageReportGenerator):
    """UAR behind the ReportGenerator protocol (module docstring); always in eval mode, no gradients.

    Args:
        model: a UAR with its dVAE tokenizer attached (or the "base" row, which reads images itself).
        vocab: the checkpoint's vocabulary; reports are ``vocab.decode(ids)``, the cleaned form.
        device: where the model runs.
        preprocess: the checkpoint's preprocessing; None: the model's input size, the tokenizer's
            channels and mean = std = 0.5.
        beam_size: beam width (the paper's 3 by default).
        name: the model's name in evaluation results.
        batch_size: studies per forward pass (evaluation may pass larger batches; they are split).
        max_length: token limit of a generated report; None for the model's own.
    """

    def __init__(
        self,
        model: UAR,
        vocab: Vocabulary,
        *,
        device: str | torch.device,
        preprocess: Preprocess | None = None,
        beam_size: int = 3,
        name: str = "UAR",
        batch_size: int = 16,
        max_length: int | None = None,
    ) -> None:
        if model.config.use_lsu and model.tokenizer is None:
            raise RRGError("this UAR model has no dVAE tokenizer attached: it cannot read images")
        super().__init__(
            model, vocab, model.config.vocab_size, device=device,
            preprocess=preprocess or default_preprocess(model.config, _channels(model)),
            beam_size=beam_size, name=name, batch_size=batch_size, max_length=max_length,
        )  # fmt: skip

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, device: str | torch.device, *, beam_size: int = 3
    ) -> UARGenerator:
        """The model, vocabulary and preprocessing of a ``uar`` checkpoint."""
        model, checkpoint = load_uar(checkpoint, device)
        if checkpoint.vocab is None:
            raise CheckpointError(f"{checkpoint.folder}: a UAR checkpoint needs its vocab.json")
        preprocess = read_uar_preprocess(checkpoint, model.config)
        try:
            return cls(
                model, checkpoint.vocab, device=device, preprocess=preprocess, beam_size=beam_size,
                name=model_name(model.config),
            )  # fmt: skip
        except RRGError as error:
            raise CheckpointError(f"{checkpoint.folder}: {error}") from None

    # -- the ReportGenerator protocol ------------------------------------------------------------

    def draft_batch(self, stacks: Sequence[Tensor]) -> BatchDrafts:
        """Beam-search reports (:meth:`write`) and CRA global image features of one batch."""
        visual = self.visual_input(stacks)
        return BatchDrafts(self.write(visual).tokens, self.model.image_global(visual))

    def write(self, visual: Tensor, attention_layer: int | None = None) -> UARGeneration:
        """The drafts of a batch of visual input: beam search at the generator's beam size or, where
        the checkpoint asks for it (``consistent_beams``), the best-scoring of that many beams among
        those that agree most with the labels the decoder was given (:meth:`agreeing_beam`)."""
        config = self.model.config
        options = {"max_length": self.max_length, "attention_layer": attention_layer}
        if config.consistent_beams and config.reads_labels:
            beams = max(self.beam_size, config.consistent_beams)
            return self.model.generate(visual, beam_size=beams, choose=self.agreeing_beam, **options)
        return self.model.generate(visual, beam_size=self.beam_size, **options)

    def agreeing_beam(self, labels: Tensor | None, beams: list[list[int]]) -> int:
        """The first of ``beams`` (best first) whose text, read by the project's labeler, disagrees
        on the fewest findings with ``labels`` (14,); the best beam without labels."""
        if labels is None:
            return 0
        given = labels.tolist()
        readings = [label_report(self.vocab.decode(ids)).labels for ids in beams]
        counts = [len(report_disagreements(reading, given)) for reading in readings]
        return counts.index(min(counts))

    def sample_batch(
        self, stacks: Sequence[Tensor], samples: int, temperature: float, generator: torch.Generator
    ) -> list[list[list[int]]]:
        """Reports sampled at ``temperature`` (the alternatives of :meth:`alternatives`); under the
        label context each study's draws are written for labels drawn once from the findings head's
        uncertainty, so a finding it is unsure of is present in some alternatives only."""
        model, config = self.model, self.model.config
        encoding = model.encode(self.visual_input(stacks))
        states = model.sampled_states(encoding, generator) if config.reads_labels else None
        limit = config.max_length if self.max_length is None else min(self.max_length, config.max_length)
        return sample_sequences(
            model.decoder.beam_step_fn(), batch_size=encoding.memory.shape[0], bos_id=config.bos_id,
            eos_id=config.eos_id, pad_id=config.pad_id, samples=samples, temperature=temperature,
            max_length=limit, device=encoding.memory.device, generator=generator,
            init_state=model.init_cache(encoding, states),
        )  # fmt: skip

    def image_embedding_batch(self, stacks: Sequence[Tensor]) -> Tensor:
        """(n, d) CRA global image features of one batch (not normalised; no report is written)."""
        return self.model.image_global(self.visual_input(stacks))

    @torch.no_grad()
    def embed_reports(self, texts: Sequence[str]) -> Tensor:
        """(N, d) CRA global report features of cleaned report texts, on the CPU (not normalised)."""
        self.eval_mode()
        texts = list(texts)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            ids = self.encode_reports(texts[start : start + self.batch_size])
            parts.append(self.model.report_global(ids).float().cpu())
        if not parts:
            return torch.empty(0, self.model.config.d_model)
        return torch.cat(parts)

    # -- for the app -----------------------------------------------------------------------------

    @torch.no_grad()
    def explain(
        self, images: list[Tensor], attention_layer: int | None = None, *, with_embeddings: bool = False
    ) -> list[UARExplanation]:
        """Per study: the generated report, its words and each word's heatmap over each view's grid.

        ``attention_layer`` None averages the decoder layers, an int picks one layer.
        ``with_embeddings`` also returns each study's CRA global image feature (for retrieval), from
        the same visual tokens.
        """
        self.eval_mode()
        explanations: list[UARExplanation] = []
        for start in range(0, len(images), self.batch_size):
            visual = self.visual_input(images[start : start + self.batch_size])
            out = self.write(visual, attention_layer)
            embeddings = self.model.image_global(visual).float().cpu() if with_embeddings else None
            evidence = self.evidence(visual)
            for k, (tokens, attention) in enumerate(zip(out.tokens, out.attention, strict=True)):
                words = self.vocab.decode_tokens(tokens)
                maps = attention[: len(words)].float().cpu()
                embedding = None if embeddings is None else embeddings[k]
                study_evidence = None if evidence is None else evidence[k]
                explanations.append(UARExplanation(" ".join(words), words, maps, embedding, study_evidence))
        return explanations

    def evidence(self, visual: Tensor) -> Tensor | None:
        """(B, 14, V, h, w) on the CPU: the findings head's evidence maps of the studies of ``visual``
        (:meth:`visual_input`), or None for a model without the head."""
        if self.model.findings_head is None:
            return None
        return findings_evidence(self.model, visual).cpu()

    @torch.no_grad()
    def attention_for_report(self, images: list[Tensor], report: str) -> UARExplanation:
        """Teacher-forced heatmaps of a given report (e.g. the radiologist's edit) on one study."""
        self.eval_mode()
        ids = self.encode_reports([report])
        visual = self.visual_input(images)
        maps = self.model.attention_maps(visual, ids)[0]  # (T - 1, V, h, w)
        words = self.vocab.decode_tokens(ids[0].tolist())
        evidence = self.evidence(visual)
        return UARExplanation(
            " ".join(words),
            words,
            maps[: len(words)].float().cpu(),
            evidence=None if evidence is None else evidence[0],
        )

    # -- inputs ----------------------------------------------------------------------------------

    def encode_reports(self, texts: Sequence[str]) -> Tensor:
        """Reports as right-padded ids (B, T) on the device, cut to the model's length limit."""
        limit = self.model.config.max_length + 1  # BOS + max_length targets
        rows = [self.vocab.encode(text, limit) for text in texts]
        ids = torch.full((len(rows), max(map(len, rows))), self.vocab.pad_id, dtype=torch.long)
        for row, sequence in enumerate(rows):
            ids[row, : len(sequence)] = torch.tensor(sequence)
        return ids.to(self.device)

    def prepare(self, stacks: Sequence[Tensor]) -> Tensor:
        """Loaded views ((V, 1, H, W) per study, [0, 1]) -> (N, V_model, C, S, S) on the device."""
        return self.stack_views(stacks, self.model.config.views)

    def visual_input(self, stacks: Sequence[Tensor]) -> Tensor:
        """What the model reads: dVAE code ids (N, V, h, w) computed once, or images for the base row."""
        images = self.prepare(stacks)
        return self.model.tokenizer.tokens(images) if self.model.tokenizer is not None else images


def _channels(model: UAR) -> int:
    """The input channels the model reads: its dVAE's, or 3 for the "base" row's ImageNet CNN."""
    return model.tokenizer.config.in_channels if model.tokenizer is not None else 3


def model_name(config: UARConfig) -> str:
    """ "UAR" for the full model, "UAR[row]" for another row of Table 2 (so ablations can share a table)."""
    switches = {name: getattr(config, name) for name in ABLATIONS["uar"]}
    row = next((name for name, values in ABLATIONS.items() if values == switches), "custom")
    return "UAR" if row == "uar" else f"UAR[{row}]"
