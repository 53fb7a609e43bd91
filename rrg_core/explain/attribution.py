"""Captum attributions of DCRRG's Step-1 head: which pixels make an observation positive.

For one grey view and one of the 14 observations, the attribution target is the Step-1 classifier's
**margin** (positive logit minus negative logit, the log-odds of "positive") or its positive logit,
as a function of the image. Three methods:

- ``integrated_gradients``: IG (Sundararajan et al. 2017) from a black image, ``ig_steps`` steps;
- ``gradcam``: Grad-CAM (``LayerGradCam``) on one block of the image encoder, by default its
  ``cam_layer``: ResNet-50's ``layer4``, and for EfficientNet-Lite0 ``blocks.4``, the last block
  before the final stride (8 x 8 at 128 px) rather than the 1x1 head whose output the pooled
  feature averages. With the head, pointing games on phantoms (``python -m train pointing-game``)
  hit findings 1.2-1.3 times as often as a uniform map; with ``blocks.4``, 4.3 times on the
  1,000-study demo set and 6.1 times on IU-Phantom test. ``gradcam_layer`` picks another block
  ("" for the body's output);
- ``occlusion``: a black square of ``occlusion_window`` pixels slid with ``occlusion_stride``
  (by default 1/8 of the input side, not overlapping: 64 forward passes; a stride of half the
  window gives smoother maps for about 3.5 times the cost).

Attributions are taken on the resized grey image in [0, 1] (the model's input size), so black is
the baseline of IG and occlusion and each map is one channel; grey-to-RGB and the encoder's
normalisation happen inside the attributed function. Each map keeps its evidence *for* the
observation (negative values to 0), is stretched to the view's own size and scaled to [0, 1].

Captum adds hooks to the model while it runs, so one :class:`ObservationAttributor` runs one
attribution at a time (a lock): concurrent web requests wait instead of mixing their hooks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from rrg_core.errors import RRGError
from rrg_core.explain.overlay import (
    DEFAULT_ALPHA,
    DEFAULT_CMAP,
    ArrayLike,
    normalise_map,
    overlay,
    png_bytes,
    resize_map,
)
from rrg_core.models.dcrrg.dcclip import DCCLIP
from rrg_core.models.image_encoders import ImageEncoder
from rrg_core.observations import canonical_name, observation_index

if TYPE_CHECKING:
    from rrg_core.generators.dcrrg import DCRRGGenerator

METHODS: tuple[str, ...] = ("integrated_gradients", "gradcam", "occlusion")
_METHOD_ALIASES = {
    "ig": "integrated_gradients",
    "integrated-gradients": "integrated_gradients",
    "integratedgradients": "integrated_gradients",
    "grad-cam": "gradcam",
    "grad_cam": "gradcam",
    "layergradcam": "gradcam",
}
TARGETS: tuple[str, ...] = ("margin", "positive")


@dataclass(frozen=True)
class AttributionSettings:
    """Cost knobs. IG: ``ig_steps`` interpolation steps, ``ig_batch`` of them per pass. Occlusion:
    window and stride in model-input pixels (None: 1/8 of the input side, and the window),
    ``occlusion_batch`` occluded copies per pass. Grad-CAM: ``gradcam_layer``, a dotted module name
    inside the encoder's body (None: the encoder's ``cam_layer``; "": the body's output)."""

    ig_steps: int = 24
    ig_batch: int = 12
    occlusion_window: int | None = None
    occlusion_stride: int | None = None
    occlusion_batch: int = 32
    gradcam_layer: str | None = None

    def __post_init__(self) -> None:
        for name in ("ig_steps", "ig_batch", "occlusion_batch"):
            if int(getattr(self, name)) < 1:
                raise RRGError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("occlusion_window", "occlusion_stride"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise RRGError(f"{name} must be at least 1 pixel, got {value}")


@dataclass(frozen=True)
class Attribution:
    """One attribution map: ``heatmap`` (H, W) in [0, 1] at the view's size, the hottest point 1
    (all zeros when nothing speaks for the observation); ``grid``, the same at the method's own
    resolution (Grad-CAM: its block's grid, e.g. 8 x 8 for a 128 px input; IG and occlusion: the
    model input). ``probability``: the Step-1 probability that the observation is positive on this
    view; ``seconds``: the time the attribution took."""

    observation: str
    method: str
    target: str
    heatmap: Tensor
    grid: Tensor
    probability: float
    seconds: float

    def overlay(
        self, image: ArrayLike, *, alpha: float = DEFAULT_ALPHA, cmap: str = DEFAULT_CMAP
    ) -> np.ndarray:
        """The map over ``image`` (the view it was computed on): (H, W, 3) uint8."""
        return overlay(image, self.heatmap, alpha=alpha, cmap=cmap, normalise=False)

    def png(self, image: ArrayLike, *, alpha: float = DEFAULT_ALPHA, cmap: str = DEFAULT_CMAP) -> bytes:
        """:meth:`overlay` as PNG bytes."""
        return png_bytes(self.overlay(image, alpha=alpha, cmap=cmap))


def method_name(method: str) -> str:
    """The canonical method name for ``method`` (aliases: ig, grad-cam, ...); RRGError otherwise."""
    key = str(method).strip().lower()
    key = _METHOD_ALIASES.get(key, key)
    if key not in METHODS:
        raise RRGError(f"unknown attribution method {method!r}; expected one of: {', '.join(METHODS)}")
    return key


def grad_cam_layer(encoder: ImageEncoder, name: str | None = None) -> nn.Module:
    """The block of ``encoder.body`` that Grad-CAM reads: ``name`` (dotted, e.g. "blocks.4"), by
    default the encoder's ``cam_layer``; "" is the body itself, whose output is the feature map."""
    name = encoder.cam_layer if name is None else name.strip()
    try:
        return encoder.body.get_submodule(name)
    except AttributeError:
        top = ", ".join(n for n, _ in encoder.body.named_children())
        raise RRGError(
            f"{encoder.name} has no block {name!r} for Grad-CAM; give a dotted name inside its body "
            f"(top level: {top}) or an empty name for the body's output"
        ) from None


class ObservationScore(nn.Module):
    """The attributed function: grey images (N, 1, S, S) in [0, 1] -> (N,) Step-1 score of one observation."""

    def __init__(self, clip: DCCLIP, index: int, target: str) -> None:
        super().__init__()
        self.clip = clip
        self.index = index
        self.target = target
        encoder = clip.image_encoder
        self.register_buffer("mean", torch.tensor(encoder.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(encoder.std, dtype=torch.float32).view(1, -1, 1, 1))

    def logits(self, grey: Tensor) -> Tensor:
        """(N, 2) Step-1 logits (negative, positive) of the observation."""
        images = (grey.expand(-1, 3, -1, -1) - self.mean) / self.std
        pooled, _ = self.clip.encode_image(images)
        index = torch.full((grey.shape[0],), self.index, dtype=torch.long, device=grey.device)
        return self.clip.observation_logits(pooled, "image", index)

    def forward(self, grey: Tensor) -> Tensor:
        logits = self.logits(grey)
        return logits[:, 1] - logits[:, 0] if self.target == "margin" else logits[:, 1]


class ObservationAttributor:
    """Captum attributions of a DCCLIP's Step-1 image head (module docstring).

    Args:
        clip: the trained DCCLIP (a DCRRG's ``model.clip``); it is put in eval mode.
        image_size: the model's input side or (height, width); None for the encoder's own.
        device: where attributions run (the model is moved there).
        settings: default cost knobs, overridable per call.
    """

    def __init__(
        self,
        clip: DCCLIP,
        *,
        image_size: int | tuple[int, int] | list[int] | None = None,
        device: str | torch.device = "cpu",
        settings: AttributionSettings | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.clip = clip.to(self.device).eval()
        size = clip.image_encoder.input_size if image_size is None else image_size
        self.size: tuple[int, int] = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.settings = settings or AttributionSettings()
        grad_cam_layer(self.clip.image_encoder, self.settings.gradcam_layer)  # an unknown block fails here
        self._lock = threading.Lock()

    @classmethod
    def from_generator(
        cls, generator: DCRRGGenerator, settings: AttributionSettings | None = None
    ) -> ObservationAttributor:
        """From a :class:`~rrg_core.generators.DCRRGGenerator`: its model, device and input size."""
        model = getattr(generator, "model", None)
        transform = getattr(generator, "transform", None)
        if not isinstance(getattr(model, "clip", None), DCCLIP) or transform is None:
            raise RRGError("attributions need a DCRRG generator (a model with a DCCLIP and its transform)")
        return cls(
            model.clip, image_size=transform.config.output_size, device=generator.device, settings=settings
        )

    # -- inputs ----------------------------------------------------------------------------------

    def model_input(self, view: ArrayLike) -> tuple[Tensor, tuple[int, int]]:
        """A grey view ((1, H, W) or (H, W), floats in [0, 1]) -> (1, 1, S, S) on the device, and (H, W)."""
        tensor = torch.as_tensor(view.detach() if isinstance(view, Tensor) else np.asarray(view))
        if tensor.dim() == 3 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.dim() != 2 or min(tensor.shape) < 8:
            raise RRGError(
                "attributions take one grey view, (1, H, W) or (H, W) of at least 8 pixels; "
                f"got {tuple(tensor.shape)}"
            )
        if tensor.dtype == torch.uint8:
            tensor = tensor.float() / 255.0
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise RRGError("the view must hold finite float values in [0, 1] (or uint8)")
        if tensor.min() < -1e-3 or tensor.max() > 1 + 1e-3:
            raise RRGError("the view's values must lie in [0, 1], as load_image gives them")
        original = (int(tensor.shape[0]), int(tensor.shape[1]))
        grey = tensor.float().to(self.device)[None]
        grey = tvf.resize(grey, list(self.size), interpolation=InterpolationMode.BILINEAR, antialias=True)
        return grey.clamp(0.0, 1.0)[None], original

    # -- attributions ----------------------------------------------------------------------------

    def attribute(
        self,
        view: ArrayLike,
        observation: str,
        method: str = "gradcam",
        *,
        target: str = "margin",
        settings: AttributionSettings | None = None,
    ) -> Attribution:
        """The ``method`` attribution of ``observation`` on one grey view (see the module docstring)."""
        name = canonical_name(observation)
        method = method_name(method)
        if target not in TARGETS:
            raise RRGError(f"unknown attribution target {target!r}; expected one of: {', '.join(TARGETS)}")
        settings = settings or self.settings
        grey, original = self.model_input(view)
        score = ObservationScore(self.clip, observation_index(name), target).to(self.device)
        with self._lock:
            started = time.perf_counter()
            raw = _METHOD_FUNCTIONS[method](self, score, grey, settings)
            with torch.no_grad():
                probability = float(score.logits(grey).softmax(dim=-1)[0, 1])
            seconds = time.perf_counter() - started
        raw = raw.detach().float().cpu()
        heatmap = normalise_map(resize_map(raw, original))
        return Attribution(name, method, target, heatmap, normalise_map(raw), probability, seconds)

    def attribute_all(
        self,
        view: ArrayLike,
        observation: str,
        *,
        target: str = "margin",
        settings: AttributionSettings | None = None,
    ) -> dict[str, Attribution]:
        """Every method's attribution of one observation on one view, by method name."""
        return {m: self.attribute(view, observation, m, target=target, settings=settings) for m in METHODS}


def _integrated_gradients(
    attributor: ObservationAttributor, score: ObservationScore, grey: Tensor, settings: AttributionSettings
) -> Tensor:
    from captum.attr import IntegratedGradients

    attributions = IntegratedGradients(score).attribute(
        grey.requires_grad_(True), baselines=0.0, n_steps=settings.ig_steps,
        internal_batch_size=settings.ig_batch,
    )  # fmt: skip
    return attributions[0, 0]


def _grad_cam(
    attributor: ObservationAttributor, score: ObservationScore, grey: Tensor, settings: AttributionSettings
) -> Tensor:
    from captum.attr import LayerGradCam

    layer = grad_cam_layer(attributor.clip.image_encoder, settings.gradcam_layer)
    cam = LayerGradCam(score, layer).attribute(grey.requires_grad_(True), relu_attributions=True)
    return cam[0, 0]  # (h, w): the caller stretches it to the view


def _occlusion(
    attributor: ObservationAttributor, score: ObservationScore, grey: Tensor, settings: AttributionSettings
) -> Tensor:
    from captum.attr import Occlusion

    side = min(grey.shape[-2:])
    window = min(settings.occlusion_window or max(side // 8, 1), side)
    stride = settings.occlusion_stride or window
    with torch.no_grad():
        attributions = Occlusion(score).attribute(
            grey, sliding_window_shapes=(1, window, window), strides=(1, stride, stride), baselines=0.0,
            perturbations_per_eval=settings.occlusion_batch,
        )  # fmt: skip
    return attributions[0, 0]


_METHOD_FUNCTIONS = {
    "integrated_gradients": _integrated_gradients,
    "gradcam": _grad_cam,
    "occlusion": _occlusion,
}
