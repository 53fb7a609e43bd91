"""Shared fixtures: where the real IU X-ray reports live, and a skip when they are absent."""

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
