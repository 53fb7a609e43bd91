"""UAR: Unify, Align and then Refine (paper sec. 3, eqs 1-13), with Table 2's ablation rows.

Data flow (eqs 1-4), for a study of ``views`` radiographs (IU X-ray: frontal + lateral):

1. **LSU** (eq 1): each view is a grid of h x w code ids of a frozen tokenizer (the paper's kind, a
   dVAE, :mod:`rrg_core.models.uar.dvae`, or frozen ImageNet features and a k-means codebook,
   :mod:`rrg_core.models.uar.feature_tokenizer`; 112 px and M = 8 give 14 x 14). The views' grids
   are concatenated along the sequence, L = V * h * w tokens, and embedded by the trainable look-up
   W_I (``visual_embedding``). The report is embedded by W_R, the decoder's token embedding.
2. **CRA** (eq 2, :mod:`rrg_core.models.uar.cra`): one aligner for both modalities turns E^(I), E^(R)
   into F^(I), F^(R). The report side runs inside the decoder (``decoder.token_transform``), token
   by token, so generation sees exactly what training saw.
3. **Transformer** (eqs 3-4): one network for every view and every configuration: a Transformer
   encoder (``n_encoder_layers``, torch's layers) over F^(I) plus learned view and grid-position
   embeddings, and the shared :class:`~rrg_core.models.decoder.TransformerDecoder` (3 layers,
   d 512, 8 heads by default) over F^(R) plus positions. Positions are added *after* CRA, so CRA
   sees the modality's tokens alone, as eq 2 has it.
4. **TIR** (eqs 11-12): every decoder layer's text-to-image attention gets ``k * sigmoid(M)`` added
   inside the 1/sqrt(d) scaling (:func:`~rrg_core.models.decoder.eq11_bias`), M a learnable
   (max_length x L) matrix shared by layers and heads, row t for the token at position t.

Loss (eq 13): ``lambda_1 CE + lambda_2 L_Global + lambda_3 L_Mask``, plus ours when
``lambda_findings`` > 0: a findings head over the encoder memory (mean- and max-pooled over all
visual tokens) scored with binary cross-entropy against the study's 14 observations. With
``label_context`` or ``label_rows`` (ours) the decoder is also given the study's 14 labels (an
input offset, memory rows): the report's own in training, the findings head's cut at the model's
thresholds at inference (:meth:`UAR.decoder_inputs`).
Two-stage training (sec. 3.5) is the ``stage`` switch (:meth:`UAR.set_stage`): stage 1 uses lambdas
{1, 1, 0} and no mask in the attention, stage 2 {1, 1, 1} with the mask. CE (eq 5) is averaged over
non-pad target tokens. The triplet loss (eq 10) compares the masked means of F^(I) (all L visual
tokens) and F^(R) (non-pad report tokens), with identical reports in a batch never used as each
other's negatives.

Table 2's rows are config switches (:data:`ABLATIONS`, :func:`ablation_config`): "base" (CNN grid
features from :func:`~rrg_core.models.image_encoders.build_image_encoder` + the same Transformer; no
LSU, CRA, triplet loss or TIR), "lsu" (+LSU), "lsu_cra" (+LSU+CRA with its triplet loss),
"lsu_cra_tir" (+TIR, trained in one stage: stage 2 from the start) and "uar" (two stages).
``two_stage`` is read by the trainer to choose the first stage (:meth:`UARConfig.first_stage`).

The model takes tensors only: LSU code ids (B, V, h, w), or images (B, V, C, H, W) when a tokenizer
is attached (:meth:`UAR.attach_tokenizer`) or for the "base" row; it knows nothing of files.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rrg_core.errors import RRGError
from rrg_core.models.beam_search import beam_search
from rrg_core.models.decoder import DecoderCache, TransformerDecoder, eq11_bias
from rrg_core.models.thresholds import cut, draw, store_thresholds
from rrg_core.models.uar.config import UARConfig, check_tokenizer
from rrg_core.models.uar.cra import CRA, masked_mean
from rrg_core.models.uar.decoding import Chooser, DecoderInputs, UARGeneration, chosen_beams, visual_maps
from rrg_core.models.uar.dvae import DVAE, DVAEEncoder
from rrg_core.models.uar.feature_tokenizer import FeatureTokenizer
from rrg_core.models.uar.losses import UAROutput, stage_loss
from rrg_core.observations import NUM_OBSERVATIONS


@dataclass
class VisualEncoding:
    """``features`` F^(I) (B, L, d) after CRA (before positions), ``memory`` (B, L, d) after the
    Transformer encoder, and the token grid (views, h, w)."""

    features: Tensor
    memory: Tensor
    grid: tuple[int, int, int]


class UAR(nn.Module):
    """The UAR model and its ablations (module docstring); inputs are tensors."""

    def __init__(
        self, config: UARConfig, tokenizer: DVAE | DVAEEncoder | FeatureTokenizer | None = None
    ) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.visual_embedding: nn.Embedding | None = None  # W_I
        self.image_encoder: nn.Module | None = None
        self.visual_projection: nn.Module | None = None
        if config.use_lsu:
            self.visual_embedding = nn.Embedding(config.codebook_size, d)
        else:
            from rrg_core.models.image_encoders import build_image_encoder  # timm only where needed

            self.image_encoder = build_image_encoder(config.base_encoder, config.base_pretrained)
            self.visual_projection = nn.Linear(self.image_encoder.out_channels, d)
        self.view_embedding = nn.Embedding(config.views, d)
        self.grid_position = nn.Embedding(config.tokens_per_view, d)
        self.cra = CRA(config.cra_config()) if config.use_cra else None
        self.encoder = _transformer_encoder(config)
        self.decoder = TransformerDecoder(config.decoder_config())
        if self.cra is not None:
            # A bound method, not a module: CRA stays registered once, under ``cra``.
            self.decoder.token_transform = self.cra.forward
        self.tir_mask = (
            nn.Parameter(torch.zeros(config.max_length, config.memory_length)) if config.use_tir else None
        )
        self.findings_head = nn.Linear(2 * d, NUM_OBSERVATIONS) if config.lambda_findings > 0 else None
        self.context_projection = nn.Linear(2 * d, d) if config.image_context else None
        self.label_projection = nn.Linear(NUM_OBSERVATIONS, d) if config.label_context else None
        # label_rows: one memory row per observation, its identity plus the state of its label
        self.observation_rows = nn.Embedding(NUM_OBSERVATIONS, d) if config.label_rows else None
        self.label_states = nn.Embedding(2, d) if config.label_rows else None
        if config.reads_labels:  # the cut-offs of the head's labels that the decoder is given
            self.register_buffer("thresholds", torch.full((NUM_OBSERVATIONS,), 0.5))
        # The stage is a buffer so that a checkpoint records which stage it was saved in.
        self.register_buffer("stage", torch.tensor(config.first_stage()))
        self.set_stage(config.first_stage())
        # A loaded state brings its stage; the mask's requires_grad must follow it.
        self.register_load_state_dict_post_hook(_follow_loaded_stage)
        self.tokenizer: DVAEEncoder | FeatureTokenizer | None = None
        if tokenizer is not None:
            self.attach_tokenizer(tokenizer)

    # -- configuration switches -------------------------------------------------------------------

    def attach_tokenizer(self, tokenizer: DVAE | DVAEEncoder | FeatureTokenizer) -> None:
        """Use a frozen LSU tokenizer (a dVAE's encoder or a :class:`FeatureTokenizer`) so the model
        also takes images; a mismatched codebook or grid is refused."""
        encoder = tokenizer.encoder if isinstance(tokenizer, DVAE) else tokenizer
        check_tokenizer(encoder.config, self.config)
        self.tokenizer = encoder.requires_grad_(False)

    @torch.no_grad()
    def init_visual_embedding(self, code_vectors: Tensor, seed: int = 0) -> None:
        """Start W_I from the tokenizer's code vectors (K, D) (ours; ``visual_init: codebook``).

        Each dimension is standardised over the codes and sent through a fixed random projection to
        d, scaled to nn.Embedding's unit variance: codes that look alike start alike, so what the
        model learns of one code carries to its neighbours instead of each of K codes being learnt
        from its own occurrences alone. Training goes on from there."""
        if self.visual_embedding is None:
            raise RRGError("the 'base' row has no W_I to initialise (it reads CNN features)")
        if code_vectors.dim() != 2 or code_vectors.shape[0] != self.config.codebook_size:
            raise RRGError(
                f"need ({self.config.codebook_size}, D) code vectors, got {tuple(code_vectors.shape)}"
            )
        codes = code_vectors.float().cpu()
        codes = (codes - codes.mean(dim=0)) / codes.std(dim=0).clamp(min=1e-6)
        generator = torch.Generator().manual_seed(seed)
        projection = (
            torch.randn(codes.shape[1], self.config.d_model, generator=generator) / codes.shape[1] ** 0.5
        )
        weight = self.visual_embedding.weight
        weight.copy_((codes @ projection).to(weight.device, weight.dtype))

    def set_thresholds(self, values: Tensor | list[float] | float) -> None:
        """Per-observation cut-offs of the findings head's probabilities (14 values or one for all)
        that make the labels the decoder is given; calibration sets them after training."""
        if not self.config.reads_labels:
            raise RRGError(
                "this UAR model is given no labels (its config has label_context and label_rows off)"
            )
        store_thresholds(self.thresholds, values)

    def set_stage(self, stage: int) -> None:
        """Sec. 3.5: stage 1 trains without the TIR mask (lambda_3 = 0), stage 2 with it. The mask's
        ``requires_grad`` follows the stage, so DDP does not wait for a gradient that stage 1 never
        produces; build a stage's optimizer (and DDP wrapper) after calling this."""
        if stage not in (1, 2):
            raise ValueError(f"UAR training stage must be 1 or 2, got {stage}")
        self.stage.fill_(stage)
        if self.tir_mask is not None:
            self.tir_mask.requires_grad_(stage == 2)

    @property
    def mask_active(self) -> bool:
        """Whether TIR's mask is in the attention (and its loss counts): TIR on and stage 2."""
        return self.tir_mask is not None and int(self.stage) == 2

    def loss_weights(self) -> tuple[float, float, float]:
        """Eq 13's (lambda_1, lambda_2, lambda_3) for the current stage and switches."""
        c = self.config
        return (
            c.lambda_ce,
            c.lambda_global if c.use_global_loss else 0.0,
            c.lambda_mask if self.mask_active else 0.0,
        )

    # -- encoding ---------------------------------------------------------------------------------

    def embed_visual(self, visual: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """E^(I) (B, L, d) and the grid (V, h, w): W_I of LSU code ids, or projected CNN features."""
        if self.config.use_lsu:
            ids = self._visual_ids(visual)
            return self.visual_embedding(ids).flatten(1, 3), tuple(ids.shape[1:])
        images = self._check_images(visual)
        fmap = self.image_encoder(images.flatten(0, 1)).feature_map  # (B * V, C, h, w)
        grid = (images.shape[1], *fmap.shape[-2:])
        if grid[1] * grid[2] != self.config.tokens_per_view:
            raise RRGError(
                f"the image encoder gave a {grid[1]}x{grid[2]} grid, expected {self.config.grid_size}^2; "
                f"images must be {self.config.image_size} px"
            )
        features = fmap.flatten(2).transpose(1, 2).unflatten(0, images.shape[:2]).flatten(1, 2)
        return self.visual_projection(features), grid

    def visual_features(self, visual: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """F^(I) (B, L, d) (eq 2: CRA of E^(I), or E^(I) itself without CRA) and the grid (V, h, w)."""
        embeddings, grid = self.embed_visual(visual)
        return (self.cra(embeddings) if self.cra is not None else embeddings), grid

    def encode(self, visual: Tensor) -> VisualEncoding:
        """F^(I) (eq 2) and the Transformer encoder's memory over it (eq 3)."""
        return self.encode_features(*self.visual_features(visual))

    def encode_features(self, features: Tensor, grid: tuple[int, int, int]) -> VisualEncoding:
        """The encoder's memory over given F^(I) (B, L, d) on ``grid`` (what evidence maps differentiate)."""
        views = torch.arange(grid[0], device=features.device).repeat_interleave(grid[1] * grid[2])
        cells = torch.arange(grid[1] * grid[2], device=features.device).repeat(grid[0])
        memory = self.encoder(features + self.view_embedding(views) + self.grid_position(cells))
        return VisualEncoding(features, memory, grid)

    def findings_logits(self, encoding: VisualEncoding) -> Tensor:
        """Logits (B, 14) of the study's observations from the encoder memory (the findings head)."""
        if self.findings_head is None:
            raise RRGError("this UAR model has no findings head (its config has lambda_findings = 0)")
        return self.findings_head(pooled_memory(encoding))

    def reader_states(self, encoding: VisualEncoding) -> Tensor:
        """(B, 14) 0/1 labels the findings head reads from ``encoding``, cut at the thresholds."""
        return cut(torch.sigmoid(self.findings_logits(encoding).float()), self.thresholds)

    def sampled_states(self, encoding: VisualEncoding, generator: torch.Generator | None = None) -> Tensor:
        """(B, 14) labels drawn from the findings head's uncertainty around the thresholds
        (:func:`~rrg_core.models.thresholds.draw`): what sampled alternatives are written for."""
        return draw(torch.sigmoid(self.findings_logits(encoding).float()), self.thresholds, generator)

    def decoder_inputs(self, encoding: VisualEncoding, states: Tensor | None = None) -> DecoderInputs:
        """What the decoder reads besides the words: the memory (the encoder's, plus the label rows
        under ``label_rows``), TIR's mask when active (over the label rows, each position's mean of
        it, so the mask moves attention among the cells without shutting the rows out), and the offset added
        to every input embedding (the image and label contexts, each when on). ``states`` (B, 14):
        the labels to write for (training gives the report's own); None takes the findings head's
        (:meth:`reader_states`)."""
        if self.config.reads_labels and states is None:
            states = self.reader_states(encoding)
        memory, bias, offset = encoding.memory, self.cross_bias(), None
        if self.observation_rows is not None:
            rows = self.observation_rows.weight + self.label_states(states.long().to(memory.device))
            memory = torch.cat([memory, rows.to(memory.dtype)], dim=1)
            if bias is not None:  # eq 11 only adds to cells; the rows get each position's mean of it
                bias = torch.cat([bias, bias.mean(dim=-1, keepdim=True).expand(-1, NUM_OBSERVATIONS)], dim=-1)
        if self.context_projection is not None:
            offset = self.context_projection(pooled_memory(encoding))
        if self.label_projection is not None:
            labels = self.label_projection(states.to(memory.device, memory.dtype))
            offset = labels if offset is None else offset + labels
        return DecoderInputs(memory, bias, offset)

    def init_cache(self, encoding: VisualEncoding, states: Tensor | None = None) -> DecoderCache:
        """The decoder's cache for generating from ``encoding`` (:meth:`decoder_inputs`)."""
        inputs = self.decoder_inputs(encoding, states)
        return self.decoder.init_cache(
            inputs.memory, cross_bias=inputs.cross_bias, input_offset=inputs.offset
        )

    def report_features(self, report_ids: Tensor) -> Tensor:
        """F^(R) (B, T, d): W_R, then CRA when it is on (what the decoder sees, before positions)."""
        embedded = self.decoder.token_embedding(report_ids)
        return self.cra(embedded) if self.cra is not None else embedded

    def image_global(self, visual: Tensor) -> Tensor:
        """Global image feature (B, d): mean of F^(I) over all visual tokens (retrieval, alignment)."""
        return masked_mean(self.visual_features(visual)[0])

    def report_global(self, report_ids: Tensor) -> Tensor:
        """Global report feature (B, d): mean of F^(R) over non-pad tokens."""
        return masked_mean(self.report_features(report_ids), report_ids != self.config.pad_id)

    def cross_bias(self) -> Tensor | None:
        """Eq 11's additive term (max_length, L) in the decoder's convention, in float32, or None
        without the mask."""
        if not self.mask_active:
            return None
        d_head = self.config.d_model // self.config.n_heads
        # float32 even under autocast or .half(): k sigmoid(M) / sqrt(d) reaches ~125 with k = 1000,
        # where float16 steps are 0.06 and would hide the small differences of M that matter.
        with torch.autocast(self.tir_mask.device.type, enabled=False):
            return eq11_bias(self.tir_mask.float(), self.config.mask_scale, d_head)

    def mask_loss(self) -> Tensor:
        """Eq 12: sum (or mean) over the mask of 1 - sigmoid(M)."""
        if self.tir_mask is None:
            return self.stage.new_zeros((), dtype=torch.float32)
        with torch.autocast(self.tir_mask.device.type, enabled=False):  # a sum of ~40k terms
            terms = 1 - torch.sigmoid(self.tir_mask.float())
            return terms.sum() if self.config.mask_loss_reduction == "sum" else terms.mean()

    # -- training ---------------------------------------------------------------------------------

    def forward(self, visual: Tensor, report_ids: Tensor, **options: object) -> UAROutput:
        """Eq 13 on a batch (:func:`~rrg_core.models.uar.losses.stage_loss`, which says what each
        argument means); a forward so that DDP synchronises what it trains."""
        return stage_loss(self, visual, report_ids, **options)

    def teacher_forced(
        self, visual: Tensor, report_ids: Tensor, states: Tensor | None = None
    ) -> tuple[VisualEncoding, Tensor]:
        """The visual encoding and next-token logits (B, T - 1, vocab) of ``report_ids`` (B, T) =
        BOS words EOS PAD..., with TIR's mask in the attention when it is active; ``states`` as
        :meth:`decoder_inputs` takes them."""
        report_ids = self._check_report(report_ids)
        encoding = self.encode(visual)
        ids = report_ids.to(encoding.memory.device)
        inputs = self.decoder_inputs(encoding, states)
        decoded = self.decoder(
            ids[:, :-1], inputs.memory, cross_bias=inputs.cross_bias, input_offset=inputs.offset
        )
        return encoding, decoded.logits

    # -- inference --------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        visual: Tensor,
        *,
        beam_size: int = 3,
        max_length: int | None = None,
        length_penalty: float = 0.0,
        no_repeat_ngram_size: int = 0,
        attention_layer: int | None = None,
        states: Tensor | None = None,
        choose: Chooser | None = None,
    ) -> UARGeneration:
        """Beam search (size 3 by default) over all views at once; see :class:`UARGeneration`.

        ``attention_layer`` None averages the decoder layers' attention, an int picks one layer.
        ``states`` (B, 14): the labels to write for, when the decoder is given labels (None: the
        head's). ``choose`` picks each study's draft among all its final beams (best first) instead
        of taking the best: it is given the study's labels (None without) and the beams' token ids,
        and returns an index.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        encoding = self.encode(visual)
        limit = self.config.max_length if max_length is None else min(max_length, self.config.max_length)
        if limit < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        batch = encoding.memory.shape[0]
        if self.config.reads_labels and states is None:
            states = self.reader_states(encoding)
        result = beam_search(
            self.decoder.beam_step_fn(return_attention=True, average_heads=True),
            batch_size=batch, bos_id=self.config.bos_id, eos_id=self.config.eos_id, pad_id=self.config.pad_id,
            beam_size=beam_size, max_length=limit, length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size, device=encoding.memory.device,
            init_state=self.init_cache(encoding, states), all_beams=choose is not None,
        )  # fmt: skip
        if choose is not None:
            result = chosen_beams(result, states, choose)
        maps = visual_maps(result.attention, attention_layer, encoding.grid)
        lengths = result.lengths.tolist()
        tokens = [row[:n] for row, n in zip(result.tokens.tolist(), lengths, strict=True)]
        return UARGeneration(tokens, [maps[b, :n] for b, n in enumerate(lengths)], result.scores)

    @torch.no_grad()
    def attention_maps(
        self,
        visual: Tensor,
        report_ids: Tensor,
        attention_layer: int | None = None,
        states: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced heatmaps for given reports (e.g. a radiologist's edit): (B, T - 1, V, h, w),
        row t the attention that predicts token t + 1 of ``report_ids``."""
        report_ids = self._check_report(report_ids)
        encoding = self.encode(visual)
        ids = report_ids[:, :-1].to(encoding.memory.device)
        inputs = self.decoder_inputs(encoding, states)
        out = self.decoder(
            ids, inputs.memory, cross_bias=inputs.cross_bias, return_attention=True, average_heads=True,
            input_offset=inputs.offset,
        )  # fmt: skip
        attention = out.cross_attention.movedim(0, 2)  # (B, T, n_layers, memory)
        return visual_maps(attention, attention_layer, encoding.grid)

    # -- input checks -----------------------------------------------------------------------------

    def _visual_ids(self, visual: Tensor) -> Tensor:
        """LSU code ids (B, V, h, w) from ids or, with a tokenizer attached, images (B, V, C, H, W)."""
        c = self.config
        if visual.is_floating_point():
            if self.tokenizer is None:
                raise RRGError(
                    "this UAR model takes LSU token ids (batch, views, h, w); attach its tokenizer "
                    "(attach_tokenizer) to pass images"
                )
            visual = self.tokenizer.tokens(self._check_images(visual, self.tokenizer.config.in_channels))
        expected = (c.views, c.grid_size, c.grid_size)
        if visual.dim() != 4 or tuple(visual.shape[1:]) != expected:
            raise RRGError(
                f"LSU token ids must be shaped (batch, {', '.join(map(str, expected))}), "
                f"got {tuple(visual.shape)}"
            )
        if int(visual.min()) < 0 or int(visual.max()) >= c.codebook_size:
            raise RRGError(
                f"LSU token ids must lie in [0, {c.codebook_size}), got "
                f"{int(visual.min())}..{int(visual.max())}; was the tokenizer's codebook a different size?"
            )
        return visual.long().to(self.visual_embedding.weight.device)

    def _check_images(self, images: Tensor, channels: int = 3) -> Tensor:
        c = self.config
        if images.dim() != 5 or images.shape[1] != c.views or images.shape[2] != channels:
            raise RRGError(
                f"images must be shaped (batch, {c.views} views, {channels} channels, height, width), "
                f"got {tuple(images.shape)}"
            )
        return images

    def _check_report(self, report_ids: Tensor) -> Tensor:
        if report_ids.dim() != 2 or report_ids.shape[1] < 2 or report_ids.is_floating_point():
            raise RRGError(f"report ids must be integers (batch, length >= 2), got {tuple(report_ids.shape)}")
        if report_ids.shape[1] - 1 > self.config.max_length:
            raise RRGError(
                f"reports of {report_ids.shape[1]} ids exceed max_length {self.config.max_length} + 1; "
                "encode them with the model's max_length"
            )
        return report_ids.long()


def pooled_memory(encoding: VisualEncoding) -> Tensor:
    """(B, 2d): the memory's mean and max over all visual tokens. Max pooling finds a small finding
    anywhere in either view, mean pooling measures a large one."""
    memory = encoding.memory
    return torch.cat([memory.mean(dim=1), memory.amax(dim=1)], dim=-1)


def _follow_loaded_stage(module: UAR, _incompatible_keys: object) -> None:
    module.set_stage(int(module.stage))  # a module-level function, not a lambda: the model pickles


def _transformer_encoder(config: UARConfig) -> nn.Module:
    """The visual side of the shared Transformer; pre-LN (the default) needs a final LayerNorm."""
    if config.n_encoder_layers == 0:
        return nn.Identity()
    layer = nn.TransformerEncoderLayer(
        config.d_model, config.n_heads, config.d_ff, config.dropout, batch_first=True,
        norm_first=not config.post_norm,
    )  # fmt: skip
    norm = None if config.post_norm else nn.LayerNorm(config.d_model)
    return nn.TransformerEncoder(layer, config.n_encoder_layers, norm=norm, enable_nested_tensor=False)
