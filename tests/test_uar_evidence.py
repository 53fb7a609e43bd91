"""The UAR findings head's evidence maps: gradient x input over the visual tokens, per observation,
what the app shows for a draft's finding word; and how they travel to the page and the store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rrg_core.data.finding_words import named_observation
from rrg_core.errors import RRGError
from rrg_core.generators.uar import UARExplanation
from rrg_core.models.uar import UAR, UARConfig, findings_evidence
from rrg_core.observations import NUM_OBSERVATIONS, OBSERVATIONS
from rrg_core.review_result import TokenAttention

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(**changes: object) -> UAR:
    fields = dict(
        vocab_size=13, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32, n_basis=32,
        max_length=8, image_size=32, downsample=8, codebook_size=8, lambda_findings=1.0,
    )  # fmt: skip
    torch.manual_seed(0)
    return UAR(UARConfig(**{**fields, **changes})).eval()


def test_without_an_encoder_each_cell_gets_its_exact_share_of_the_logit() -> None:
    """With no encoder layer and no CRA the head is linear in the cells plus a max: a cell's evidence
    is its features times the mean weights over L, plus the max weights where it is the maximum."""
    model = _model(n_encoder_layers=0, use_cra=False, use_global_loss=False)
    tokens = torch.randint(0, 8, (2, 2, 4, 4))
    maps = findings_evidence(model, tokens)
    assert maps.shape == (2, NUM_OBSERVATIONS, 2, 4, 4)
    with torch.no_grad():
        encoding = model.encode(tokens)
        features, memory = encoding.features, encoding.memory  # (B, L, d)
        d, cells = memory.shape[-1], memory.shape[1]
        weights = model.findings_head.weight  # (14, 2d): mean part, then max part
        is_max = torch.nn.functional.one_hot(memory.argmax(dim=1), cells).transpose(1, 2).float()
        mean_part = features @ weights[:, :d].T / cells  # (B, L, 14)
        max_part = (features * is_max) @ weights[:, d:].T
        expected = (mean_part + max_part).transpose(1, 2).unflatten(-1, (2, 4, 4))
    assert torch.allclose(maps, expected, atol=1e-5)


def test_each_study_gets_its_own_maps_and_a_subset_keeps_its_order() -> None:
    model = _model()
    tokens = torch.randint(0, 8, (3, 2, 4, 4))
    together = findings_evidence(model, tokens)
    alone = findings_evidence(model, tokens[1:2])
    assert torch.allclose(together[1:2], alone, atol=1e-5)
    chosen = findings_evidence(model, tokens, [9, 2])
    assert torch.allclose(chosen, together[:, [9, 2]], atol=1e-5)
    assert not torch.allclose(together[:, 0], together[:, 1])  # observations differ


def test_evidence_needs_the_head_and_real_observations() -> None:
    with pytest.raises(RRGError, match="no findings head"):
        findings_evidence(_model(lambda_findings=0.0), torch.randint(0, 8, (1, 2, 4, 4)))
    for wrong in ([], [14], [-1]):
        with pytest.raises(RRGError, match="indices"):
            findings_evidence(_model(), torch.randint(0, 8, (1, 2, 4, 4)), wrong)


def test_a_finding_word_points_at_its_observations_map() -> None:
    words = ["there", "is", "a", "small", "left", "pleural", "effusion", ".", "no", "pneumothorax", "."]
    evidence = torch.randn(NUM_OBSERVATIONS, 2, 4, 4)
    explanation = UARExplanation(" ".join(words), words, torch.rand(len(words), 2, 4, 4), evidence=evidence)
    observation, found = explanation.word_evidence(6)
    assert observation == "Pleural Effusion" == named_observation(words, 6)
    assert torch.equal(found, evidence[OBSERVATIONS.index("Pleural Effusion")])
    assert explanation.word_evidence(9)[0] == "Pneumothorax"
    assert explanation.word_evidence(0) is None and named_observation(words, 0) is None
    assert UARExplanation(explanation.text, words, explanation.attention).word_evidence(6) is None


def test_evidence_travels_with_a_saved_result_and_old_results_still_read() -> None:
    maps, evidence = np.random.rand(3, 2, 4, 4), np.random.randn(NUM_OBSERVATIONS, 2, 4, 4)
    saved = TokenAttention(["a", "b", "c"], maps.astype(np.float32), evidence.astype(np.float32)).to_dict()
    back = TokenAttention.from_dict(saved)
    assert back.evidence.shape == (NUM_OBSERVATIONS, 2, 4, 4)
    assert np.allclose(back.evidence, evidence, atol=1e-5)
    del saved["evidence"]  # a result stored before evidence maps existed
    assert TokenAttention.from_dict(saved).evidence is None
    saved["evidence"] = evidence[:3].tolist()
    with pytest.raises(RRGError, match="evidence maps"):
        TokenAttention.from_dict(saved)
