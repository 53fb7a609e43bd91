"""UAR's configuration: sizes, switches, Table 2's ablation rows, and the dVAE fit check.

Kept apart from :mod:`rrg_core.models.uar.model` (the network), as a config file is apart from a model
file: checkpoints, presets and the trainer read and build configs without the network's code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rrg_core.errors import RRGError
from rrg_core.models.decoder import DecoderConfig
from rrg_core.models.preprocess import Preprocess
from rrg_core.models.uar.cra import CRAConfig
from rrg_core.models.uar.dvae import DVAEConfig
from rrg_core.models.uar.feature_tokenizer import FeatureTokenizerConfig

CNN_STRIDE = 32  # ResNet-50 and EfficientNet-Lite0 both downsample 32x, rounding up
MASK_REDUCTIONS: tuple[str, ...] = ("sum", "mean")
VISUAL_INITS: tuple[str, ...] = ("random", "codebook")


@dataclass
class UARConfig:
    """Hyper-parameters of :class:`UAR`; defaults are the paper's (d 512, 8 heads, 3 + 3 layers).

    ``mask_scale`` is eq 11's k (the paper suggests 1,000). ``mask_loss_reduction`` "sum" is eq 12 as
    written: its value grows with max_length * L (19,600 at the start for 100 x 392) and so does
    its gradient norm, which would dominate a global gradient-norm clip; "mean" divides by T * L.
    ``codebook_size``, ``downsample`` and ``image_size`` must match the dVAE that made the tokens.
    ``lambda_findings`` (ours, not in the paper; 0 turns it off) weighs an auxiliary loss: a linear
    head over the encoder memory predicts the study's 14 observations (:class:`UAR`'s
    ``findings_head``), so that the visual side learns what the findings look like from the first
    step instead of only through the report CE. ``visual_init`` (ours) "codebook" starts W_I from the
    tokenizer's code vectors (:meth:`UAR.init_visual_embedding`) rather than at random.
    ``word_dropout`` (ours) replaces that share of the decoder's teacher-forced input words with
    ``unk_id`` while training, so that the next word must come more from the image than from the
    words before it. ``image_context`` (ours) adds a projection of the pooled memory (the vector the
    findings head reads) to every decoder input embedding, as DCRRG's observation prompt is added:
    the decoder then sees the whole image at every step from the start, where cross-attention alone
    first has to find the few cells a finding covers among all L. ``label_context`` (ours, after
    PromptMRG's diagnostic prompts; needs the findings head) adds a projection of the study's 14
    labels to every decoder input embedding: in training the report's own labels, at inference the
    findings head's, cut at the model's per-observation thresholds (:meth:`UAR.set_thresholds`). The
    decoder then learns to write what the labels say, and the draft follows what the head reads.
    ``label_rows`` (ours, as DCRRG's) gives the same labels as 14 rows appended to the decoder's
    memory, each its observation's vector plus its label's state vector, so that cross-attention can
    look a finding's label up when it writes about it; heatmaps stay over the visual cells.
    ``consistent_beams`` (ours; 0 off) is a decoding rule the checkpoint carries for its generator:
    with labels given, search this many beams and draft the best-scoring one among those whose
    reading by the project's labeler disagrees least with the labels the decoder was given.
    """

    vocab_size: int
    d_model: int = 512
    n_heads: int = 8
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    d_ff: int = 2048
    dropout: float = 0.1
    max_length: int = 100
    post_norm: bool = False
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    views: int = 2
    image_size: int = 112
    # LSU (off: the "base" row's CNN features)
    use_lsu: bool = True
    codebook_size: int = 512
    downsample: int = 8
    base_encoder: str = "efficientnet_lite0"
    base_pretrained: str | None = "imagenet"
    # CRA: feature integration (basis + dual gate) and the triplet loss
    use_cra: bool = True
    n_basis: int = 2048
    basis: str = "orthogonal"
    fusion: str = "dual_gate"
    basis_seed: int = 0
    use_global_loss: bool = True
    margin: float = 0.2
    # TIR and two-stage training
    use_tir: bool = True
    mask_scale: float = 1000.0
    mask_loss_reduction: str = "sum"
    two_stage: bool = True
    lambda_ce: float = 1.0
    lambda_global: float = 1.0
    lambda_mask: float = 1.0
    lambda_findings: float = 0.0
    visual_init: str = "random"
    word_dropout: float = 0.0
    image_context: bool = False
    label_context: bool = False
    label_rows: bool = False
    consistent_beams: int = 0
    unk_id: int = 3

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise RRGError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.views < 1 or self.max_length < 2 or self.vocab_size < 4:
            raise RRGError(
                f"need views >= 1, max_length >= 2 and vocab_size >= 4; got views={self.views}, "
                f"max_length={self.max_length}, vocab_size={self.vocab_size}"
            )
        if self.use_lsu and self.image_size % self.downsample:
            raise RRGError(f"image_size {self.image_size} is not divisible by downsample {self.downsample}")
        if self.mask_loss_reduction not in MASK_REDUCTIONS:
            raise RRGError(
                f"mask_loss_reduction must be one of {MASK_REDUCTIONS}, got {self.mask_loss_reduction!r}"
            )
        if self.lambda_findings < 0:
            raise RRGError(f"lambda_findings must be >= 0 (0: no findings head), got {self.lambda_findings}")
        if self.reads_labels and self.lambda_findings <= 0:
            raise RRGError(
                "label_context and label_rows read the findings head's labels: they need lambda_findings > 0"
            )
        if self.consistent_beams < 0 or (self.consistent_beams and not self.reads_labels):
            raise RRGError(
                f"consistent_beams must be >= 0 and needs labels given to the decoder (label_context or "
                f"label_rows), got {self.consistent_beams}"
            )
        if self.visual_init not in VISUAL_INITS:
            raise RRGError(f"visual_init must be one of {VISUAL_INITS}, got {self.visual_init!r}")
        if not 0 <= self.word_dropout < 1:
            raise RRGError(f"word_dropout must be in [0, 1), got {self.word_dropout}")
        if self.margin < 0 or self.mask_scale < 0:
            raise RRGError(f"margin and mask_scale must be >= 0, got {self.margin} and {self.mask_scale}")

    @property
    def reads_labels(self) -> bool:
        """Whether the decoder is given the study's labels (``label_context`` or ``label_rows``)."""
        return self.label_context or self.label_rows

    @property
    def grid_size(self) -> int:
        """Side of each view's token grid: H / M with LSU, ceil(H / 32) for the CNN."""
        return self.image_size // self.downsample if self.use_lsu else math.ceil(self.image_size / CNN_STRIDE)

    @property
    def tokens_per_view(self) -> int:
        return self.grid_size**2

    @property
    def memory_length(self) -> int:
        """L: visual tokens of all views together (392 for two 14 x 14 grids)."""
        return self.views * self.tokens_per_view

    def first_stage(self) -> int:
        """The stage training starts in: 1 for two-stage training with TIR, else 2 (one stage)."""
        return 1 if self.two_stage and self.use_tir else 2

    def decoder_config(self) -> DecoderConfig:
        """The shared decoder with UAR's sizes."""
        return DecoderConfig(
            vocab_size=self.vocab_size, d_model=self.d_model, n_heads=self.n_heads,
            n_layers=self.n_decoder_layers, d_ff=self.d_ff, dropout=self.dropout,
            max_length=self.max_length, post_norm=self.post_norm, pad_id=self.pad_id,
        )  # fmt: skip

    def cra_config(self) -> CRAConfig:
        return CRAConfig(
            d_model=self.d_model, n_heads=self.n_heads, n_basis=self.n_basis, dropout=self.dropout,
            basis=self.basis, fusion=self.fusion, seed=self.basis_seed,
        )  # fmt: skip


#: Table 2's rows as config switches (apply with :func:`ablation_config`).
ABLATIONS: dict[str, dict[str, bool]] = {
    "base": dict(use_lsu=False, use_cra=False, use_global_loss=False, use_tir=False, two_stage=False),
    "lsu": dict(use_lsu=True, use_cra=False, use_global_loss=False, use_tir=False, two_stage=False),
    "lsu_cra": dict(use_lsu=True, use_cra=True, use_global_loss=True, use_tir=False, two_stage=False),
    "lsu_cra_tir": dict(use_lsu=True, use_cra=True, use_global_loss=True, use_tir=True, two_stage=False),
    "uar": dict(use_lsu=True, use_cra=True, use_global_loss=True, use_tir=True, two_stage=True),
}


def ablation_config(row: str, vocab_size: int, **overrides: object) -> UARConfig:
    """The config of one of Table 2's rows (:data:`ABLATIONS`), other fields from ``overrides``."""
    if row not in ABLATIONS:
        raise RRGError(f"unknown UAR ablation row {row!r}; expected one of: {', '.join(ABLATIONS)}")
    return UARConfig(vocab_size=vocab_size, **{**overrides, **ABLATIONS[row]})


#: LSU's tokenizers: "dvae" (the paper's kind, trained here) or "features" (frozen ImageNet CNN
#: features and a k-means codebook, :mod:`rrg_core.models.uar.feature_tokenizer`).
TOKENIZERS: tuple[str, ...] = ("dvae", "features")


def check_tokenizer(tokenizer: DVAEConfig | FeatureTokenizerConfig, config: UARConfig) -> None:
    """Refuse a tokenizer whose codebook or token grid does not match the UAR config."""
    if not config.use_lsu:
        raise RRGError("this UAR config does not use LSU (the 'base' row); it takes images, not LSU tokens")
    if tokenizer.codebook_size != config.codebook_size:
        raise RRGError(
            f"the tokenizer has a codebook of {tokenizer.codebook_size} codes but the UAR config expects "
            f"{config.codebook_size}; use the tokenizer this model was trained with"
        )
    if tokenizer.grid_size != config.grid_size or tokenizer.downsample != config.downsample:
        raise RRGError(
            f"the tokenizer makes a {tokenizer.grid_size}-cell grid (M={tokenizer.downsample}) but the "
            f"UAR config expects {config.grid_size} (M={config.downsample})"
        )


#: Normalisation of UAR's inputs: grey [0, 1] -> [-1, 1], as ``train uar`` prepares them.
DEFAULT_MEAN_STD = (0.5, 0.5)


def default_preprocess(config: UARConfig, channels: int = 1) -> Preprocess:
    """The model's input size, ``channels`` (the dVAE's: 1; 3 for the "base" row's CNN), mean = std
    = 0.5, and the config's views."""
    mean, std = DEFAULT_MEAN_STD
    return Preprocess(
        image_size=config.image_size, channels=channels, mean=(mean,), std=(std,), views=config.views
    )
