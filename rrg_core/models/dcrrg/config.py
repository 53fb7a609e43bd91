"""DCRRG's configuration: DCCLIP's backbones and heads, the report decoder, and its preprocessing.

Kept apart from the network code, as a config file is apart from a model file: checkpoints, presets
and the trainer read and build configs without importing timm or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rrg_core.data.transforms import dcrrg_transform_config
from rrg_core.models.decoder import DecoderConfig
from rrg_core.models.preprocess import Preprocess
from rrg_core.observations import NUM_OBSERVATIONS

FULL_REPORT = NUM_OBSERVATIONS  # prompt index 14: "write the full report"


@dataclass
class DCCLIPConfig:
    """Sizes and backbones of :class:`~rrg_core.models.dcrrg.dcclip.DCCLIP`.

    ``text_encoder``: None for the packaged MiniLM-L6 (hidden 384), a Hugging Face id or folder
    (the paper: ClinicalBERT), or "tiny-random". ``projection_dim`` P and ``projection_hidden``
    size the heads f_v and f_t.
    """

    image_encoder: str = "efficientnet_lite0"
    pretrained: str | None = "imagenet"
    text_encoder: str | None = None
    text_max_length: int = 128
    projection_dim: int = 256
    projection_hidden: int = 512
    dropout: float = 0.1


@dataclass
class DCRRGConfig:
    """DCCLIP's config plus the decoder's; the defaults are a small model (paper: d_model 512).

    ``label_prompts`` (ours): each Step-3 description is written for its row's label, a learned
    "present"/"absent" state vector joining the observation's prompt, so a Table-7 row cannot be
    written for the other state. ``label_rows`` (ours, after PromptMRG's diagnostic prompts): the
    14 observation rows of every memory carry their label's state, so the full report is written
    for what the Step-1 reader decided. Training feeds the report's labels; inference the reader's
    thresholded labels (:meth:`~rrg_core.models.dcrrg.DCRRG.reader_states`). ``reconcile_report``
    (ours): the served and evaluated report drops its sentences that contradict Table 7 and adds the
    row description of each finding Table 7 labels present that it does not state
    (:func:`rrg_core.table_consistency.reconcile`), so report and table never disagree.
    """

    vocab_size: int
    clip: DCCLIPConfig = field(default_factory=DCCLIPConfig)
    d_model: int = 256
    n_heads: int = 8
    n_layers: int = 2
    d_ff: int = 1024
    dropout: float = 0.1
    max_length: int = 100
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    n_prefix: int = 16
    prefix_hidden: int | None = None
    threshold: float = 0.5
    observation_rows: bool = True
    label_prompts: bool = False
    label_rows: bool = False
    reconcile_report: bool = False

    def decoder_config(self) -> DecoderConfig:
        """The post-LN decoder of eqs 10-12."""
        sizes = dict(d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff)
        return DecoderConfig(
            vocab_size=self.vocab_size, dropout=self.dropout, max_length=self.max_length, post_norm=True,
            pad_id=self.pad_id, **sizes,
        )  # fmt: skip


def default_preprocess(config: DCRRGConfig, image_size: int | tuple[int, int] | None = None) -> Preprocess:
    """Grey repeated to three channels, the backbone's normalisation, ``image_size`` (None: the
    backbone's own 224; small presets train smaller and record it); any number of views."""
    backbone = dcrrg_transform_config(config.clip.image_encoder, train=False)
    size = image_size or backbone.resize[0]
    return Preprocess(image_size=size, channels=3, mean=backbone.mean, std=backbone.std, views=None)
