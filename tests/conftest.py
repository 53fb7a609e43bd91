"""Shared fixtures: where the real IU X-ray reports live (a skip when they are absent), and a small
phantom data set that the training and generator tests read (never write)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_IU_XRAY = Path(os.environ.get("RRG_IU_XRAY", REPO_ROOT.parent / "shared" / "data" / "iu_xray"))


@pytest.fixture(scope="session")
def iu_xray_dir() -> Path:
    """The shared IU X-ray folder (annotation.json, no images); skips when it is not there."""
    if not (SHARED_IU_XRAY / "annotation.json").is_file():
        pytest.skip(f"IU X-ray reports not found at {SHARED_IU_XRAY} (set RRG_IU_XRAY)")
    return SHARED_IU_XRAY


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 phantom studies at 64 px (R2Gen layout, both views), rendered once per test session."""
    from rrg_core.phantoms import write_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    write_phantoms(out, n=24, seed=0, size=64)
    return out


@pytest.fixture
def one_torch_thread():
    """Tiny models: one torch thread is fastest, and two spin-waiting threads crawl on a busy 2-core
    machine. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_dcrrg_checkpoint(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random DCRRG checkpoint with the phantoms' vocabulary (64 px; copy it to change it)."""
    from tiny_models import save_tiny_dcrrg

    return save_tiny_dcrrg(phantoms, tmp_path_factory.mktemp("runs") / "dcrrg")


@pytest.fixture(scope="session")
def tiny_uar_checkpoint(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random UAR checkpoint with the phantoms' vocabulary (32 px; copy it to change it)."""
    from tiny_models import save_tiny_uar

    return save_tiny_uar(phantoms, tmp_path_factory.mktemp("runs") / "uar")
