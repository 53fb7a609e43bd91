"""The pointing game (Zhang et al. 2016): does a heatmap's hottest point fall inside the finding?

A trial is one heatmap and one finding mask. It is a hit when the map's maximum lies in the mask;
when several points share the maximum (a flat map, a plateau), the hit is the share of them that
lie in the mask: the expected result of breaking the tie at random. So a constant map scores
exactly the uniform baseline.

``tolerance`` (pixels of the mask, 0 by default) grows the mask by a disc of that radius first, as
Zhang et al. allow 15 px on 224 px images: a coarse map's peak sits at a cell centre, and a small
finding (a nodule, a rib fracture) can lie a few pixels beside it. The baseline grows with it.

Maps coarser than their mask (UAR's token grid over a 64 px image, say) are played on the map's
own grid: a cell counts as inside the finding when any of its pixels is (cells span the pixel
ranges ``floor(i * H / h)`` to ``ceil((i + 1) * H / h)``, as adaptive pooling cuts them).

The **uniform baseline** of a trial is the hit rate of a map whose hottest point is uniform over
the grid: the share of points (pixels or cells) inside the (grown) mask, computed exactly from
integer counts. Averaged over the same trials it is the chance level the measured rate is
compared with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from rrg_core.errors import RRGError
from rrg_core.explain.overlay import ArrayLike


def _tensor(value: ArrayLike, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise RRGError(f"{what} must be a torch tensor or a numpy array, got {type(value).__name__}")


def _bool_mask(mask: ArrayLike) -> Tensor:
    tensor = _tensor(mask, "the mask")
    if tensor.dtype != torch.bool:
        raise RRGError(f"a finding mask must be boolean, got {tensor.dtype}")
    if tensor.dim() < 2:
        raise RRGError(f"a finding mask must be (H, W) or (..., H, W), got shape {tuple(tensor.shape)}")
    return tensor


def grow_mask(mask: ArrayLike, tolerance: int) -> Tensor:
    """The boolean mask (..., H, W) grown by a disc of radius ``tolerance`` pixels (0: unchanged)."""
    tensor = _bool_mask(mask)
    if int(tolerance) != tolerance or tolerance < 0:
        raise RRGError(f"the pointing tolerance must be a whole number of pixels >= 0, got {tolerance}")
    if tolerance == 0:
        return tensor.clone()
    radius = int(tolerance)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disc = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).float()[None, None]
    flat = tensor.reshape(-1, 1, *tensor.shape[-2:]).float()
    grown = functional.conv2d(flat, disc, padding=radius) > 0.5
    return grown.reshape(tensor.shape)


def cell_mask(mask: ArrayLike, grid: tuple[int, int]) -> Tensor:
    """A boolean mask (..., H, W) on a coarser grid (..., h, w): a cell is in when any of its pixels is."""
    tensor = _bool_mask(mask)
    height, width = tensor.shape[-2:]
    h, w = grid
    if h < 1 or w < 1 or h > height or w > width:
        raise RRGError(f"a {h}x{w} grid does not fit a {height}x{width} mask")
    if (h, w) == (height, width):
        return tensor.clone()
    flat = tensor.reshape(-1, 1, height, width).float()
    pooled = functional.adaptive_max_pool2d(flat, (h, w)) > 0
    return pooled.reshape(*tensor.shape[:-2], h, w)


def _cells(heat_shape: tuple[int, ...], mask: ArrayLike, tolerance: int) -> Tensor:
    """The mask, grown by ``tolerance``, on the grid of a map of ``heat_shape``; refuses misfits."""
    bool_mask = _bool_mask(mask)
    if len(heat_shape) != bool_mask.dim() or heat_shape[:-2] != tuple(bool_mask.shape[:-2]):
        raise RRGError(
            f"heatmap {heat_shape} and mask {tuple(bool_mask.shape)} must both be (..., h, w) with the "
            "same leading dimensions (e.g. (H, W) and (H, W), or (views, h, w) and (views, H, W))"
        )
    return cell_mask(grow_mask(bool_mask, tolerance), (heat_shape[-2], heat_shape[-1]))


def pointing_hit(heatmap: ArrayLike, mask: ArrayLike, *, tolerance: int = 0) -> float:
    """1.0 when the hottest point of ``heatmap`` lies in ``mask``, 0.0 when not; with ties, the share
    of the tied maxima inside (module docstring). Shapes (..., h, w) and (..., H, W), as :func:`cell_mask`."""
    heat = _tensor(heatmap, "the heatmap").float()
    if heat.dim() < 2 or heat.numel() == 0 or not torch.isfinite(heat).all():
        raise RRGError("the heatmap must be a non-empty (..., h, w) array of finite values")
    cells = _cells(tuple(heat.shape), mask, tolerance)
    if not cells.any():
        raise RRGError("the finding mask is empty: there is nothing to point at")
    hottest = heat == heat.max()
    return int((hottest & cells).sum()) / int(hottest.sum())


def uniform_hit_rate(
    heatmap_shape: tuple[int, ...] | torch.Size, mask: ArrayLike, *, tolerance: int = 0
) -> float:
    """The exact hit rate of a map of ``heatmap_shape`` whose hottest point is uniform: the share of its
    points inside ``mask`` (grown by ``tolerance``, pooled to the map's grid when coarser)."""
    shape = tuple(int(n) for n in heatmap_shape)
    if len(shape) < 2 or min(shape) < 1:
        raise RRGError(f"a heatmap shape must be (..., h, w) with no empty dimension, got {shape}")
    cells = _cells(shape, mask, tolerance)
    return int(cells.sum()) / cells.numel()  # integer counts: exact, no float32 rounding


@dataclass(frozen=True)
class PointingTrial:
    """One trial: a study, the finding (observation) pointed at, where (a view, or a word and its
    position), the hit (0-1) and the uniform baseline of the same trial."""

    study_id: str
    finding: str
    where: str
    hit: float
    uniform: float


def play(
    study_id: str, finding: str, where: str, heatmap: ArrayLike, mask: ArrayLike, *, tolerance: int = 0
) -> PointingTrial:
    """Score one trial: :func:`pointing_hit` and :func:`uniform_hit_rate` of ``heatmap`` on ``mask``."""
    hit = pointing_hit(heatmap, mask, tolerance=tolerance)
    uniform = uniform_hit_rate(tuple(_tensor(heatmap, "the heatmap").shape), mask, tolerance=tolerance)
    return PointingTrial(study_id, finding, where, hit, uniform)


@dataclass(frozen=True)
class PointingScore:
    """Trials, hit rate and uniform baseline rate of a group of trials (nan when there are none)."""

    trials: int
    rate: float
    uniform: float

    @property
    def lift(self) -> float:
        """How many times the uniform baseline the rate is (nan without trials or baseline)."""
        return self.rate / self.uniform if self.trials and self.uniform > 0 else float("nan")


def score(trials: Iterable[PointingTrial]) -> PointingScore:
    """The mean hit and the mean uniform baseline of ``trials``."""
    trials = list(trials)
    if not trials:
        return PointingScore(0, float("nan"), float("nan"))
    return PointingScore(
        len(trials),
        float(np.mean([t.hit for t in trials])),
        float(np.mean([t.uniform for t in trials])),
    )


@dataclass
class PointingReport:
    """A pointing game over a data split: every trial, with the overall and per-finding scores.

    ``skipped`` counts what could not be played and why (e.g. a word naming a finding the study
    does not have).
    """

    method: str
    trials: list[PointingTrial]
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    tolerance: int = 0

    @property
    def overall(self) -> PointingScore:
        """All trials together."""
        return score(self.trials)

    def by_finding(self) -> dict[str, PointingScore]:
        """Per finding, in name order."""
        names = sorted({t.finding for t in self.trials})
        return {name: score(t for t in self.trials if t.finding == name) for name in names}

    def to_dict(self) -> dict:
        """A JSON-ready summary (no per-trial rows)."""
        overall = self.overall
        return {
            "method": self.method,
            "tolerance": self.tolerance,
            "trials": overall.trials,
            "rate": overall.rate,
            "uniform": overall.uniform,
            "lift": overall.lift,
            "by_finding": {
                name: {"trials": s.trials, "rate": s.rate, "uniform": s.uniform}
                for name, s in self.by_finding().items()
            },
            "skipped": dict(self.skipped),
            "seconds": self.seconds,
        }

    def format_table(self) -> str:
        """A Markdown table: per finding and overall, trials, hit rate, uniform baseline, lift."""
        lines = [
            f"pointing game, {self.method}" + (f", tolerance {self.tolerance} px" if self.tolerance else ""),
            "",
            "| finding | trials | hit rate | uniform | lift |",
            "|---|---:|---:|---:|---:|",
        ]
        rows = [*self.by_finding().items(), ("all", self.overall)]
        for name, s in rows:
            lines.append(f"| {name} | {s.trials} | {s.rate:.3f} | {s.uniform:.3f} | {s.lift:.2f} |")
        if self.skipped:
            lines.append("")
            lines.append("not played: " + ", ".join(f"{why} {n}" for why, n in sorted(self.skipped.items())))
        return "\n".join(lines)
