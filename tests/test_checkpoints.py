"""Checkpoint folders: round trips, tied weights, refusals of doubtful files, atomic replace, lookup."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from torch import nn

from rrg_core import __version__, checkpoints
from rrg_core.checkpoints import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_hash,
    data_fingerprint,
    find_checkpoints,
    load_checkpoint,
    register_kind,
    save_checkpoint,
    update_metrics,
)
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import DatasetError, RRGError


class Tiny(nn.Module):
    """Parameters and buffers of several dtypes, as real models have."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)  # brings an int64 num_batches_tracked buffer
        self.register_buffer("half_table", torch.randn(2, 5).to(torch.bfloat16))
        self.register_buffer("positions", torch.arange(6, dtype=torch.int64))


class TiedLM(nn.Module):
    """Output layer sharing the embedding matrix, as in many report decoders."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.out = nn.Linear(4, 7, bias=False)
        self.out.weight = self.embed.weight


@dataclasses.dataclass
class TinyConfig:
    hidden: int = 3
    layers: tuple[int, ...] = (1, 2)
    dropout: float = 0.1


def _save(folder: Path, module: nn.Module | None = None, **overrides) -> Path:
    """Save a checkpoint with small defaults that each test overrides as it needs."""
    arguments = {"kind": "dcrrg", "config": {"hidden": 3}, "state_dict": (module or Tiny()).state_dict()}
    arguments.update(overrides)
    return save_checkpoint(folder, **arguments)


def _hidden_siblings(folder: Path) -> list[Path]:
    return [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_round_trip_keeps_names_values_and_dtypes(tmp_path):
    module = Tiny()
    module.norm.running_mean.add_(1.5)
    vocab = Vocabulary.build(["the heart is normal .", "lungs are clear ."], min_count=1)
    folder = _save(
        tmp_path / "ck",
        module,
        config=TinyConfig(),
        vocab=vocab,
        metrics={"val": {"bleu4": 0.12}},
        preset="demo",
        data_fingerprint="abc123",
    )
    loaded = load_checkpoint(folder, expected_kind="dcrrg")
    original = module.state_dict()
    assert set(loaded.state_dict) == set(original)
    for name, tensor in original.items():
        assert loaded.state_dict[name].dtype == tensor.dtype, name
        assert torch.equal(loaded.state_dict[name], tensor), name
    assert loaded.state_dict["half_table"].dtype == torch.bfloat16
    assert loaded.state_dict["norm.num_batches_tracked"].dtype == torch.int64
    assert loaded.config == {"hidden": 3, "layers": [1, 2], "dropout": 0.1}
    assert loaded.vocab == vocab
    assert loaded.metrics == {"val": {"bleu4": 0.12}}
    assert (loaded.kind, loaded.preset, loaded.data_fingerprint) == ("dcrrg", "demo", "abc123")
    assert loaded.code_version == __version__ and loaded.format_version == FORMAT_VERSION
    assert datetime.fromisoformat(loaded.created).tzinfo is not None
    fresh = Tiny()
    fresh.load_state_dict(loaded.state_dict, strict=True)
    assert torch.equal(fresh.linear.weight, module.linear.weight)


def test_files_on_disk_are_plain_json_and_safetensors(tmp_path):
    folder = _save(tmp_path / "ck", kind="dvae")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metrics.json", "model.safetensors"]
    header = json.loads((folder / "config.json").read_text())
    assert header["format"] == "rrg-checkpoint" and header["kind"] == "dvae" and header["has_vocab"] is False
    assert json.loads((folder / "metrics.json").read_text()) == {}
    assert load_checkpoint(folder).vocab is None


def test_tied_weights_are_stored_once_and_retied(tmp_path):
    module = TiedLM()
    folder = _save(tmp_path / "ck", module, kind="uar")
    with safetensors.safe_open(folder / "model.safetensors", framework="pt") as handle:
        assert set(handle.keys()) == {"embed.weight"}
    state = load_checkpoint(folder).state_dict
    assert set(state) == {"embed.weight", "out.weight"}
    assert state["out.weight"] is state["embed.weight"]
    fresh = TiedLM()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.out.weight, module.embed.weight)
    assert fresh.out.weight is fresh.embed.weight


def test_overlapping_views_are_cloned_not_refused(tmp_path):
    base = torch.arange(12, dtype=torch.float32)
    state = {"whole": base, "head": base[:4], "strided": base[::3]}
    state_loaded = load_checkpoint(_save(tmp_path / "ck", state_dict=state)).state_dict
    for name, tensor in state.items():
        assert torch.equal(state_loaded[name], tensor), name


def test_vocab_round_trip_and_malformed_vocab_refused(tmp_path):
    vocab = Vocabulary.build(["no effusion .", "heart size normal ."], min_count=1)
    folder = _save(tmp_path / "ck", vocab=vocab)
    assert load_checkpoint(folder).vocab.tokens == vocab.tokens
    (folder / "vocab.json").write_text('{"format": "rrg-vocab", "tokens": ')
    with pytest.raises(CheckpointError, match=r"vocab\.json is malformed"):
        load_checkpoint(folder)
    (folder / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match=r"vocab\.json is missing"):
        load_checkpoint(folder)


def test_kind_mismatch_refused(tmp_path):
    folder = _save(tmp_path / "ck", kind="uar")
    with pytest.raises(CheckpointError, match=r"is a 'uar' checkpoint, expected 'dcrrg'") as caught:
        load_checkpoint(folder, expected_kind="dcrrg")
    assert str(folder) in str(caught.value)
    assert isinstance(caught.value, RRGError)


def test_newer_format_version_refused(tmp_path):
    folder = _save(tmp_path / "ck")
    header = json.loads((folder / "config.json").read_text())
    header["format_version"] = FORMAT_VERSION + 1
    (folder / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="written by a newer rrg-review; upgrade"):
        load_checkpoint(folder)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a rrg-review checkpoint"),
        ('{"format": "something-else"}', "not a rrg-review checkpoint"),
        (
            '{"format": "rrg-checkpoint", "format_version": "one", "kind": "uar", "config": {}}',
            "format_version",
        ),
        ('{"format": "rrg-checkpoint", "format_version": 1, "config": {}}', "no model kind"),
        ('{"format": "rrg-checkpoint", "format_version": 1, "kind": "uar"}', "no 'config'"),
    ],
)
def test_malformed_config_refused(tmp_path, content, message):
    folder = _save(tmp_path / "ck")
    (folder / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def test_missing_pieces_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")
    folder = _save(tmp_path / "ck")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        load_checkpoint(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        load_checkpoint(folder)


def test_truncated_safetensors_refused(tmp_path):
    folder = _save(tmp_path / "ck")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    for cut in (len(data) - 5, 20, 3, 0):
        weights.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="corrupt or not a safetensors file") as caught:
            load_checkpoint(folder)
        assert str(folder) in str(caught.value)


class _Booby:
    """Unpickling this calls Path.touch on the marker: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_named_model_safetensors_is_refused_and_never_unpickled(tmp_path):
    folder = _save(tmp_path / "ck")
    marker = tmp_path / "unpickled.marker"
    (folder / "model.safetensors").write_bytes(pickle.dumps({"linear.weight": _Booby(marker)}))
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        load_checkpoint(folder)
    assert not marker.exists()
    # The control: the payload is live, so its absence above means nothing was unpickled.
    pickle.loads((folder / "model.safetensors").read_bytes())
    assert marker.exists()


def test_failed_save_leaves_old_checkpoint_intact(tmp_path, monkeypatch):
    old = Tiny()
    folder = _save(tmp_path / "ck", old, config={"generation": 1})
    old_hash = checkpoint_hash(folder)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path / "ck", Tiny(), config={"generation": 2})
    loaded = load_checkpoint(folder)
    assert loaded.config == {"generation": 1}
    assert loaded.sha256 == old_hash
    assert torch.equal(loaded.state_dict["linear.weight"], old.linear.weight)
    assert _hidden_siblings(folder) == []


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(safetensors.torch, "save_file", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        _save(tmp_path / "ck")
    assert list(tmp_path.iterdir()) == []


def test_successful_replace(tmp_path):
    folder = _save(tmp_path / "ck", config={"generation": 1}, vocab=Vocabulary(["a"]))
    new = Tiny()
    _save(folder, new, config={"generation": 2}, kind="uar")
    loaded = load_checkpoint(folder)
    assert (loaded.config, loaded.kind, loaded.vocab) == ({"generation": 2}, "uar", None)
    assert not (folder / "vocab.json").exists()  # nothing of the old checkpoint survives
    assert torch.equal(loaded.state_dict["linear.weight"], new.linear.weight)
    assert _hidden_siblings(folder) == []


def test_failed_rename_puts_old_checkpoint_back(tmp_path, monkeypatch):
    folder = _save(tmp_path / "ck", config={"generation": 1})
    real_rename = os.rename

    def rename(source, destination):
        if ".tmp-" in Path(source).name:
            raise OSError("rename refused")
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="rename refused"):
        _save(folder, config={"generation": 2})
    assert load_checkpoint(folder).config == {"generation": 1}
    assert _hidden_siblings(folder) == []


def test_folder_with_other_files_is_not_replaced(tmp_path):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        _save(folder)
    assert (folder / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a folder"):
        _save(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_checkpoint(_save(empty)).kind == "dcrrg"


def test_bad_inputs_refused(tmp_path):
    with pytest.raises(CheckpointError, match="unknown checkpoint kind"):
        _save(tmp_path / "a", kind="dcrg")
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        _save(tmp_path / "b", config={"path": Path("x")})
    with pytest.raises(CheckpointError, match="not a tensor"):
        _save(tmp_path / "c", state_dict={"w": [1.0]})
    with pytest.raises(CheckpointError, match="non-empty"):
        _save(tmp_path / "d", state_dict={})
    assert list(tmp_path.iterdir()) == []
    register_kind("retrieval_index")
    try:
        assert load_checkpoint(_save(tmp_path / "e", kind="retrieval_index")).kind == "retrieval_index"
    finally:
        checkpoints.KNOWN_KINDS.discard("retrieval_index")


def _at(monkeypatch, text: str) -> None:
    monkeypatch.setattr(checkpoints, "_now", lambda: datetime.fromisoformat(text).replace(tzinfo=UTC))


def test_find_checkpoints_picks_newest_per_kind(tmp_path, monkeypatch):
    _at(monkeypatch, "2026-01-02T00:00:00")
    _save(tmp_path / "z_dcrrg_old", kind="dcrrg")
    _save(tmp_path / "uar_only", kind="uar")
    _at(monkeypatch, "2026-03-01T00:00:00")
    _save(tmp_path / "a_dcrrg_new", kind="dcrrg")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{")
    (tmp_path / ".ck.tmp-123").mkdir()  # an unfinished save must never be picked
    (tmp_path / "not_a_checkpoint").mkdir()
    found = find_checkpoints(tmp_path)
    assert found == {"dcrrg": tmp_path / "a_dcrrg_new", "uar": tmp_path / "uar_only"}
    assert find_checkpoints(tmp_path / "uar_only") == {"uar": tmp_path / "uar_only"}


def test_find_checkpoints_root_from_environment(tmp_path, monkeypatch):
    _save(tmp_path / "one", kind="dvae")
    monkeypatch.setenv("RRG_CHECKPOINTS", str(tmp_path))
    assert checkpoints.default_checkpoint_root() == tmp_path
    assert find_checkpoints() == {"dvae": tmp_path / "one"}
    monkeypatch.delenv("RRG_CHECKPOINTS")
    with pytest.raises(CheckpointError, match="RRG_CHECKPOINTS"):
        find_checkpoints()
    with pytest.raises(CheckpointError, match="not found"):
        find_checkpoints(tmp_path / "missing")


def test_hash_is_stable_and_tracks_the_weights(tmp_path):
    module = Tiny()
    first = _save(tmp_path / "a", module)
    second = _save(tmp_path / "b", module, config={"other": True}, metrics={"x": 1})
    expected = hashlib.sha256((first / "model.safetensors").read_bytes()).hexdigest()
    assert checkpoint_hash(first) == checkpoint_hash(first) == expected
    assert load_checkpoint(first).sha256 == expected
    assert checkpoint_hash(second) == expected  # same weights, same hash, whatever the config
    with torch.no_grad():
        module.linear.weight.add_(1.0)
    _save(first, module)
    assert checkpoint_hash(first) != expected
    assert load_checkpoint(first).sha256 == checkpoint_hash(first)


def test_update_metrics_merges_atomically(tmp_path):
    folder = _save(tmp_path / "ck", metrics={"val": {"bleu4": 0.1}})
    update_metrics(folder, {"test": {"bleu4": 0.2}})
    merged = update_metrics(folder, {"test": {"ce_f1": float("nan"), "n": torch.tensor(3)}, "epochs": 5})
    expected = {"val": {"bleu4": 0.1}, "test": {"bleu4": 0.2, "ce_f1": None, "n": 3}, "epochs": 5}
    assert merged == expected
    assert load_checkpoint(folder).metrics == expected
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(CheckpointError, match="not found"):
        update_metrics(tmp_path / "nowhere", {"a": 1})


def test_data_fingerprint(tmp_path):
    annotation = tmp_path / "annotation.json"
    annotation.write_text('{"train": []}')
    fingerprint = data_fingerprint(annotation)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert data_fingerprint(tmp_path) == fingerprint == data_fingerprint(annotation)
    annotation.write_text('{"train": [1]}')
    assert data_fingerprint(annotation) != fingerprint
    with pytest.raises(DatasetError, match="cannot fingerprint"):
        data_fingerprint(tmp_path / "missing.json")


def test_device_argument(tmp_path):
    folder = _save(tmp_path / "ck", TiedLM(), kind="uar")
    with pytest.raises(CheckpointError, match="unknown device"):
        load_checkpoint(folder, device="abacus")
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="no CUDA device"):
            load_checkpoint(folder, device="cuda")
        return
    state = load_checkpoint(folder, device="cuda").state_dict
    assert state["embed.weight"].device.type == "cuda"
    assert state["out.weight"] is state["embed.weight"]  # the tie survives the move
