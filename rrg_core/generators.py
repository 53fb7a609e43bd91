"""Trained models as :class:`~rrg_core.evaluation.ReportGenerator`\\ s: DCRRG.

:class:`DCRRGGenerator` wraps a loaded :class:`~rrg_core.models.dcrrg.DCRRG` for evaluation (and,
through :meth:`DCRRGGenerator.describe`, for the serving pipeline): it takes the studies' views as
the data sets load them, applies the DCRRG evaluation transform itself and returns, per study, the
Step-4 report, the 14 Step-1 observation probabilities (for AUROC) and the DCCLIP global image
embedding (for image-to-report P@K, with :meth:`DCRRGGenerator.embed_reports` on the text side).

Views: each study's views are transformed one by one and stacked as (V, 3, H, W); a batch is
(N, V, 3, H, W) and the model fuses the views (mean of pooled features, feature maps side by side).
A study with fewer views than the batch's most repeats its views in turn to match (a single view is
repeated, as :mod:`rrg_core.models.dcclip` prescribes), so mixed batches need no second pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional

from rrg_core.checkpoints import Checkpoint, CheckpointError
from rrg_core.data.transforms import RadiographTransform, build_transform, dcrrg_transform_config
from rrg_core.data.vocab import Vocabulary
from rrg_core.generator_base import BatchDrafts, ImageReportGenerator
from rrg_core.models.dcrrg import DCRRG, EncoderFeatures, ObservationRow
from rrg_core.models.dcrrg_io import load_dcrrg

ImageSize = int | tuple[int, int] | list[int]


class DCRRGGenerator(ImageReportGenerator):
    """DCRRG behind the ReportGenerator protocol (module docstring); always in eval mode, no gradients.

    Args:
        model: a DCRRG (moved to ``device`` and put in eval mode here).
        vocab: the checkpoint's vocabulary; reports are ``vocab.decode(ids)``, the cleaned form.
        device: where the model runs; images are moved there before the transform, so resizing runs
            on the accelerator too.
        beam_size: beam width of the Step-4 report (and of :meth:`describe`'s descriptions).
        image_size: the model's input side (or (height, width)); None for the backbone's own
            (224 for both DCRRG backbones). Small presets train at other sizes and record it.
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
        beam_size: int = 3,
        image_size: ImageSize | None = None,
        name: str = "DCRRG",
        batch_size: int = 16,
        max_length: int | None = None,
    ) -> None:
        super().__init__(
            model, vocab, model.config.vocab_size, device=device,
            transform=dcrrg_eval_transform(model, image_size), beam_size=beam_size, name=name,
            batch_size=batch_size, max_length=max_length,
        )  # fmt: skip

    # -- the ReportGenerator protocol ------------------------------------------------------------

    def draft_batch(self, stacks: Sequence[Tensor]) -> BatchDrafts:
        """Step-4 reports, Step-1 probabilities and DCCLIP global image embeddings of one batch."""
        return self._drafts(self._encode(stacks))

    @torch.no_grad()
    def review_batch(self, stacks: Sequence[Tensor]) -> tuple[BatchDrafts, list[list[ObservationRow]]]:
        """:meth:`draft_batch` and Table 7 (:meth:`describe`) of one batch from one encoder pass:
        what the serving pipeline shows for each study."""
        self.eval_mode()
        features = self._encode(stacks)
        rows = self.model.describe(features, beam_size=self.beam_size, max_length=self.max_length)
        return self._drafts(features), rows

    def _encode(self, stacks: Sequence[Tensor]) -> EncoderFeatures:
        # One encoder pass serves the Step-1 heads, the embedding and the decoder memory.
        uni, feature_map = self.model.clip.encode_image(self.prepare(stacks))
        return EncoderFeatures.of_images(feature_map, uni)

    def _drafts(self, features: EncoderFeatures) -> BatchDrafts:
        probabilities = self.model.clip.observation_logits(features.pooled, "image").softmax(dim=-1)[..., 1]
        embeddings = self.global_image_embedding(features.pooled)
        ids = self.model.generate(features, beam_size=self.beam_size, max_length=self.max_length)
        return BatchDrafts(ids, embeddings, probabilities)

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

    # -- for the serving pipeline ----------------------------------------------------------------

    @torch.no_grad()
    def describe(self, images: list[Tensor]) -> list[list[ObservationRow]]:
        """Table 7 per study (14 rows: probability, thresholded label, Step-3 description ids)."""
        if not images:
            return []
        self.eval_mode()
        rows: list[list[ObservationRow]] = []
        for start in range(0, len(images), self.batch_size):
            batch = self.prepare(images[start : start + self.batch_size])
            rows.extend(self.model.describe(batch, beam_size=self.beam_size, max_length=self.max_length))
        return rows

    # -- images ----------------------------------------------------------------------------------

    def prepare(self, stacks: Sequence[Tensor]) -> Tensor:
        """Loaded views ((V, 1, H, W) per study, [0, 1]) -> (N, V_max, 3, h, w) on the device."""
        return self.stack_views(stacks)


def dcrrg_eval_transform(model: DCRRG, image_size: ImageSize | None = None) -> RadiographTransform:
    """The DCRRG evaluation transform for ``model``: grey -> 3 channels, resize, the encoder's mean/std.

    The encoder's own ``mean``/``std`` win over the preset's: they are what its weights expect.
    """
    encoder = model.clip.image_encoder
    config = dcrrg_transform_config(encoder.name, train=False)
    size = encoder.input_size if image_size is None else image_size
    config = dataclasses.replace(config, resize=size, mean=encoder.mean, std=encoder.std)
    return build_transform(config, train=False)


def dcrrg_generator_from_checkpoint(
    checkpoint: Checkpoint, device: str | torch.device, *, beam_size: int = 3
) -> DCRRGGenerator:
    """The :data:`train.evaluate_cmd.GENERATORS` factory of kind ``dcrrg``.

    The input size is the one training recorded (small presets train below 224), else the backbone's:
    see :func:`checkpoint_image_size`.
    """
    model, checkpoint = load_dcrrg(checkpoint, device)
    if checkpoint.vocab is None:
        raise CheckpointError(f"{checkpoint.folder}: a DCRRG checkpoint needs its vocab.json")
    return DCRRGGenerator(
        model,
        checkpoint.vocab,
        device=device,
        beam_size=beam_size,
        image_size=checkpoint_image_size(checkpoint.config),
    )


def checkpoint_image_size(config: dict) -> ImageSize | None:
    """The input size a DCRRG checkpoint was trained at (its top-level ``image_size``), or None."""
    return config.get("image_size")
