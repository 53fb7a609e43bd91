"""DCRRG checkpoints: what training saves, serving loads back unchanged."""

import dataclasses

import pytest
import torch

from rrg_core.checkpoints import CheckpointError, save_checkpoint
from rrg_core.data.vocab import Vocabulary
from rrg_core.models.dcrrg import DCRRG, DCRRGConfig, default_preprocess
from rrg_core.models.dcrrg.config import DCCLIPConfig
from rrg_core.models.dcrrg.io import config_from_dict, config_to_dict, load_dcrrg, save_dcrrg

VOCAB = Vocabulary.build(["the heart is normal . no effusion ."], min_count=1)


def _tiny_model() -> DCRRG:
    clip = DCCLIPConfig(pretrained=None, text_encoder="tiny-random", projection_dim=16, projection_hidden=32)
    config = DCRRGConfig(vocab_size=len(VOCAB), clip=clip, d_model=32, d_ff=64, n_prefix=2, max_length=12)
    return DCRRG(config)


def test_config_round_trip():
    config = _tiny_model().config
    assert config_from_dict(config_to_dict(config)) == config


def test_save_and_load_give_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    model = _tiny_model().eval()
    model.set_thresholds([0.3] * 14)
    preprocess = default_preprocess(model.config, 64)
    extra = {"steps": [1, 2]}
    save_dcrrg(model, tmp_path / "run", vocab=VOCAB, preprocess=preprocess, extra_config=extra, preset="demo")
    loaded, checkpoint = load_dcrrg(tmp_path / "run")
    assert checkpoint.config["steps"] == [1, 2] and checkpoint.vocab == VOCAB
    assert loaded.config.clip.pretrained is None
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(
            model.clip.observation_probabilities(images), loaded.clip.observation_probabilities(images)
        )
    assert torch.equal(loaded.thresholds, torch.full((14,), 0.3))


def test_other_kinds_and_foreign_weights_are_refused(tmp_path):
    save_checkpoint(tmp_path / "uar", kind="uar", config={}, state_dict={"w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="expected 'dcrrg'"):
        load_dcrrg(tmp_path / "uar")
    model = _tiny_model()
    config = {"model": config_to_dict(dataclasses.replace(model.config, d_model=48, d_ff=96))}
    save_checkpoint(tmp_path / "bad", kind="dcrrg", config=config, state_dict=model.state_dict())
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_dcrrg(tmp_path / "bad")
