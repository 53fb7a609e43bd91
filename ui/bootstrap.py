"""First run without checkpoints: build a phantom data set and train the demo models, once.

Everything is done by ``python -m train ...`` in subprocesses (the app never imports ``train``),
into ``$XDG_CACHE_HOME/rrg-review/demo`` (``~/.cache/rrg-review/demo``). Each step leaves a marker
when it finishes, so an interrupted bootstrap resumes at the step it was in (the training
commands resume their own run folders), and a finished one costs nothing on the next start. A
file lock keeps two app processes from training at once.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rrg_core.errors import RRGError
from ui.context import TRAINED_ON_FILE

APP_DIR = "rrg-review"
#: The demo data set: DCRRG's demo preset is tuned on 1,000 phantom studies at 128 px; UAR trains on
#: the same set (its preset reads them at 64 px), so the two models are compared on the same data.
PHANTOM_STUDIES = 1000
PHANTOM_SIZE = 128
PHANTOM_SEED = 0
TRAINED_ON = (
    "synthetic phantoms: {n} studies of drawn frontal and lateral radiographs with templated reports, "
    "made by "
    "`python -m train phantoms --n {n} --size {size} --seed {seed}` (no patient data, not real X-rays); "
    "the demo presets (minutes of training on a free laptop CPU). Their drafts show how the app works, "
    "not what the models can do."
)


class BootstrapError(RRGError):
    """A bootstrap step failed; the message names it and where its output went."""


@dataclass(frozen=True)
class Step:
    """One command of the bootstrap and the marker it leaves."""

    name: str
    arguments: tuple[str, ...]
    marker: str
    optional: bool = False


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/rrg-review`` (an absolute XDG_CACHE_HOME only), else ``~/.cache/rrg-review``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / APP_DIR


def demo_steps(root: Path) -> list[Step]:
    """The bootstrap's commands, in order."""
    data, checkpoints = root / "phantoms", root / "checkpoints"
    steps = [
        Step(
            "phantom data set",
            (
                "phantoms",
                "--out",
                str(data),
                "--n",
                str(PHANTOM_STUDIES),
                "--size",
                str(PHANTOM_SIZE),
                "--seed",
                str(PHANTOM_SEED),
            ),
            "phantoms.done",
        ),
        Step(
            "DCRRG (demo preset)",
            ("dcrrg", "--preset", "demo", "--data", str(data), "--out", str(checkpoints / "dcrrg")),
            "dcrrg.done",
        ),
        Step(
            "UAR (demo preset)",
            ("uar", "--preset", "demo", "--data", str(data), "--out", str(checkpoints / "uar")),
            "uar.done",
        ),
    ]
    for key in ("dcrrg", "uar"):
        steps.append(
            Step(
                f"{key.upper()} retrieval index",
                ("index", "--checkpoint", str(checkpoints / key), "--data", str(data)),
                f"{key}-index-domain.done",  # renamed: caches from before the domain check re-index
            )
        )
    for key in ("dcrrg", "uar"):
        # The model card's tables; scored without METEOR so that no Java is needed. Optional: a failure
        # leaves the card without tables, not the app without models.
        steps.append(
            Step(
                f"{key.upper()} evaluation (test split)",
                (
                    "evaluate",
                    "--checkpoint",
                    str(checkpoints / key),
                    "--data",
                    str(data),
                    "--out",
                    str(root / "eval" / key),
                    "--no-baselines",
                    "--metrics",
                    "BLEU_1",
                    "BLEU_2",
                    "BLEU_3",
                    "BLEU_4",
                    "ROUGE_L",
                    "CIDEr",
                ),
                f"{key}-eval.done",
                optional=True,
            )
        )
    return steps


def demo_checkpoints(
    root: Path | None = None,
    *,
    python: str = sys.executable,
    say: Callable[[str], None] = print,
    run: Callable[[Sequence[str], Path], int] | None = None,
) -> Path:
    """The demo checkpoints folder, building it first when it is not complete (module docstring)."""
    root = root or cache_root() / "demo"
    root.mkdir(parents=True, exist_ok=True)
    checkpoints = root / "checkpoints"
    steps = demo_steps(root)
    run = run or _run
    with open(root / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another rrg-review process is building the demo models in {root}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        todo = [step for step in steps if not (root / step.marker).exists()]
        if todo:
            say(
                f"No checkpoints given: building the demo models once in {root} "
                f"({len(todo)} of {len(steps)} steps "
                "to do; several minutes on a laptop CPU). Later starts reuse them."
            )
        began = time.perf_counter()
        for number, step in enumerate(todo, start=1):
            say(f"[{number}/{len(todo)}] {step.name}: python -m train {' '.join(step.arguments)}")
            started = time.perf_counter()
            log = root / "logs" / f"{step.marker.removesuffix('.done')}.log"
            log.parent.mkdir(exist_ok=True)
            code = run([python, "-m", "train", *step.arguments], log)
            seconds = time.perf_counter() - started
            if code != 0:
                if step.optional:
                    say(f"    {step.name} failed (exit {code}, see {log}); going on without it")
                    continue
                raise BootstrapError(
                    f"the demo bootstrap step '{step.name}' failed (exit {code}); its output is in {log}"
                )
            (root / step.marker).write_text(f"{seconds:.0f} s\n", encoding="utf-8")
            say(f"    done in {seconds:.0f} s")
        if todo:
            say(f"Demo models ready in {time.perf_counter() - began:.0f} s: {checkpoints}")
        note = TRAINED_ON.format(n=PHANTOM_STUDIES, size=PHANTOM_SIZE, seed=PHANTOM_SEED)
        checkpoints.mkdir(parents=True, exist_ok=True)
        (checkpoints / TRAINED_ON_FILE).write_text(note + "\n", encoding="utf-8")
    return checkpoints


def _run(command: Sequence[str], log: Path) -> int:
    """Run a command with its output passed through as it comes (tqdm bars included) and kept in ``log``."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert process.stdout is not None
        for chunk in iter(lambda: process.stdout.read1(4096), b""):
            handle.write(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return process.wait()
