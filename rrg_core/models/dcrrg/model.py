"""DCRRG: DCCLIP (Steps 1-2) plus the report decoder for Steps 3-4 (paper sec. 3.3-3.4, Table 7).

Step 3 trains a 2-layer post-LN decoder to write one observation's description from an image, or
from a report's text as an augmented view of the image. Step 4 writes full reports: P-Tuning v2 deep
prompts and a new output head train while encoders and decoder stay frozen (or, for Table 4's
ablation, everything trains: FFT).

Choices the paper leaves open, made here:

- **Memory** (f_I of eq. 11): the image feature map (B, C, h, w) (two views side by side, see
  :mod:`dcclip`) flattened to h*w rows, or the text token states as their T rows; each modality has
  its own ``Linear -> LayerNorm`` into d_model (the LayerNorm puts both on one scale, as the text
  stands in for the image). In front of them, with ``observation_rows`` on, come 14 *observation
  rows*: the Step-1 projections ``v_p`` (``t_p`` for text) under each observation's one-hot prompt
  (eqs 1b, 2b), through one shared ``Linear -> LayerNorm`` plus that observation's prompt vector as
  the row's identity. The paper calls the decoder's input the "uni-modal representations" that the
  prompts produce; these rows are exactly what Step 1's classifiers read, so the decoder need not
  re-learn from the raw map what Step 1 already separated. On the 300-study phantom set they are
  what makes the generated findings follow the image.
- **Observation prompt**: a learned d_model vector per observation, plus a 15th for "full report",
  is *added to every decoder input embedding* (the decoder's ``input_offset``), *prepended to the
  memory* as one extra row *and added to every memory row*. Added rather than inserted as a token,
  the token sequence stays exactly the report (BOS, words, EOS), so Step 3 and Step 4 share
  positions and beam search. In the input, the first layer's queries already know the observation
  and can seek its memory row: a prompt in the memory alone shifts every key alike, which softmax
  ignores, so only the second layer could route (and Step-3 descriptions came out as each
  observation's normal sentence whatever the image). The "full report" vector is its own parameter
  (never trained in Step 3) and trains with the deep prompts in Step 4.
- **Two output heads**: ``decoder.head`` stays the Step-3 (description) head; Step 4 uses
  ``report_head``, installed in the decoder only for the duration of a call. So one model gives both
  Table 7's descriptions and the full report. (Not safe for concurrent calls from several threads.)
- The token loss (eq. 14) is averaged over non-pad target tokens rather than summed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rrg_core.models.beam_search import beam_search
from rrg_core.models.dcrrg.config import FULL_REPORT, DCRRGConfig
from rrg_core.models.dcrrg.dcclip import DCCLIP, Inputs
from rrg_core.models.decoder import TransformerDecoder
from rrg_core.models.prompt_tuning import DeepPrompts, freeze_all_but, trainable_parameter_share
from rrg_core.models.sampling import sample_sequences
from rrg_core.models.thresholds import cut, draw, store_thresholds
from rrg_core.observations import NUM_OBSERVATIONS


class EncoderFeatures(NamedTuple):
    """Precomputed frozen-encoder outputs that stand in for images or texts in Steps 3-4.

    ``states`` is an image feature map (B, C, h, w) (views side by side, as
    :meth:`DCCLIP.encode_image` returns it) when ``attention_mask`` is None, else text token states
    (B, T, H) with their (B, T) attention mask. ``pooled`` is the raw embedding ``v`` (B, C) or ``t``
    (B, H) of eqs 1a/2a. With the encoders frozen and in eval mode, computing these once per study
    and training on them gives the same losses as passing the images or texts.
    """

    states: Tensor
    pooled: Tensor
    attention_mask: Tensor | None = None

    @classmethod
    def of_images(cls, feature_map: Tensor, pooled: Tensor) -> EncoderFeatures:
        return cls(feature_map, pooled, None)

    @classmethod
    def of_texts(cls, token_states: Tensor, attention_mask: Tensor, pooled: Tensor) -> EncoderFeatures:
        return cls(token_states, pooled, attention_mask)


MemoryInputs = Inputs | EncoderFeatures


class Descriptions(NamedTuple):
    """Table 7 of a batch: Step-1 probabilities and thresholded labels (B, 14), and per study the 14
    Step-3 description token ids (no BOS), in :data:`~rrg_core.observations.OBSERVATIONS` order."""

    probabilities: Tensor
    labels: Tensor
    description_ids: list[list[list[int]]]


class DCRRG(nn.Module):
    """The four-step DCRRG model; takes tensors (and texts for the text encoder), knows no files."""

    def __init__(self, config: DCRRGConfig) -> None:
        super().__init__()
        self.config = config
        self.clip = DCCLIP(config.clip)
        d = config.d_model
        self.image_memory = nn.Sequential(nn.Linear(self.clip.image_encoder.out_channels, d), nn.LayerNorm(d))
        self.text_memory = nn.Sequential(nn.Linear(self.clip.text_encoder.hidden_size, d), nn.LayerNorm(d))
        # +1: the Step-1 classifier's logit margin joins each observation row (see observation_memory_rows)
        self.observation_memory = nn.Sequential(nn.Linear(config.clip.projection_dim + 1, d), nn.LayerNorm(d))
        self.observation_prompts = nn.Embedding(NUM_OBSERVATIONS, d)
        # The "absent" (0) and "present" (1) state vectors of label_prompts / label_rows (config).
        self.label_states = nn.Embedding(2, d) if config.label_prompts or config.label_rows else None
        self.report_prompt = nn.Parameter(torch.randn(d) * 0.02)
        self.decoder = TransformerDecoder(config.decoder_config())
        self.report_head = nn.Linear(d, config.vocab_size)
        self.deep_prompts = self._new_prompts()
        # Whether Step 4 uses the deep prompts (PT) or not (FFT); a buffer so checkpoints keep it.
        self.register_buffer("use_deep_prompts", torch.tensor(False))
        self.register_buffer("thresholds", torch.full((NUM_OBSERVATIONS,), float(config.threshold)))

    def _new_prompts(self) -> DeepPrompts | None:
        if self.config.n_prefix <= 0:
            return None
        return DeepPrompts.for_decoder(self.decoder.config, self.config.n_prefix, self.config.prefix_hidden)

    def set_thresholds(self, values: Tensor | list[float] | float) -> None:
        """Per-observation decision thresholds on the Step-1 probability (14 values or one for all)."""
        store_thresholds(self.thresholds, values)

    # -- memory ---------------------------------------------------------------------------------

    def prompt_vectors(self, prompt_index: Tensor) -> Tensor:
        """(B, d) prompt vectors; index 0-13 an observation, 14 (:data:`FULL_REPORT`) the full report."""
        prompt_index = prompt_index.long()
        observation = self.observation_prompts(prompt_index.clamp(max=NUM_OBSERVATIONS - 1))
        full = prompt_index[:, None] == FULL_REPORT
        return torch.where(full, self.report_prompt.to(observation.dtype).expand_as(observation), observation)

    def reader_states(self, features: EncoderFeatures) -> Tensor:
        """(B, 14) 0/1 labels the Step-1 reader gives: its probability at or above the threshold."""
        return self.thresholded(self.observation_probabilities(features))

    def thresholded(self, probabilities: Tensor) -> Tensor:
        """(B, 14) 0/1 labels of Step-1 probabilities under the per-observation thresholds."""
        return cut(probabilities, self.thresholds)

    def _states(self, features: EncoderFeatures, states: Tensor | None) -> Tensor | None:
        """The labels the decoder is conditioned on: ``states`` as given (training feeds the report's
        labels), else the reader's; None when the config conditions on no labels."""
        if self.label_states is None:
            return None
        return self.reader_states(features) if states is None else states.long().to(features.pooled.device)

    def features(self, inputs: MemoryInputs, from_block: int | None = None) -> EncoderFeatures:
        """The encoders' outputs for images (tensor) or texts (list); :class:`EncoderFeatures` pass
        through. ``from_block``: the images are the image encoder's early-layer output (training's
        cache; :meth:`DCCLIP.encode_image`). Training caches these, under ``torch.no_grad``, while the
        encoders are frozen."""
        if isinstance(inputs, EncoderFeatures):
            return inputs
        if isinstance(inputs, Tensor):
            pooled, fmap = self.clip.encode_image(inputs, from_block)
            return EncoderFeatures.of_images(fmap, pooled)
        features = self.clip.encode_text_features(inputs)
        return EncoderFeatures.of_texts(features.token_states, features.attention_mask, features.pooled)

    def observation_memory_rows(self, pooled: Tensor, modality: str, states: Tensor | None = None) -> Tensor:
        """(B, 14, d): each observation's Step-1 projection of the raw embedding (B, D) and its
        classifier's logit margin (positive minus negative), mapped to d_model, plus that observation's
        prompt vector so the decoder can tell the rows apart, plus (``label_rows``) the state vector of
        its label in ``states`` (B, 14).

        The margin is one linear read-out of the projection, but handed over explicitly the decoder
        uses it at once; left to find that direction among the P it was slow to (on phantoms,
        descriptions said "no pneumothorax" at a Step-1 probability of 0.98)."""
        batch = pooled.shape[0]
        every = torch.arange(NUM_OBSERVATIONS, device=pooled.device).repeat(batch)
        project = self.clip.project_image if modality == "image" else self.clip.project_text
        classifier = self.clip.image_classifier if modality == "image" else self.clip.text_classifier
        projected = project(pooled.repeat_interleave(NUM_OBSERVATIONS, dim=0), every)
        logits = classifier(projected)
        margin = (logits[:, 1:] - logits[:, :1]).clamp(-10.0, 10.0)
        features = torch.cat([projected, margin], dim=-1).view(batch, NUM_OBSERVATIONS, -1)
        rows = self.observation_memory(features)
        rows = rows + self.observation_prompts.weight.to(rows.dtype)
        if self.config.label_rows and states is not None:
            rows = rows + self.label_states(states).to(rows.dtype)
        return rows

    def memory(self, inputs: MemoryInputs, states: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Decoder memory (B, L, d) and mask (B, L) or None from images, texts or their
        :class:`EncoderFeatures` (:meth:`features`); ``states`` (B, 14): the labels its observation
        rows carry under ``label_rows`` (None: the reader's)."""
        features = self.features(inputs)
        image = features.attention_mask is None
        if image:
            memory, mask = self.image_memory(features.states.flatten(2).transpose(1, 2)), None
        else:
            memory, mask = self.text_memory(features.states), features.attention_mask.bool()
        if not self.config.observation_rows:
            return memory, mask
        states = self._states(features, states) if self.config.label_rows else None
        rows = self.observation_memory_rows(features.pooled, "image" if image else "text", states)
        if mask is not None:
            mask = torch.cat([mask.new_ones(rows.shape[:2]), mask], dim=1)
        return torch.cat([rows.to(memory.dtype), memory], dim=1), mask

    def observation_probabilities(self, features: EncoderFeatures) -> Tensor:
        """Step-1 probability (B, 14) that each observation is positive, from image features (or from
        text features, by the text classifier)."""
        modality = "image" if features.attention_mask is None else "text"
        return self.clip.observation_logits(features.pooled, modality).softmax(dim=-1)[..., 1]

    def condition(
        self, memory: Tensor, mask: Tensor | None, prompt_index: Tensor, states: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Memory with the prompt added to every row and prepended as a row of its own, its mask, and
        the (B, d) prompt vectors, which the decoder also adds to its input (module docstring). Under
        ``label_prompts`` a description's prompt also carries the state of its observation's label in
        ``states`` (B, 14)."""
        prompt_index = prompt_index.to(memory.device)
        vectors = self.prompt_vectors(prompt_index).to(memory.dtype)
        if self.config.label_prompts and states is not None:
            described = prompt_index < FULL_REPORT
            own = states.to(memory.device).gather(1, prompt_index.clamp(max=NUM_OBSERVATIONS - 1)[:, None])
            state = self.label_states(own[:, 0]).to(memory.dtype)
            vectors = vectors + torch.where(described[:, None], state, torch.zeros_like(state))
        prompt = vectors[:, None, :]  # (B, 1, d)
        memory = torch.cat([prompt, memory + prompt], dim=1)
        if mask is None:
            mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        else:
            mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        return memory, mask, vectors

    # -- heads and prompts ----------------------------------------------------------------------

    @contextmanager
    def _decoding(self, full_report: bool) -> Iterator[DeepPrompts | None]:
        """Install Step 4's head (and yield its prefixes' source) for a full report; restore after."""
        description_head = self.decoder.head
        use_prompts = full_report and self.deep_prompts is not None and bool(self.use_deep_prompts)
        if full_report:
            self.decoder.head = self.report_head
        try:
            yield self.deep_prompts if use_prompts else None
        finally:
            self.decoder.head = description_head

    def logits(
        self, inputs: MemoryInputs, prompt_index: Tensor, tokens: Tensor, states: Tensor | None = None
    ) -> Tensor:
        """Teacher-forced next-token logits (B, T, vocab) of ``tokens`` (B, T) for prompt ``k`` (B,):
        an observation 0-13 (Step 3's description, its head) or :data:`FULL_REPORT` (Step 4's head and,
        with prompt tuning on, the deep prompts). ``states`` (B, 14): the labels to condition on
        (training: the report's; None: the reader's)."""
        features = self.features(inputs)
        states = self._states(features, states)
        memory, mask = self.memory(features, states)
        memory, mask, prompt = self.condition(memory, mask, prompt_index, states)
        full_report = bool((prompt_index == FULL_REPORT).all())
        if not full_report and bool((prompt_index == FULL_REPORT).any()):
            raise ValueError("one batch holds either descriptions or full reports, not both")
        with self._decoding(full_report) as prompts:
            prefixes = None if prompts is None else prompts(tokens.shape[0])
            return self.decoder(tokens, memory, mask, prefixes=prefixes, input_offset=prompt).logits

    def freeze_encoders(self) -> None:
        """Step 3's setting: DCCLIP fixed, memory projections, prompts and decoder train."""
        self.requires_grad_(True)
        self.clip.requires_grad_(False)

    def enable_prompt_tuning(self, reset: bool = True) -> tuple[int, int, float]:
        """Step 4 (PT): freeze everything but fresh deep prompts, a fresh report head and the
        full-report prompt vector. Returns (trainable, total, share). ``reset=False`` keeps the
        current prompts and head (to continue from a checkpoint)."""
        if self.config.n_prefix <= 0:
            raise ValueError("prompt tuning needs n_prefix > 0")
        if reset or self.deep_prompts is None:
            device = self.decoder.head.weight.device
            self.deep_prompts = self._new_prompts().to(device)
            description_head = self.decoder.head
            self.report_head = self.decoder.replace_head()  # a fresh, randomly initialised head
            self.decoder.head = description_head
        self.use_deep_prompts.fill_(True)
        freeze_all_but(self, [self.deep_prompts, self.report_head])
        self.report_prompt.requires_grad_(True)
        return trainable_parameter_share(self)

    def enable_full_finetuning(self, new_head: bool = False) -> tuple[int, int, float]:
        """Step 4 (FFT, Table 4): every parameter trains, no deep prompts; optionally a fresh head."""
        if new_head:
            self.report_head = nn.Linear(self.config.d_model, self.config.vocab_size).to(
                self.report_prompt.device
            )
        self.use_deep_prompts.fill_(False)
        self.requires_grad_(True)
        return trainable_parameter_share(self)

    def enable_decoder_finetuning(self) -> tuple[int, int, float]:
        """Step 4 variant between PT and FFT: the decoder side (memory projections, prompts, decoder,
        report head) trains, DCCLIP stays frozen, no deep prompts. Not in the paper; it shows how
        much of the PT-vs-description gap is the frozen decoder rather than the encoders."""
        self.enable_full_finetuning()
        self.clip.requires_grad_(False)
        return trainable_parameter_share(self)

    def enable_step4(self, mode: str) -> tuple[int, int, float]:
        """Step 4 in ``mode``: fresh prompts and head for "pt" (the paper's), every parameter for "fft"
        (Table 4), the decoder side for "decoder". Returns (trainable, total, share)."""
        if mode == "pt":
            return self.enable_prompt_tuning(reset=True)
        if mode == "decoder":
            return self.enable_decoder_finetuning()
        if mode == "fft":
            return self.enable_full_finetuning()
        raise ValueError(f"Step 4 mode must be pt, fft or decoder, got {mode!r}")

    # -- inference ------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        images: MemoryInputs,
        *,
        beam_size: int = 3,
        max_length: int | None = None,
        observation: int | None = None,
        states: Tensor | None = None,
        length_penalty: float = 0.0,
    ) -> list[list[int]]:
        """Beam-search token ids (no BOS; EOS last unless cut at ``max_length``) per study.

        ``images`` may also be the :class:`EncoderFeatures` of images already encoded, so a caller
        that needs the Step-1 outputs too runs the encoder once. ``observation`` None: the full
        report (Step 4); an index 0-13: that observation's Step-3 description. ``states`` (B, 14): the
        labels to write for, under ``label_prompts``/``label_rows`` (None: the reader's).
        ``length_penalty``: the beam's GNMT alpha (:func:`~rrg_core.models.beam_search.beam_search`).
        """
        features = self.features(images)
        states = self._states(features, states)
        memory, mask = self.memory(features, states)
        index = FULL_REPORT if observation is None else int(observation)
        if not 0 <= index <= FULL_REPORT:
            raise ValueError(f"observation must be None or 0..{NUM_OBSERVATIONS - 1}, got {observation}")
        prompts = torch.full((memory.shape[0],), index, device=memory.device)
        return self._beam(memory, mask, prompts, beam_size, max_length, states, length_penalty)

    def _beam(
        self,
        memory: Tensor,
        mask: Tensor | None,
        prompt_index: Tensor,
        beam_size: int,
        max_length: int | None,
        states: Tensor | None = None,
        length_penalty: float = 0.0,
    ) -> list[list[int]]:
        memory, mask, prompt = self.condition(memory, mask, prompt_index, states)
        full_report = bool((prompt_index == FULL_REPORT).all())
        if not full_report and bool((prompt_index == FULL_REPORT).any()):
            raise ValueError("one beam search writes either descriptions or full reports, not both")
        limit = self.config.max_length if max_length is None else min(max_length, self.config.max_length)
        with self._decoding(full_report) as prompts:
            prefixes = None if prompts is None else prompts(memory.shape[0])
            cache = self.decoder.init_cache(memory, mask, prefixes=prefixes, input_offset=prompt)
            result = beam_search(
                self.decoder.beam_step_fn(), batch_size=memory.shape[0], bos_id=self.config.bos_id,
                eos_id=self.config.eos_id, pad_id=self.config.pad_id, beam_size=beam_size, max_length=limit,
                device=memory.device, init_state=cache, length_penalty=length_penalty,
            )  # fmt: skip
        return [
            row[:length] for row, length in zip(result.tokens.tolist(), result.lengths.tolist(), strict=True)
        ]

    @torch.no_grad()
    def sample(
        self,
        images: MemoryInputs,
        *,
        samples: int,
        temperature: float = 1.0,
        max_length: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[list[list[int]]]:
        """``samples`` full reports per study drawn at ``temperature`` (:mod:`rrg_core.models.sampling`):
        the alternatives against which the beam-search report's sentences are checked.

        Under ``label_rows`` every draw is written for the same labels, drawn once per call from the
        reader's uncertainty (:meth:`sampled_states`): a finding near its threshold is then present in
        some alternatives and absent in others, as the reader is unsure of it."""
        features = self.features(images)
        states = self.sampled_states(features, generator) if self.config.label_rows else None
        memory, mask = self.memory(features, states)
        prompt_index = torch.full((memory.shape[0],), FULL_REPORT, device=memory.device)
        memory, mask, prompt = self.condition(memory, mask, prompt_index, states)
        limit = self.config.max_length if max_length is None else min(max_length, self.config.max_length)
        with self._decoding(True) as prompts:
            prefixes = None if prompts is None else prompts(memory.shape[0])
            cache = self.decoder.init_cache(memory, mask, prefixes=prefixes, input_offset=prompt)
            return sample_sequences(
                self.decoder.beam_step_fn(), batch_size=memory.shape[0], bos_id=self.config.bos_id,
                eos_id=self.config.eos_id, pad_id=self.config.pad_id, samples=samples,
                temperature=temperature, max_length=limit, device=memory.device, init_state=cache,
                generator=generator,
            )  # fmt: skip

    def sampled_states(self, features: EncoderFeatures, generator: torch.Generator | None = None) -> Tensor:
        """(B, 14) labels drawn from the reader: 1 with probability sigmoid(logit p - logit t), which
        is one half at the observation's threshold t and follows the classifier's odds around it."""
        return draw(self.observation_probabilities(features), self.thresholds, generator)

    @torch.no_grad()
    def describe(
        self, images: Tensor | EncoderFeatures, *, beam_size: int = 3, max_length: int | None = None
    ) -> Descriptions:
        """Table 7 for each study: Step-1 probabilities, labels and the 14 Step-3 descriptions.

        ``images`` may also be the image :class:`EncoderFeatures` a caller already computed (for the
        full report, say), so serving a study runs the image encoder once.
        """
        features = self.features(images)
        if features.attention_mask is not None:
            raise ValueError("describe takes images or image features, not text features")
        probabilities = self.observation_probabilities(features)
        labels = self.thresholded(probabilities)
        memory, _ = self.memory(features, labels)
        batch = memory.shape[0]
        every = torch.arange(NUM_OBSERVATIONS, device=memory.device).repeat(batch)  # study-major rows
        repeated = labels.repeat_interleave(NUM_OBSERVATIONS, dim=0)
        ids = self._beam(
            memory.repeat_interleave(NUM_OBSERVATIONS, dim=0), None, every, beam_size, max_length, repeated
        )
        per_study = [ids[b * NUM_OBSERVATIONS : (b + 1) * NUM_OBSERVATIONS] for b in range(batch)]
        return Descriptions(probabilities, labels, per_study)
