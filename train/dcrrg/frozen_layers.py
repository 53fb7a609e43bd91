"""DCRRG's encoders, partly frozen: which EfficientNet and MiniLM layers Steps 1-2 leave frozen (the
trainer caches the frozen image layers' output once per study; :meth:`DCCLIP.encode_image` runs the
rest from it).

Kept apart from :mod:`train.dcrrg.steps`, which schedules the four steps; these functions know only
the model, not the training data.
"""

from __future__ import annotations

from rrg_core.errors import RRGError
from rrg_core.models.dcrrg import DCRRG


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
    early, _ = model.clip.image_encoder.split_at(train_from_block)
    early.requires_grad_(False)
    early.eval()
    return sum(p.numel() for p in early.parameters())


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
