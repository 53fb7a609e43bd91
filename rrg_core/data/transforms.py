"""Image transforms for training and evaluation, as the two papers describe them.

A transform takes a radiograph as :func:`rrg_core.data.images.load_image` gives
it, a float tensor (1, H, W) in [0, 1], and returns (C, h, w) ready for a backbone:
resize, crop (random in training, central in evaluation), grey repeated to three
channels for ImageNet-style backbones, then normalised.

There is deliberately no horizontal flip: it swaps the patient's left and right,
and reports name sides ("left basilar atelectasis"), so a flipped image would
contradict its report.

Presets (all fields can be overridden with :func:`dataclasses.replace`):

- UAR (section 4.1): training resizes to 128 x 128 and crops 112 x 112 at random;
  evaluation resizes to 112 x 112. The paper states no normalisation; we use the
  ImageNet statistics on three channels, the convention of the R2Gen code base it
  builds on.
- DCRRG: the backbone's input size, 224 x 224 for both ResNet-50 and
  EfficientNet-Lite0, and the backbone's normalisation: ImageNet mean/std for
  torchvision's ResNet-50, mean = std = 0.5 for timm's ``tf_efficientnet_lite0``.
  No crop: the paper names none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from rrg_core.errors import RRGError

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
HALF: tuple[float, float, float] = (0.5, 0.5, 0.5)

Size = tuple[int, int]


def _as_size(value: int | tuple[int, int] | list[int], field: str) -> Size:
    """Normalise an int or (height, width) pair to a validated (height, width) tuple."""
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise RRGError(f"{field} must be a positive int or a (height, width) pair, got {value!r}")
    return size  # type: ignore[return-value]


@dataclass(frozen=True)
class TransformConfig:
    """What a transform does: sizes as (height, width), normalisation per output channel.

    ``crop`` is None for no crop (evaluation presets); when set, training crops at
    a random position and evaluation crops the centre. ``channels`` is 1 (grey) or
    3 (grey repeated, for backbones pretrained on colour images).
    """

    resize: Size
    crop: Size | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__ so callers may pass ints and lists.
        object.__setattr__(self, "resize", _as_size(self.resize, "resize"))
        if self.crop is not None:
            crop = _as_size(self.crop, "crop")
            if crop[0] > self.resize[0] or crop[1] > self.resize[1]:
                raise RRGError(f"crop {crop} is larger than the resized image {self.resize}")
            object.__setattr__(self, "crop", crop)
        if self.channels not in (1, 3):
            raise RRGError(f"channels must be 1 or 3, got {self.channels!r}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise RRGError(f"{name} needs 1 or {self.channels} values, got {len(values)}")
        if any(s <= 0 for s in self.std):
            raise RRGError(f"std values must be positive, got {self.std}")

    @property
    def output_size(self) -> Size:
        """(height, width) of the transformed image."""
        return self.crop if self.crop is not None else self.resize


def uar_transform_config(train: bool) -> TransformConfig:
    """UAR section 4.1: resize 128 and random crop 112 in training, resize 112 in evaluation."""
    if train:
        return TransformConfig(resize=128, crop=112, mean=IMAGENET_MEAN, std=IMAGENET_STD, channels=3)
    return TransformConfig(resize=112, crop=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, channels=3)


_DCRRG_BACKBONES: dict[str, tuple[int, tuple[float, ...], tuple[float, ...]]] = {
    "resnet50": (224, IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_lite0": (224, HALF, HALF),
}
_BACKBONE_ALIASES = {"tf_efficientnet_lite0": "efficientnet_lite0", "resnet-50": "resnet50"}

DCRRG_BACKBONES: tuple[str, ...] = tuple(_DCRRG_BACKBONES)


def dcrrg_transform_config(backbone: str, train: bool) -> TransformConfig:
    """DCRRG: the backbone's input size and normalisation; the same in training and evaluation.

    ``train`` is accepted for symmetry with :func:`uar_transform_config`.
    """
    del train  # DCRRG states no training-only augmentation.
    key = _BACKBONE_ALIASES.get(backbone.lower(), backbone.lower())
    if key not in _DCRRG_BACKBONES:
        raise RRGError(f"unknown DCRRG backbone {backbone!r}; expected one of: {', '.join(DCRRG_BACKBONES)}")
    size, mean, std = _DCRRG_BACKBONES[key]
    return TransformConfig(resize=size, crop=None, mean=mean, std=std, channels=3)


def transform_config(preset: str, train: bool) -> TransformConfig:
    """A preset by name: ``"uar"``, ``"dcrrg-resnet50"`` or ``"dcrrg-efficientnet_lite0"``."""
    if preset == "uar":
        return uar_transform_config(train)
    if preset.startswith("dcrrg-"):
        return dcrrg_transform_config(preset.removeprefix("dcrrg-"), train)
    names = ["uar", *(f"dcrrg-{b}" for b in DCRRG_BACKBONES)]
    raise RRGError(f"unknown transform preset {preset!r}; expected one of: {', '.join(names)}")


class RadiographTransform:
    """Callable (1, H, W) float tensor in [0, 1] -> (C, h, w) normalised tensor.

    A class rather than a closure so DataLoader workers can pickle it.
    """

    def __init__(self, config: TransformConfig, train: bool, generator: torch.Generator | None = None):
        self.config = config
        self.train = train
        # None: torch's global generator, which DataLoader seeds differently in each worker.
        self.generator = generator

    def __repr__(self) -> str:
        return f"RadiographTransform({self.config!r}, train={self.train})"

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = self._check(image)
        config = self.config
        image = tvf.resize(
            image, list(config.resize), interpolation=InterpolationMode.BILINEAR, antialias=True
        )
        if config.crop is not None:
            image = self._random_crop(image) if self.train else tvf.center_crop(image, list(config.crop))
        # Bilinear weights are non-negative, so this only removes rounding noise.
        image = image.clamp_(0.0, 1.0)
        if config.channels == 3 and image.shape[0] == 1:
            image = image.expand(3, -1, -1).contiguous()
        mean = list(config.mean) * (config.channels // len(config.mean))
        std = list(config.std) * (config.channels // len(config.std))
        return tvf.normalize(image, mean=mean, std=std)

    def _check(self, image: torch.Tensor) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise RRGError(f"a transform expects a (1, H, W) image tensor, got {shape}")
        if image.shape[0] == 3 and self.config.channels == 1:
            raise RRGError("a 3-channel image cannot go through a 1-channel transform")
        if not image.is_floating_point():
            raise RRGError(f"a transform expects a float image in [0, 1], got {image.dtype}")
        return image

    def _random_crop(self, image: torch.Tensor) -> torch.Tensor:
        height, width = self.config.crop  # type: ignore[misc]
        top = int(torch.randint(0, image.shape[-2] - height + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, image.shape[-1] - width + 1, (1,), generator=self.generator))
        return tvf.crop(image, top, left, height, width)


def build_transform(
    config: TransformConfig, train: bool, *, generator: torch.Generator | None = None
) -> RadiographTransform:
    """The transform for ``config``: random crop when ``train``, deterministic otherwise."""
    logger.debug("transform %s train=%s", config, train)
    return RadiographTransform(config, train, generator)
