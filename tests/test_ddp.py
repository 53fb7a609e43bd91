"""DDP on the CPU: two gloo workers train Step 1 on the same data and end with identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from rrg_core.models.dcrrg import DCRRG, DCRRGConfig
from rrg_core.models.dcrrg.config import DCCLIPConfig
from tests.test_train_uar import _harness
from train.common.distributed import cleanup_distributed, setup_distributed
from train.common.runtime import apply_thread_policy
from train.dcrrg import steps
from train.dcrrg.data import balance_weights, transform_config
from train.dcrrg.presets import Step1Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data() -> steps.TrainData:
    """Eight random studies (same on every rank: a fixed seed), two views of 64 px."""
    generator = torch.Generator().manual_seed(123)
    targets = (torch.rand(8, 14, generator=generator) > 0.5).float()
    keep = torch.ones(8, 14, dtype=torch.bool)
    return steps.TrainData(
        images=torch.randint(0, 256, (8, 2, 64, 64), dtype=torch.uint8, generator=generator),
        reports=[f"report number {i}. no pleural effusion." for i in range(8)], report_ids=[[1, 2]] * 8,
        descriptions=[[[1, 2]] * 14] * 8, targets=targets, states=targets.long(),
        weights=balance_weights(targets, keep, True),
        extra_images=None, extra_targets=None, extra_weights=None,
        transform=transform_config("efficientnet_lite0", 64), pad_id=0,
    )  # fmt: skip


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    info = setup_distributed(torch.device("cpu"))
    try:
        apply_thread_policy(distributed_cpu=True)
        torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
        clip = DCCLIPConfig(
            pretrained=None, text_encoder="tiny-random", projection_dim=16, projection_hidden=16
        )
        model = DCRRG(DCRRGConfig(vocab_size=10, clip=clip, d_model=16, d_ff=32, n_heads=2, n_prefix=2))
        context = _harness(out, info, 1e-6)
        settings = Step1Settings(epochs=1.0, batch_size=2, lr=1e-3, max_iterations=3)
        context.train("step1", steps.step1(model, _data(), settings, context))
        torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    finally:
        cleanup_distributed()


def test_two_gloo_workers_end_with_identical_weights(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    # Training moved the weights away from rank 0's initialisation.
    torch.manual_seed(0)
    clip = DCCLIPConfig(pretrained=None, text_encoder="tiny-random", projection_dim=16, projection_hidden=16)
    initial = DCRRG(DCRRGConfig(vocab_size=10, clip=clip, d_model=16, d_ff=32, n_heads=2, n_prefix=2))
    changed = initial.state_dict()["clip.image_classifier.weight"]
    assert not torch.equal(changed, first["clip.image_classifier.weight"])
