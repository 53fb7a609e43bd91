"""Shared by the app's tests: a checkpoint folder of tiny DCRRG and UAR models with retrieval indexes,
and a free loopback port."""

from __future__ import annotations

import socket
from pathlib import Path

from tiny_models import save_tiny_dcrrg, save_tiny_uar


def app_checkpoints(phantoms: Path, root: Path) -> Path:
    """``root`` with a tiny random DCRRG and UAR checkpoint, each with the image index of the phantoms'
    training split built by ``python -m train index`` (seconds)."""
    from train.__main__ import main

    save_tiny_dcrrg(phantoms, root / "dcrrg")
    save_tiny_uar(phantoms, root / "uar")
    for kind in ("dcrrg", "uar"):
        assert (
            main(["index", "--checkpoint", str(root / kind), "--data", str(phantoms), "--workers", "0"]) == 0
        )
    return root


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
