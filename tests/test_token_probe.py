"""The dVAE token probe: it finds findings that the tokens hold and nothing where they hold none."""

from __future__ import annotations

import pytest
import torch

from rrg_core.observations import OBSERVATIONS
from train.uar.token_probe import TokenProbe, probe_tokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CODES = 16
EFFUSION = OBSERVATIONS.index("Pleural Effusion")


def _studies(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token grids (n, 2, 4, 4) of codes 0..14; a study with an effusion shows code 15 in a 2 x 2
    block somewhere in one of its views (a finding spans a few cells)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, CODES - 1, (n, 2, 4, 4), generator=generator)
    labels = torch.zeros(n, len(OBSERVATIONS), dtype=torch.bool)
    labels[:, EFFUSION] = torch.rand(n, generator=generator) < 0.4
    for study in labels[:, EFFUSION].nonzero().flatten().tolist():
        view, row, column = torch.randint(0, 3, (3,), generator=generator).tolist()
        tokens[study, view % 2, row : row + 2, column : column + 2] = CODES - 1
    labels[:, OBSERVATIONS.index("No Finding")] = ~labels[:, EFFUSION]
    return tokens, labels


def test_probe_reads_a_finding_the_tokens_hold() -> None:
    train, val = _studies(400, 0), _studies(100, 1)
    result = probe_tokens(*train, *val, CODES, {"epochs": 5})
    assert result["per_observation"]["Pleural Effusion"] > 0.9
    assert result["per_observation"]["Cardiomegaly"] is None  # one class only in the val split
    assert result["val_findings_auroc"] > 0.9


def test_probe_finds_nothing_where_the_labels_are_not_in_the_tokens() -> None:
    tokens, labels = _studies(400, 0)
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(2))]
    val = _studies(200, 1)
    result = probe_tokens(tokens, shuffled, *val, CODES, {"epochs": 5})
    assert 0.3 < result["val_findings_auroc"] < 0.7


def test_probe_is_seeded_and_handles_empty_splits() -> None:
    train, val = _studies(64, 0), _studies(32, 1)
    first = probe_tokens(*train, *val, CODES, {"epochs": 1}, seed=3)
    assert first == probe_tokens(*train, *val, CODES, {"epochs": 1}, seed=3)
    assert probe_tokens(train[0][:0], train[1][:0], *val, CODES) == {}


def test_probe_network_shapes() -> None:
    probe = TokenProbe(CODES, views=2, width=8)
    assert probe(torch.zeros(3, 2, 5, 5, dtype=torch.long)).shape == (3, len(OBSERVATIONS))
