"""Tiny random DCRRG and UAR models for fast tests, and the checkpoints of them that conftest shares."""

from __future__ import annotations

from pathlib import Path

import torch

from rrg_core.data.datasets import read_annotation
from rrg_core.data.vocab import Vocabulary
from rrg_core.models.dcrrg import DCRRG, DCCLIPConfig, DCRRGConfig, default_preprocess, save_dcrrg
from rrg_core.models.preprocess import Preprocess
from rrg_core.models.uar import DVAE, UAR, DVAEConfig, UARConfig, save_uar

#: Input side a tiny DCRRG checkpoint records (as a small training preset would).
DCRRG_IMAGE_SIZE = 64
#: How a tiny UAR checkpoint prepares its images: 32 px grey views, [-1, 1], two views.
UAR_PREPROCESS = Preprocess(image_size=32, channels=1, mean=(0.5,), std=(0.5,), views=2)


def tiny_uar(vocab_size: int, stage: int = 2) -> UAR:
    """A random UAR (d 16, 4 x 4 tokens per 32 px view, 16-code dVAE) in eval mode, TIR mask not flat."""
    torch.manual_seed(0)
    dvae = DVAE(
        DVAEConfig(in_channels=1, image_size=32, downsample=8, codebook_size=16, embed_dim=4, hidden=4)
    )
    config = UARConfig(
        vocab_size=vocab_size, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=2, d_ff=32,
        max_length=10, image_size=32, codebook_size=16, n_basis=32, dropout=0.0,
    )  # fmt: skip
    model = UAR(config, dvae)
    model.set_stage(stage)
    with torch.no_grad():
        model.tir_mask.normal_()
    return model.eval()


def phantom_vocabulary(data: Path) -> Vocabulary:
    """Every word of the data set's training reports."""
    return Vocabulary.build([r.report for r in read_annotation(data)["train"]], min_count=1)


def tiny_dcrrg(vocab_size: int) -> DCRRG:
    """A random DCRRG (random image encoder, tiny text encoder, d 32)."""
    torch.manual_seed(0)
    clip = DCCLIPConfig(pretrained=None, text_encoder="tiny-random", projection_dim=16, projection_hidden=32)
    return DCRRG(
        DCRRGConfig(vocab_size=vocab_size, clip=clip, d_model=32, d_ff=64, n_prefix=2, max_length=12)
    )


def save_tiny_dcrrg(
    data: Path, folder: Path, *, vocab: Vocabulary | None = None, data_fingerprint: str | None = None
) -> Path:
    """A :func:`tiny_dcrrg` checkpoint with ``vocab`` (default: ``data``'s vocabulary)."""
    vocab = vocab or phantom_vocabulary(data)
    model = tiny_dcrrg(len(vocab))
    return save_dcrrg(
        model, folder, vocab=vocab, preprocess=default_preprocess(model.config, DCRRG_IMAGE_SIZE),
        data_fingerprint=data_fingerprint,
    )  # fmt: skip


def save_tiny_uar(
    data: Path, folder: Path, *, vocab: Vocabulary | None = None, data_fingerprint: str | None = None
) -> Path:
    """A :func:`tiny_uar` checkpoint with ``vocab`` (default: ``data``'s vocabulary)."""
    vocab = vocab or phantom_vocabulary(data)
    return save_uar(
        tiny_uar(len(vocab)), folder, vocab=vocab, preprocess=UAR_PREPROCESS,
        data_fingerprint=data_fingerprint,
    )  # fmt: skip
