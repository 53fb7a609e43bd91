"""DCRRG training presets: ``train/configs/dcrrg_<name>.yaml`` read into :class:`DCRRGPreset`.

Layout: ``image_size``, ``beam_size``, ``weight_decay``, ``model`` (any DCCLIPConfig / DCRRGConfig
field the data does not set, plus ``description_max_length``) and ``step1`` ... ``step4`` (the step
dataclasses below). ``--set step1.lr=3e-4`` replaces or adds one field; a key the dataclasses do not
have is refused with the valid keys listed. Why each preset has its values: docs/presets.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from rrg_core.models.dcrrg.config import DCCLIPConfig, DCRRGConfig
from train.common import presets as common
from train.common.presets import LoopSettings, check
from train.common.thresholds import ThresholdSettings

PRESETS: tuple[str, ...] = ("demo", "cpu", "paper")
STEPS: tuple[int, ...] = (1, 2, 3, 4)
# Step 4's forms: prompt tuning (the paper's), full fine-tuning (Table 4), or the decoder side alone.
STEP4_MODES: tuple[str, ...] = ("pt", "fft", "decoder")
Step4Mode = Literal["pt", "fft", "decoder"]


@dataclass(frozen=True, kw_only=True)
class EncoderStepSettings(LoopSettings):
    """Steps 1-2, where the encoders train: ``train_from_block`` freezes the image encoder's layers
    before that EfficientNet block (their output is cached), ``text_train_from_layer`` the text
    encoder's layers before it; ``text_lr`` gives the text encoder its own learning rate."""

    train_from_block: int | None = None
    text_lr: float | None = None
    text_train_from_layer: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("train_from_block", "text_train_from_layer"):
            value = getattr(self, name)
            check(value is None or value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        check(
            self.text_lr is None or self.text_lr > 0,
            f"text_lr must be a positive number, got {self.text_lr!r}",
        )


@dataclass(frozen=True, kw_only=True)
class Step1Settings(EncoderStepSettings):
    """Step 1: observation-level CE on images and report texts."""


@dataclass(frozen=True, kw_only=True)
class Step2Settings(EncoderStepSettings):
    """Step 2: CSM, plus ``step1_weight`` times the Step-1 loss (0: the paper's pure CSM)."""

    step1_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.step1_weight >= 0, f"step1_weight must be >= 0, got {self.step1_weight!r}")


@dataclass(frozen=True, kw_only=True)
class Step3Settings(LoopSettings):
    """Step 3: descriptions; ``balance`` draws pairs of mentioned findings as often as the rest,
    ``text_view`` adds the loss from the report text's features."""

    balance: bool = True
    text_view: bool = True


@dataclass(frozen=True, kw_only=True)
class Step4Settings(LoopSettings):
    """Step 4: full reports in ``mode`` (``--step4`` overrides it; absent: pt), rehearsing Step 3 at
    ``description_weight`` (absent: 1 in decoder mode, else 0; always 0 in pt)."""

    mode: Step4Mode | None = None
    description_weight: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        weight = self.description_weight
        check(weight is None or weight >= 0, f"description_weight must be a number >= 0, got {weight!r}")


# The model section: every DCCLIPConfig and decoder field that the data does not fix (DCCLIPConfig
# and DCRRGConfig both have ``dropout``; the one setting sets both).
ModelSettings = dataclasses.make_dataclass(
    "ModelSettings",
    [("description_max_length", int),
     *common.model_fields(DCCLIPConfig, DCRRGConfig,
                          exclude=("vocab_size", "max_length", "pad_id", "bos_id", "eos_id"))],
    frozen=True, kw_only=True,
)  # fmt: skip
ModelSettings.__doc__ = "DCRRG's sizes: DCCLIPConfig and DCRRGConfig fields, their defaults where absent."


@dataclass(frozen=True, kw_only=True)
class DCRRGPreset:
    """A whole DCRRG preset; ``name`` is the file's."""

    name: str
    image_size: int
    beam_size: int
    weight_decay: float
    model: ModelSettings  # type: ignore[valid-type]
    step1: Step1Settings
    step2: Step2Settings
    step3: Step3Settings
    step4: Step4Settings
    thresholds: ThresholdSettings = dataclasses.field(default_factory=ThresholdSettings)

    def __post_init__(self) -> None:
        for name in ("image_size", "beam_size"):
            check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)!r}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")

    def step(self, k: int) -> LoopSettings:
        """Step ``k``'s settings."""
        return getattr(self, f"step{k}")

    def clip_config(self) -> DCCLIPConfig:
        """The DCCLIP part of the model section."""
        return DCCLIPConfig(**_pick(self.model, DCCLIPConfig))

    def decoder_fields(self) -> dict[str, Any]:
        """The DCRRGConfig fields of the model section (the data sets vocabulary and lengths)."""
        return _pick(self.model, DCRRGConfig)


def _pick(section: Any, config: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(config)}
    return {k: v for k, v in dataclasses.asdict(section).items() if k in names}


def load_preset(name: str) -> dict[str, Any]:
    """The raw mapping of ``train/configs/dcrrg_<name>.yaml``; an unknown name raises
    :class:`RRGError` listing them all."""
    return common.load_yaml_preset("dcrrg", name, PRESETS)


def apply_overrides(preset: dict[str, Any], items: list[str]) -> DCRRGPreset:
    """The raw ``preset`` with each ``key.path=value`` applied, built and checked as a
    :class:`DCRRGPreset`; bad items raise :class:`RRGError`."""
    return common.build(DCRRGPreset, common.apply_overrides(preset, items))


def build_preset(name: str, items: list[str]) -> DCRRGPreset:
    """The named preset with ``--set`` overrides applied, checked."""
    return apply_overrides(load_preset(name), items)


def step4_mode(preset: DCRRGPreset, requested: str | None) -> str:
    """Step 4's form: ``--step4`` when given, else the preset's ``step4.mode``, else prompt tuning."""
    return requested or preset.step4.mode or "pt"
