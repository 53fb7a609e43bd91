"""DCRRG's encoders, partly frozen: which EfficientNet and MiniLM layers Steps 1-2 leave frozen, and
the image side run from the frozen layers' cached output (the trainer caches it once per study).

Kept apart from :mod:`train.dcrrg.steps`, which schedules the four steps; these functions know only
the model, not the training data.
"""

from __future__ import annotations

from torch import Tensor, nn

from rrg_core.errors import RRGError
from rrg_core.models.dcrrg import DCRRG
from rrg_core.models.image_encoders import channels_last


def image_layers(model: DCRRG, train_from_block: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """The image encoder's layers before EfficientNet block ``train_from_block`` (stem and blocks
    0..k-1 of the flat 16-block numbering) and from it on (blocks k.., head conv and norm)."""
    body = model.clip.image_encoder.body
    if not all(hasattr(body, name) for name in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        raise ValueError("train_from_block needs the efficientnet_lite0 image encoder")
    flat = [block for stage in body.blocks for block in stage]
    if not 0 < train_from_block <= len(flat):
        raise ValueError(f"train_from_block must be in 1..{len(flat)}, got {train_from_block}")
    early = [body.conv_stem, body.bn1, *flat[:train_from_block]]
    return early, [*flat[train_from_block:], body.conv_head, body.bn2]


def freeze_early_image_layers(model: DCRRG, train_from_block: int | None) -> int:
    """Freeze the image encoder's layers before EfficientNet block ``train_from_block``, their batch
    norms in eval mode; returns the number of frozen parameters (0 for None: every layer trains).

    Why: low-level ImageNet features (edges, textures) transfer to radiographs, and on a CPU the
    early high-resolution blocks are most of a Step-1 iteration (at 128 px, stage 1 alone is about
    40% of the encoder's forward). Frozen, with no augmentation, their output per view is fixed, so
    Step 1 computes it once (:func:`train.dcrrg.steps.early_image_features`) and trains the later
    blocks on it.
    """
    if not train_from_block:
        return 0
    early, _ = image_layers(model, train_from_block)
    for module in early:
        module.requires_grad_(False)
        module.eval()
    return sum(p.numel() for module in early for p in module.parameters())


def freeze_early_text_layers(model: DCRRG, train_from_layer: int | None) -> int:
    """Freeze the text encoder's embeddings and transformer layers before ``train_from_layer``;
    returns the number of frozen parameters (0 for None: every layer trains).

    Why: fine-tuning all of a pretrained MiniLM was most of a Step-1 iteration on the CPU (its
    backward through 6 layers for every report); the upper layers adapt it to report language, and
    autograd then stops at the first trainable layer. Encoders without BERT-style ``embeddings`` and
    ``encoder.layer`` are refused rather than silently trained whole.
    """
    if not train_from_layer:
        return 0
    network = model.clip.text_encoder.model
    layers = getattr(getattr(network, "encoder", None), "layer", None)
    if layers is None or not hasattr(network, "embeddings"):
        raise RRGError(f"text_train_from_layer needs a BERT-style encoder, not {type(network).__name__}")
    if train_from_layer > len(layers):
        raise RRGError(f"text_train_from_layer {train_from_layer} is past the text encoder's {len(layers)}")
    early = [network.embeddings, *list(layers)[:train_from_layer]]
    for module in early:
        module.requires_grad_(False)
    return sum(p.numel() for module in early for p in module.parameters())


def pooled_from_early(model: DCRRG, features: Tensor, train_from_block: int) -> Tensor:
    """The raw image embedding ``v`` (N, C) of studies from the early layers' output (N, V, C, h, w):
    the later layers, each view's pooled map, the mean over views, as :meth:`DCCLIP.encode_image`."""
    late = nn.Sequential(*image_layers(model, train_from_block)[1])
    n, views = features.shape[:2]
    return late(channels_last(features.flatten(0, 1))).mean(dim=(2, 3)).unflatten(0, (n, views)).mean(dim=1)


def image_step1_loss_from_early(
    model: DCRRG, features: Tensor, train_from_block: int, targets: Tensor, keep: Tensor
) -> Tensor:
    """:meth:`DCCLIP.step1_loss` on images (all 14 observations, weighted), starting from the early
    layers' output (N, V, C, h, w), without re-running the frozen layers."""
    pooled = pooled_from_early(model, features, train_from_block)
    return model.clip.step1_loss_from_embeddings(pooled, "image", None, targets, keep)


def image_embeddings(model: DCRRG, images: Tensor, train_from_block: int | None) -> Tensor:
    """``v`` (N, C) from model-ready studies, or from early-layer outputs when ``train_from_block``."""
    if train_from_block:
        return pooled_from_early(model, images, train_from_block)
    return model.clip.encode_image(images)[0]
