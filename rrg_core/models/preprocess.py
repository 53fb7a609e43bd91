"""What every checkpoint records of how its images are prepared: the ``preprocess`` block.

Training writes it into ``config.json`` and every consumer (the generators, the pipeline, the
retrieval index, attributions) builds its evaluation transform from it, so a model is never fed
images at another size or normalisation than it was trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rrg_core.checkpoints import Checkpoint, CheckpointError
from rrg_core.data.transforms import RadiographTransform, TransformConfig, build_transform
from rrg_core.errors import RRGError


@dataclass(frozen=True)
class Preprocess:
    """Image size (a side, or (height, width)), channels (1 grey, 3 grey repeated), normalisation
    (one value or one per channel) and the views per study the model takes (None: any number; a study
    with fewer views repeats them in turn)."""

    image_size: int | tuple[int, int]
    channels: int = 3
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    views: int | None = None

    def __post_init__(self) -> None:
        size = self.image_size
        object.__setattr__(self, "image_size", size if isinstance(size, int) else tuple(size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.views is not None and self.views < 1:
            raise RRGError(f"preprocess.views must be None or at least 1, got {self.views}")
        self.transform_config()  # refuses bad sizes, channels and normalisation now, by name

    def transform_config(self) -> TransformConfig:
        """The evaluation transform's settings: resize to ``image_size``, no crop."""
        return TransformConfig(
            resize=self.image_size, crop=None, mean=self.mean, std=self.std, channels=self.channels
        )

    def transform(self) -> RadiographTransform:
        """The evaluation transform: one grey view (1, H, W) in [0, 1] -> the model's input."""
        return build_transform(self.transform_config(), train=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``config.json``'s ``preprocess`` entry)."""
        data = dataclasses.asdict(self)
        for key in ("mean", "std"):
            data[key] = list(data[key])
        if not isinstance(self.image_size, int):
            data["image_size"] = list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`; an unknown key is refused by name, with the valid ones."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RRGError(f"unknown preprocess key(s) {unknown}; valid: {sorted(known)}")
        return cls(**data)


def read_preprocess(checkpoint: Checkpoint, legacy: Callable[[dict[str, Any]], Preprocess]) -> Preprocess:
    """The checkpoint's ``preprocess`` block; for a checkpoint written before the block existed (the
    app's demo cache of earlier versions), ``legacy`` translates what its config.json recorded then.
    Anything unreadable is a :class:`CheckpointError` naming the folder."""
    try:
        if "preprocess" in checkpoint.config:
            return Preprocess.from_dict(dict(checkpoint.config["preprocess"]))
        return legacy(checkpoint.config)
    except (RRGError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{checkpoint.folder}: config.json has no valid 'preprocess' ({error})"
        ) from None
