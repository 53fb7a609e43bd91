"""Frontal ribs: ten a side, posterior ribs and fainter anterior ones, drawn through rib levels.

Coordinates follow :mod:`.draw`; ``a`` is the distance from the midline (``|u|``).
"""

from __future__ import annotations

import numpy as np

from rrg_core.phantoms.anatomy import Body
from rrg_core.phantoms.draw import F32, Grid, clip, rows_between, soft_

RIBS = 10  # posterior ribs drawn a side
RIB_A0 = 0.1  # distance from the midline where a posterior rib peaks
RIB_MEDIAL = 1.5  # curvature of a posterior rib between the spine and its peak
RIB_WEIGHT, ANTERIOR_WEIGHT = 0.6, 0.22


class RibCage:
    """One side's ribs, all at once through a "rib level" coordinate (ribs are its half-integers).

    A posterior rib arches up from the spine to a peak ``RIB_A0`` from the midline, then curves
    down along the chest wall, the lower ribs more; the spacing widens downwards and varies a
    little rib to rib. At the wall each turns into its anterior rib, which slopes down towards the
    midline and fades where its costal cartilage begins. Levels come from tables (one lookup a
    pixel), so drawing every rib costs about what one would.
    """

    STEPS = 1024

    def __init__(self, geo: dict[str, float], b: Body, rng: np.random.Generator) -> None:
        self.cage, self.base = geo["cage"], geo["dome_base"]
        self.spacing = 0.048 * b.inspiration * (1 + 0.1 * b.hyperinflation)
        gaps = [
            self.spacing * (0.8 + 0.4 * i / (RIBS - 2)) * float(rng.uniform(0.88, 1.12))
            for i in range(RIBS - 1)
        ]
        self.peaks = np.concatenate([[0.075], 0.075 + np.cumsum(gaps)])  # v of each rib at its peak
        self.curve = (1.2, 1.8) if rng.random() < 0.5 else (1.1, 2.0)  # lateral curvature k0 + k1 v
        self.laterals = np.array([self.centre(i, self.cage) for i in range(RIBS)])
        self.posterior = self._table(self.peaks)
        self.anterior = self._table(self.laterals)

    def _table(self, centres: np.ndarray) -> tuple[float, float, np.ndarray]:
        """(y0, step, level) over y: level i at centre i; far off (no rib) beyond the ends."""
        sp = self.spacing
        y0, y1 = float(centres[0] - 2 * sp), float(centres[-1] + 2 * sp)
        ys = np.linspace(y0, y1, self.STEPS)
        knots = np.concatenate([[centres[0] - sp], centres, [centres[-1] + sp]])
        level = np.interp(ys, knots, np.arange(-1, RIBS + 1, dtype=np.float64))
        level[(ys < centres[0] - 0.6 * sp) | (ys > centres[-1] + 0.6 * sp)] = -100.5  # half-way: no rib
        return y0, (y1 - y0) / (self.STEPS - 1), level.astype(F32)

    def centre(self, index: int, a: float) -> float:
        """v of posterior rib ``index`` at distance ``a`` from the midline."""
        t = a - RIB_A0
        v = float(self.peaks[index])
        for _ in range(3):
            v = (
                float(self.peaks[index])
                + (self.curve[0] + self.curve[1] * v if t > 0 else RIB_MEDIAL) * t * t
            )
        return v

    def half_width(self, index: int) -> float:
        """Half the height of a posterior rib, in patient units."""
        return 0.21 * float(
            np.diff(self.peaks).mean() if index >= RIBS - 1 else self.peaks[index + 1] - self.peaks[index]
        )

    @staticmethod
    def _level(table: tuple[float, float, np.ndarray], y: np.ndarray) -> np.ndarray:
        y0, step, level = table
        y *= F32(1 / step)
        y -= F32(y0 / step)
        clip(y, F32(0), F32(RibCage.STEPS - 1), out=y)
        return np.take(level, y.astype(np.intp))

    def posterior_level(self, a: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Rib level of posterior ribs (rib i at i; -100.5 above the first and below the last)."""
        t = a - F32(RIB_A0)
        lateral = np.maximum(t, F32(0))
        lateral *= lateral
        t *= t  # the medial curvature applies to all, the extra lateral one beyond the peak
        lateral *= F32(self.curve[1]) * v + F32(self.curve[0] - RIB_MEDIAL)
        t *= F32(RIB_MEDIAL)
        t += lateral
        return self._level(self.posterior, np.subtract(v, t, out=t))

    def band(self, a: np.ndarray, v: np.ndarray, px: float, index: int | None = None) -> np.ndarray:
        # Rib i's level is i: its band is where the level is within 0.21 of an integer (or of i).
        """Coverage of the posterior ribs (or of rib ``index`` only), without the cage's limits."""
        level = self.posterior_level(a, v)
        level -= np.rint(level) if index is None else F32(index)
        return soft_(F32(0.21) - np.abs(level, out=level), 1.5 * px / self.spacing)

    def draw(self, a: np.ndarray, v: np.ndarray, px: float) -> np.ndarray:
        """Posterior and (fainter) anterior ribs of this side over a box, inside the rib cage."""
        ribs = self.band(a, v, px)
        x = F32(self.cage) - a
        y = F32(0.3) * x
        y += F32(0.45)
        y *= x
        level = self._level(self.anterior, np.subtract(v, y, out=y))
        level -= np.rint(level)
        ant = soft_(F32(0.16) - np.abs(level, out=level), 1.5 * px / self.spacing)
        ant *= clip(a * F32(12) - F32(1.2), F32(0), F32(ANTERIOR_WEIGHT / RIB_WEIGHT))
        np.maximum(ribs, ant, out=ribs)
        ribs *= soft_(x, 2 * px)
        rows = rows_between(v, self.base, 2.0)
        ribs[rows] *= soft_(F32(self.base + 0.03) - v[rows], 4 * px)
        return ribs


def draw_ribs(g: Grid, cages: dict[str, RibCage]) -> np.ndarray:
    """Both sides' ribs as a full-size coverage (times :data:`RIB_WEIGHT`)."""
    out = np.zeros((g.size, g.size), F32)
    for side, sign in (("right", -1.0), ("left", 1.0)):
        cage = cages[side]
        # From the spine's edge (the ribs fade into it) to the chest wall.
        box = g.box(
            min(sign * 0.035, sign * cage.cage), max(sign * 0.035, sign * cage.cage), 0.05, cage.base + 0.04
        )
        if box is not None:
            u, v = g.coords(box)
            np.maximum(out[box], cage.draw(u * F32(sign), v, g.px) * F32(RIB_WEIGHT), out=out[box])
    return out
