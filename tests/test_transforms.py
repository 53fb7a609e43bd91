"""Training and evaluation transforms: sizes, normalisation, determinism, no flips."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rrg_core.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TransformConfig,
    build_transform,
    dcrrg_transform_config,
    transform_config,
    uar_transform_config,
)
from rrg_core.errors import RRGError


def _image(height: int = 96, width: int = 96, seed: int = 0) -> torch.Tensor:
    return torch.rand((1, height, width), generator=torch.Generator().manual_seed(seed))


def _unnormalise(output: torch.Tensor, config: TransformConfig) -> torch.Tensor:
    mean = torch.tensor(config.mean).view(-1, 1, 1)
    std = torch.tensor(config.std).view(-1, 1, 1)
    return output * std + mean


def test_uar_presets_follow_the_paper():
    train, evaluation = uar_transform_config(True), uar_transform_config(False)
    assert (train.resize, train.crop) == ((128, 128), (112, 112))
    assert (evaluation.resize, evaluation.crop) == ((112, 112), None)
    assert train.output_size == evaluation.output_size == (112, 112)


@pytest.mark.parametrize("train", [True, False])
def test_uar_output_shape_and_range(train):
    config = uar_transform_config(train)
    output = build_transform(config, train)(_image(96, 130))
    assert output.shape == (3, 112, 112)
    assert output.dtype == torch.float32
    restored = _unnormalise(output, config)
    assert restored.min() >= -1e-5 and restored.max() <= 1 + 1e-5
    # Grey repeated: all three channels carry the same picture.
    assert torch.allclose(restored[0], restored[1], atol=1e-5) and torch.allclose(
        restored[1], restored[2], atol=1e-5
    )


@pytest.mark.parametrize(
    ("backbone", "mean", "std"),
    [("resnet50", IMAGENET_MEAN, IMAGENET_STD), ("efficientnet_lite0", (0.5,) * 3, (0.5,) * 3)],
)
def test_dcrrg_backbone_presets(backbone, mean, std):
    config = dcrrg_transform_config(backbone, train=True)
    assert config.resize == (224, 224) and config.crop is None and config.channels == 3
    assert config.mean == mean and config.std == std
    output = build_transform(config, train=True)(_image())
    assert output.shape == (3, 224, 224)


def test_efficientnet_normalisation_maps_to_minus_one_one():
    config = dcrrg_transform_config("tf_efficientnet_lite0", train=False)
    transform = build_transform(config, train=False)
    assert torch.allclose(transform(torch.zeros(1, 64, 64)), torch.full((3, 224, 224), -1.0))
    assert torch.allclose(transform(torch.ones(1, 64, 64)), torch.full((3, 224, 224), 1.0))


def test_named_presets():
    assert transform_config("uar", train=False) == uar_transform_config(False)
    assert transform_config("dcrrg-resnet50", train=True) == dcrrg_transform_config("resnet50", True)
    with pytest.raises(RRGError, match="unknown transform preset"):
        transform_config("vit", train=True)
    with pytest.raises(RRGError, match="unknown DCRRG backbone"):
        dcrrg_transform_config("vgg16", train=True)


def test_eval_is_deterministic():
    image = _image()
    for config in (uar_transform_config(False), dcrrg_transform_config("resnet50", False)):
        transform = build_transform(config, train=False)
        assert torch.equal(transform(image), transform(image))


def test_eval_with_a_crop_takes_the_centre():
    config = TransformConfig(resize=8, crop=4, mean=(0.0,), std=(1.0,), channels=1)
    image = torch.zeros(1, 8, 8)
    image[:, 2:6, 2:6] = 1.0
    output = build_transform(config, train=False)(image)
    assert torch.allclose(output, torch.ones(1, 4, 4))


def test_training_crops_at_random_but_reproducibly_under_a_generator():
    config = uar_transform_config(True)
    image = _image(128, 128)
    first = build_transform(config, True, generator=torch.Generator().manual_seed(3))
    second = build_transform(config, True, generator=torch.Generator().manual_seed(3))
    outputs = [first(image) for _ in range(6)]
    assert all(torch.equal(a, second(image)) for a in outputs)
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


def test_no_horizontal_flip():
    # Left half bright: a flip would move it to the right, swapping the patient's sides.
    image = torch.zeros(1, 96, 96)
    image[:, :, :48] = 1.0
    for train in (True, False):
        config = uar_transform_config(train)
        transform = build_transform(config, train, generator=torch.Generator().manual_seed(0))
        for _ in range(10):
            restored = _unnormalise(transform(image), config)[0]
            assert restored[:, :40].mean() > 0.9 and restored[:, -40:].mean() < 0.1


def test_one_channel_config():
    config = dataclasses.replace(uar_transform_config(False), channels=1, mean=(0.5,), std=(0.25,))
    output = build_transform(config, train=False)(torch.full((1, 50, 70), 0.75))
    assert output.shape == (1, 112, 112)
    assert torch.allclose(output, torch.ones_like(output))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"resize": 100, "crop": 112}, "larger than the resized image"),
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"mean": (0.1, 0.2)}, "mean needs 1 or 3 values"),
        ({"std": (0.0, 1.0, 1.0)}, "std values must be positive"),
        ({"resize": (0, 5)}, "resize must be a positive int"),
    ],
)
def test_config_validation(kwargs, words):
    base = {"resize": 128, "crop": 112, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "channels": 3}
    with pytest.raises(RRGError, match=words):
        TransformConfig(**{**base, **kwargs})


def test_bad_inputs_are_refused():
    transform = build_transform(uar_transform_config(False), train=False)
    with pytest.raises(RRGError, match=r"\(1, H, W\)"):
        transform(torch.rand(96, 96))
    with pytest.raises(RRGError, match="float"):
        transform(torch.zeros(1, 96, 96, dtype=torch.uint8))
    grey = build_transform(
        dataclasses.replace(uar_transform_config(False), channels=1, mean=(0.5,), std=(0.5,)), False
    )
    with pytest.raises(RRGError, match="3-channel"):
        grey(torch.rand(3, 96, 96))
