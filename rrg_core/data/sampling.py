"""A per-observation balanced sampler for DCRRG Step 1.

DCRRG pretrains its image encoder one observation at a time on data where most
observations are rare; drawing positives and negatives equally keeps the
classifier from learning "always negative". Labels follow the papers: uncertain
studies are dropped, unmentioned ones count as negative.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import Sampler

from rrg_core.errors import RRGError
from rrg_core.observations import Label, canonical_name, validate_labels

logger = logging.getLogger(__name__)


def split_by_label(labels: Sequence[Mapping[str, object]], observation: str) -> tuple[list[int], list[int]]:
    """Indices of positives and of negatives (negative or unmentioned) for ``observation``.

    Uncertain items are in neither list.
    """
    observation = canonical_name(observation)
    positives: list[int] = []
    negatives: list[int] = []
    for index, item in enumerate(labels):
        value = validate_labels(item)[observation]
        if value == Label.POSITIVE:
            positives.append(index)
        elif value != Label.UNCERTAIN:
            negatives.append(index)
    return positives, negatives


class BalancedObservationSampler(Sampler[int]):
    """Draws dataset indices with positives and negatives of one observation in equal numbers.

    Each epoch (each ``iter``) is a fresh shuffle from the sampler's generator, so a
    seed fixes the whole sequence of epochs. A class with fewer items than its half
    of the epoch is drawn with replacement, each of its items as evenly often as
    possible (whole shuffled passes, then a random part of one); the other class is
    a random subset without replacement.

    Args:
        labels: one label dict per dataset item (observation name -> 1/0/-1/None).
        observation: the observation to balance (any spelling :func:`canonical_name` accepts).
        num_samples: indices per epoch; default the number of eligible (non-uncertain) items.
        seed: seeds a private generator; ignored when ``generator`` is given.
        generator: a torch generator to draw from.
    """

    def __init__(
        self,
        labels: Sequence[Mapping[str, object]],
        observation: str,
        num_samples: int | None = None,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.observation = canonical_name(observation)
        positives, negatives = split_by_label(labels, self.observation)
        uncertain = len(labels) - len(positives) - len(negatives)
        if not positives or not negatives:
            raise RRGError(
                f"cannot balance {self.observation}: {len(positives)} positive, {len(negatives)} negative "
                f"(or unmentioned) and {uncertain} uncertain items; both classes are needed"
            )
        self.positives = torch.tensor(positives, dtype=torch.long)
        self.negatives = torch.tensor(negatives, dtype=torch.long)
        eligible = len(positives) + len(negatives)
        self.num_samples = eligible if num_samples is None else num_samples
        if (
            isinstance(self.num_samples, bool)
            or not isinstance(self.num_samples, int)
            or self.num_samples < 2
        ):
            raise RRGError(f"num_samples must be an integer of at least 2, got {num_samples!r}")
        if generator is None:
            generator = torch.Generator()
            # No seed: a random one, as torch's RandomSampler does.
            generator.manual_seed(
                int(torch.empty((), dtype=torch.int64).random_().item()) if seed is None else seed
            )
        self.generator = generator
        logger.info(
            "balanced sampler for %s: %d positive, %d negative, %d uncertain dropped, %d per epoch",
            self.observation,
            len(positives),
            len(negatives),
            uncertain,
            self.num_samples,
        )

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        half = self.num_samples // 2
        # An odd epoch gives its extra draw to a class chosen at random, so neither is favoured.
        extra = int(torch.randint(0, 2, (1,), generator=self.generator)) if self.num_samples % 2 else 0
        n_positive = half + extra
        drawn = torch.cat(
            [
                self._draw(self.positives, n_positive),
                self._draw(self.negatives, self.num_samples - n_positive),
            ]
        )
        order = torch.randperm(len(drawn), generator=self.generator)
        return iter(drawn[order].tolist())

    def _draw(self, pool: torch.Tensor, count: int) -> torch.Tensor:
        """``count`` indices from ``pool``: without replacement if it has enough, else in repeated passes."""
        passes, rest = divmod(count, len(pool))
        parts = [pool[torch.randperm(len(pool), generator=self.generator)] for _ in range(passes)]
        parts.append(pool[torch.randperm(len(pool), generator=self.generator)[:rest]])
        return torch.cat(parts)
