"""UAR training presets (``train/configs/uar_<name>.yaml``): one file serves ``train dvae`` and ``train uar``.

Layout of a preset:

- ``image_size`` (the model's input side; evaluation resizes to it), ``train_resize`` (training
  resizes to this and crops ``image_size`` at random; equal to ``image_size`` for no crop, which
  lets the frozen dVAE's tokens be computed once per image), ``channels`` (1: grey, as radiographs
  are), ``weight_decay``, ``beam_size``, ``ablation`` (a row of Table 2: base, lsu, lsu_cra,
  lsu_cra_tir, uar), ``tokenizer`` (LSU's tokenizer: ``features``, frozen ImageNet EfficientNet-Lite0
  features and a k-means codebook, or ``dvae``, the paper's kind trained here);
- ``features`` (read when ``tokenizer: features``):
  :class:`~rrg_core.models.uar.feature_tokenizer.FeatureTokenizerConfig` fields (``block``,
  ``codebook_size``, ``normalize``), ``iterations`` of k-means and ``probe_epochs`` of the token probe;
- ``dvae`` (read when ``tokenizer: dvae``, and by ``train dvae``):
  :class:`~rrg_core.models.uar.dvae.DVAEConfig` fields (``downsample``, ``codebook_size``,
  ``embed_dim``, ``hidden``, ``kl_weight``) and its training: ``epochs``, ``batch_size`` (images),
  ``lr``, ``temperature_start``/``temperature_end`` with ``anneal`` (share of the iterations over
  which tau decays), ``kl_warmup`` (share over which beta ramps up from 0), ``max_iterations``,
  ``reconstructions`` (how many validation images to save as PNGs), ``probe_epochs`` (0 or absent:
  none; else the epochs of :mod:`train.uar.token_probe`, which measures how much of the findings
  the tokens keep);
- ``model``: :class:`~rrg_core.models.uar.UARConfig` fields (sizes, CRA, TIR);
- ``stage1``, ``stage2``: ``epochs``, ``batch_size`` (studies), ``lr``, optional ``schedule``
  (constant or cosine), ``max_iterations`` and ``triplet_warmup`` (the share of the stage's first
  iterations in which eq 10 averages over all negatives before it takes the hardest; ours, see
  :func:`rrg_core.models.uar.cra.triplet_loss`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rrg_core.errors import RRGError
from rrg_core.models.uar.config import ABLATIONS, TOKENIZERS, UARConfig
from rrg_core.models.uar.dvae import DVAEConfig
from rrg_core.models.uar.feature_tokenizer import FeatureTokenizerConfig
from train.common import presets as common
from train.common.presets import LoopSettings, check
from train.common.thresholds import ThresholdSettings

PRESETS: tuple[str, ...] = ("demo", "cpu", "paper")
STAGE_NAMES: tuple[str, ...] = ("tokenizer", "1", "2")
#: Older names of stages, still accepted by ``--stages``.
STAGE_ALIASES = {"dvae": "tokenizer"}


def _share(value: float | None, name: str) -> None:
    check(value is None or 0 <= value <= 1, f"{name} must be a share between 0 and 1, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class DVAETraining(LoopSettings):
    """The dVAE's training: Gumbel temperature from ``temperature_start`` to ``temperature_end`` over
    the first ``anneal`` share of the iterations, KL weight ramped up over the first ``kl_warmup``
    share; ``reconstructions`` validation views saved as PNGs; ``probe_epochs`` of the token probe
    (0: none)."""

    temperature_start: float
    temperature_end: float
    anneal: float
    kl_warmup: float
    reconstructions: int = 8
    probe_epochs: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("temperature_start", "temperature_end"):
            check(getattr(self, name) > 0, f"{name} must be a positive number, got {getattr(self, name)!r}")
        _share(self.anneal, "anneal")
        _share(self.kl_warmup, "kl_warmup")
        check(self.reconstructions >= 0, f"reconstructions must be >= 0, got {self.reconstructions!r}")
        check(
            self.probe_epochs >= 0,
            f"probe_epochs must be a whole number >= 0 (0: no token probe), got {self.probe_epochs!r}",
        )


# The dVAE section: its training plus every DVAEConfig field but those the preset's top level sets.
DVAESettings = dataclasses.make_dataclass(
    "DVAESettings", common.model_fields(DVAEConfig, exclude=("in_channels", "image_size")),
    bases=(DVAETraining,), frozen=True, kw_only=True,
)  # fmt: skip
DVAESettings.__doc__ = "The dVAE: DVAEConfig fields (their defaults where absent) and its training."


@dataclass(frozen=True, kw_only=True)
class FeatureFit:
    """The feature tokenizer's fit: ``iterations`` of k-means, ``probe_epochs`` of the token probe and,
    before k-means (ours; 0 keeps the ImageNet weights), ``finetune_epochs`` of the encoder from flat
    block ``finetune_from`` to the cut on the training split's findings at ``finetune_lr`` with
    ``finetune_batch_size`` studies a step."""

    iterations: int = 20
    probe_epochs: int = 0
    finetune_epochs: int = 0
    finetune_from: int = 0
    finetune_lr: float = 1.0e-3
    finetune_batch_size: int = 16

    def __post_init__(self) -> None:
        check(self.iterations >= 1, f"iterations must be a whole number >= 1, got {self.iterations!r}")
        check(self.finetune_epochs >= 0, f"finetune_epochs must be >= 0, got {self.finetune_epochs!r}")
        check(self.finetune_from >= 0, f"finetune_from must be >= 0, got {self.finetune_from!r}")
        check(self.finetune_lr > 0, f"finetune_lr must be positive, got {self.finetune_lr!r}")
        check(
            self.finetune_batch_size >= 1,
            f"finetune_batch_size must be >= 1, got {self.finetune_batch_size!r}",
        )
        check(
            self.probe_epochs >= 0,
            f"probe_epochs must be >= 0 (0: no token probe), got {self.probe_epochs!r}",
        )


FeatureSettings = dataclasses.make_dataclass(
    "FeatureSettings", common.model_fields(FeatureTokenizerConfig, exclude=("in_channels", "image_size")),
    bases=(FeatureFit,), frozen=True, kw_only=True,
)  # fmt: skip
FeatureSettings.__doc__ = "The feature tokenizer: FeatureTokenizerConfig fields and its fit."

# Set from the data, the tokenizer or the ablation row, never from the preset's model section.
_DERIVED = frozenset(
    {"vocab_size", "max_length", "pad_id", "bos_id", "eos_id", "unk_id", "views", "image_size",
     "codebook_size", "downsample", *ABLATIONS["uar"]}
)  # fmt: skip
ModelSettings = dataclasses.make_dataclass(
    "ModelSettings", common.model_fields(UARConfig, exclude=_DERIVED), frozen=True, kw_only=True
)
ModelSettings.__doc__ = "UAR's sizes, CRA and TIR: UARConfig fields, their defaults where absent."


@dataclass(frozen=True, kw_only=True)
class StageSettings(LoopSettings):
    """A UAR stage; ``triplet_warmup`` (ours) is the share of its first iterations in which eq 10
    averages over all negatives before it takes the hardest (see rrg_core.models.uar.cra)."""

    triplet_warmup: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _share(self.triplet_warmup, "triplet_warmup")


@dataclass(frozen=True, kw_only=True)
class UARPreset:
    """A whole UAR preset (``train dvae`` reads its top level and ``dvae`` section only)."""

    name: str
    image_size: int
    train_resize: int
    channels: int
    beam_size: int
    weight_decay: float
    ablation: str
    tokenizer: str = "dvae"
    features: FeatureSettings = dataclasses.field(default_factory=FeatureSettings)  # type: ignore[valid-type]
    dvae: DVAESettings  # type: ignore[valid-type]
    model: ModelSettings  # type: ignore[valid-type]
    stage1: StageSettings
    stage2: StageSettings
    thresholds: ThresholdSettings = dataclasses.field(default_factory=ThresholdSettings)

    def __post_init__(self) -> None:
        for name in ("image_size", "train_resize", "beam_size"):
            check(getattr(self, name) > 0, f"{name} must be a positive number, got {getattr(self, name)!r}")
        check(
            self.train_resize >= self.image_size,
            f"train_resize {self.train_resize} is smaller than image_size {self.image_size}",
        )
        check(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels!r}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        check(
            self.tokenizer in TOKENIZERS,
            f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}",
        )
        check(
            self.ablation in ABLATIONS,
            f"ablation must be one of {', '.join(ABLATIONS)}, got {self.ablation!r}",
        )

    def stage(self, k: int) -> StageSettings:
        """Stage ``k``'s settings."""
        return getattr(self, f"stage{k}")


def build_preset(name: str, overrides: list[str]) -> UARPreset:
    """The named preset with ``--set`` overrides applied, built and checked."""
    raw = common.load_yaml_preset("uar", name, PRESETS)
    return common.build(UARPreset, common.apply_overrides(raw, overrides))


def dvae_config(preset: UARPreset) -> DVAEConfig:
    """The dVAE of the preset: its ``dvae`` model fields at the preset's input size and channels."""
    names = {f.name for f in dataclasses.fields(DVAEConfig)}
    fields = {k: v for k, v in dataclasses.asdict(preset.dvae).items() if k in names}
    try:
        return DVAEConfig(in_channels=preset.channels, image_size=preset.image_size, **fields)
    except (RRGError, TypeError) as error:
        raise RRGError(f"the preset's dvae section does not make a dVAE: {error}") from None


def feature_tokenizer_config(preset: UARPreset) -> FeatureTokenizerConfig:
    """The feature tokenizer of the preset: its ``features`` fields at the preset's size and channels."""
    names = {f.name for f in dataclasses.fields(FeatureTokenizerConfig)}
    fields = {k: v for k, v in dataclasses.asdict(preset.features).items() if k in names}
    try:
        return FeatureTokenizerConfig(in_channels=preset.channels, image_size=preset.image_size, **fields)
    except (RRGError, TypeError) as error:
        raise RRGError(f"the preset's features section does not make a feature tokenizer: {error}") from None


def tokenizer_config(preset: UARPreset) -> DVAEConfig | FeatureTokenizerConfig:
    """The config of the preset's LSU tokenizer (its ``tokenizer`` kind)."""
    return feature_tokenizer_config(preset) if preset.tokenizer == "features" else dvae_config(preset)


def uar_config(
    preset: UARPreset, *, vocab_size: int, max_length: int, views: int,
    tokenizer: DVAEConfig | FeatureTokenizerConfig, special: tuple[int, int, int],
) -> UARConfig:  # fmt: skip
    """The UAR model of the preset for a vocabulary, a report length limit, a view count and an LSU
    tokenizer; ``special`` = (pad, bos, eos) ids. The ablation row sets the LSU/CRA/TIR switches."""
    pad, bos, eos = special
    fields = {
        **dataclasses.asdict(preset.model), "vocab_size": vocab_size, "max_length": max_length,
        "views": views, "image_size": preset.image_size, "codebook_size": tokenizer.codebook_size,
        "downsample": tokenizer.downsample, "pad_id": pad, "bos_id": bos, "eos_id": eos,
        **ABLATIONS[preset.ablation],
    }  # fmt: skip
    try:
        return UARConfig(**fields)
    except (RRGError, TypeError) as error:
        raise RRGError(f"the preset's model section does not make a UAR model: {error}") from None


def parse_stages(text: str) -> list[str]:
    """``"tokenizer,1,2"`` -> ["tokenizer", "1", "2"]: a subset of those, each once, in that order
    (``dvae`` is read as ``tokenizer``)."""
    stages = [STAGE_ALIASES.get(part.strip(), part.strip()) for part in text.split(",") if part.strip()]
    ordered = [s for s in STAGE_NAMES if s in stages]
    if not stages or any(s not in STAGE_NAMES for s in stages) or stages != ordered:
        raise RRGError(f"--stages must list some of tokenizer,1,2 once each in that order, got {text!r}")
    return stages
