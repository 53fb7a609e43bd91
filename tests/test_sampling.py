"""The per-observation balanced sampler of DCRRG Step 1."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from rrg_core.data.sampling import BalancedObservationSampler, split_by_label
from rrg_core.errors import RRGError

OBS = "Pleural Effusion"


def _labels(positive: int, negative: int, unmentioned: int, uncertain: int) -> list[dict]:
    """Items in blocks: positives, negatives, unmentioned (key absent), uncertain."""
    return (
        [{OBS: 1.0, "Edema": 0.0}] * positive
        + [{OBS: 0.0}] * negative
        + [{"Edema": 1.0}] * unmentioned
        + [{OBS: -1.0}] * uncertain
    )


def test_split_by_label_drops_uncertain_and_counts_unmentioned_as_negative():
    positives, negatives = split_by_label(_labels(2, 3, 4, 5), OBS)
    assert positives == [0, 1]
    assert negatives == list(range(2, 9))


def test_positive_share_is_about_half_and_uncertain_never_drawn():
    labels = _labels(positive=5, negative=60, unmentioned=30, uncertain=20)
    uncertain = set(range(95, 115))
    sampler = BalancedObservationSampler(labels, OBS, seed=0)
    assert len(sampler) == 95  # eligible items
    drawn = [index for _ in range(40) for index in sampler]
    assert len(drawn) == 40 * 95
    assert not uncertain & set(drawn)
    share = sum(index < 5 for index in drawn) / len(drawn)
    assert abs(share - 0.5) < 0.01
    # Every positive (the minority, drawn with replacement) is used.
    assert set(range(5)) <= set(drawn)


def test_each_epoch_is_balanced_and_the_minority_repeats_evenly():
    sampler = BalancedObservationSampler(_labels(3, 17, 0, 0), OBS, seed=1)
    epoch = list(sampler)
    counts = Counter(epoch)
    assert sum(counts[i] for i in range(3)) == 10
    assert sorted(counts[i] for i in range(3)) == [3, 3, 4]
    # The majority is drawn without replacement when it has enough items.
    assert all(counts[i] <= 1 for i in range(3, 20))


def test_deterministic_under_a_seed_and_reshuffled_each_epoch():
    labels = _labels(10, 30, 5, 5)
    first = BalancedObservationSampler(labels, OBS, seed=7)
    second = BalancedObservationSampler(labels, OBS, seed=7)
    epochs = [list(first) for _ in range(3)]
    assert epochs == [list(second) for _ in range(3)]
    assert epochs[0] != epochs[1]
    assert list(BalancedObservationSampler(labels, OBS, seed=8)) != epochs[0]


def test_generator_and_num_samples():
    generator = torch.Generator().manual_seed(5)
    sampler = BalancedObservationSampler(_labels(4, 4, 0, 0), OBS, num_samples=101, generator=generator)
    assert sampler.generator is generator
    epoch = list(sampler)
    assert len(epoch) == len(sampler) == 101
    assert sum(index < 4 for index in epoch) in (50, 51)


def test_observation_spelling_is_forgiven():
    labels = [{"pleural_effusion": 1}, {"PLEURAL EFFUSION": 0}, {"Pleural Effusion": None}]
    sampler = BalancedObservationSampler(labels, "pleural effusion", seed=0)
    assert sampler.observation == OBS
    assert set(sampler) == {0, 1, 2}


def test_works_with_a_dataloader():
    labels = _labels(3, 9, 0, 0)
    loader = DataLoader(
        list(range(12)), batch_size=4, sampler=BalancedObservationSampler(labels, OBS, seed=0)
    )
    batches = list(loader)
    assert sum(len(batch) for batch in batches) == 12


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (_labels(0, 5, 2, 3), "0 positive, 7 negative"),
        (_labels(4, 0, 0, 3), "4 positive, 0 negative"),
    ],
)
def test_one_class_missing_is_an_error_naming_observation_and_counts(labels, words):
    with pytest.raises(RRGError, match=words) as caught:
        BalancedObservationSampler(labels, OBS, seed=0)
    assert OBS in str(caught.value) and "3 uncertain" in str(caught.value)


def test_bad_arguments():
    with pytest.raises(RRGError, match="unknown observation"):
        BalancedObservationSampler(_labels(2, 2, 0, 0), "Pneumonitis")
    with pytest.raises(RRGError, match="num_samples"):
        BalancedObservationSampler(_labels(2, 2, 0, 0), OBS, num_samples=1)
    with pytest.raises(RRGError, match="not one of"):
        BalancedObservationSampler([{OBS: 2}, {OBS: 0}], OBS)
