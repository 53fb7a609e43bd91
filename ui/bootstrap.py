"""First run without checkpoints: build a phantom data set and train the demo models, once.

Everything is done by ``python -m train ...`` in subprocesses (the app never imports ``train``),
into ``$XDG_CACHE_HOME/rrg-review/demo`` (``~/.cache/rrg-review/demo``). Each step leaves a marker
when it finishes, so an interrupted bootstrap resumes at the step it was in (the training
commands resume their own run folders), and a finished one costs nothing on the next start. A
file lock keeps two app processes from training at once.

After the phantom set, each model's chain (training, retrieval index, evaluation) is a *lane*, and the
lanes run side by side, each in its own thread, with the cores shared between them
(``RRG_TRAIN_THREADS`` set by the user is left alone); their output goes to ``logs/`` only, since two
streams on one console would interleave. ``RRG_BOOTSTRAP_LANES=1`` runs the steps one after another
with their output on the console, as before.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
#: Debugging aid: ``1`` runs the steps one after another with their output on the console.
LANES_VARIABLE = "RRG_BOOTSTRAP_LANES"
#: Read by train/common/runtime.py (torch's threads) and by OpenMP itself.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "RRG_TRAIN_THREADS")
#: The training harness reads the thread count granted since its start from the file this names.
THREADS_FILE_VARIABLE = "RRG_TRAIN_THREADS_FILE"
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
    #: The chain it belongs to; "" for a step that runs alone before the lanes (the data they all read).
    lane: str = ""


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/rrg-review`` (an absolute XDG_CACHE_HOME only), else ``~/.cache/rrg-review``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / APP_DIR


def demo_steps(root: Path) -> list[Step]:
    """The bootstrap's commands, in the order of a one-lane build (each lane keeps this order too)."""
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
                "--workers",  # every core: it runs alone, and the set is the same for any count
                str(os.cpu_count() or 1),
            ),
            "phantoms.done",
        ),
        Step(
            "DCRRG (demo preset)",
            ("dcrrg", "--preset", "demo", "--data", str(data), "--out", str(checkpoints / "dcrrg")),
            "dcrrg.done",
            lane="DCRRG",
        ),
        Step(
            "UAR (demo preset)",
            ("uar", "--preset", "demo", "--data", str(data), "--out", str(checkpoints / "uar")),
            "uar.done",
            lane="UAR",
        ),
    ]
    for key in ("dcrrg", "uar"):
        steps.append(
            Step(
                f"{key.upper()} retrieval index",
                ("index", "--checkpoint", str(checkpoints / key), "--data", str(data)),
                f"{key}-index-domain.done",  # renamed: caches from before the domain check re-index
                lane=key.upper(),
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
                lane=key.upper(),
            )
        )
    return steps


#: ``run(command, log, env)``: run ``command`` with ``env``'s variables set over the inherited environment,
#: keep its output in ``log``, and return its exit code.
Runner = Callable[[Sequence[str], Path, Mapping[str, str]], int]


def demo_checkpoints(
    root: Path | None = None,
    *,
    python: str = sys.executable,
    say: Callable[[str], None] = print,
    run: Runner | None = None,
    lanes: int | None = None,
) -> Path:
    """The demo checkpoints folder, building it first when it is not complete (module docstring).

    ``lanes`` is how many lanes may run at once (default ``RRG_BOOTSTRAP_LANES``, else all of them;
    1 runs the steps one after another with their output on the console); ``run`` replaces the
    subprocess runner (tests).
    """
    root = root or cache_root() / "demo"
    root.mkdir(parents=True, exist_ok=True)
    checkpoints = root / "checkpoints"
    steps = demo_steps(root)
    lanes = _lane_limit(lanes)
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
        _Build(root, python, _one_line_at_a_time(say), run).build(todo, lanes)
        if todo:
            say(f"Demo models ready in {time.perf_counter() - began:.0f} s: {checkpoints}")
        note = TRAINED_ON.format(n=PHANTOM_STUDIES, size=PHANTOM_SIZE, seed=PHANTOM_SEED)
        checkpoints.mkdir(parents=True, exist_ok=True)
        (checkpoints / TRAINED_ON_FILE).write_text(note + "\n", encoding="utf-8")
    return checkpoints


@dataclass(frozen=True)
class _Build:
    """How one bootstrap runs its steps and reports them."""

    root: Path
    python: str
    say: Callable[[str], None]
    run: Runner | None  # None: the subprocess runner

    def build(self, todo: list[Step], lanes: int | None) -> None:
        """The lone steps, then the lanes side by side; all in order when one lane may (or has to) run."""
        chains = _chains(todo)
        width = len(chains) if lanes is None else min(lanes, len(chains))
        if width <= 1:  # nothing to overlap: the sequential build, output on the console
            self.in_order(todo)
            return
        self.in_order([step for step in todo if not step.lane])
        self.side_by_side(chains, width)

    def in_order(self, steps: list[Step]) -> None:
        """Run ``steps`` one after another with their output on the console; stop at a failed required one."""
        for number, step in enumerate(steps, start=1):
            self.say(f"[{number}/{len(steps)}] {step.name}: python -m train {' '.join(step.arguments)}")
            code, seconds, log = self.execute(step, {}, echo=True)
            if code == 0:
                self.say(f"    done in {seconds:.0f} s")
            elif step.optional:
                self.say(f"    {step.name} failed (exit {code}, see {log}); going on without it")
            else:
                raise _failure(step, code, log)

    def side_by_side(self, chains: dict[str, list[Step]], width: int) -> None:
        """Run the lanes, ``width`` at a time, each in a thread of its own; then raise their failures."""
        env = _lane_environment(width)
        threads = f"{env['RRG_TRAIN_THREADS']} thread(s) each" if env else "RRG_TRAIN_THREADS as set"
        self.say(
            f"{' and '.join(chains)} side by side ({threads}); their output goes to {self.root / 'logs'}"
        )
        cores = _SharedCores(len(chains), width, self.root / "logs" / "lane-threads")
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="bootstrap-lane") as pool:
            futures = [pool.submit(self.lane, name, steps, cores) for name, steps in chains.items()]
        # Leaving the pool waited for every lane: a failure in one never cuts another's step short, so
        # what the others finished keeps its marker and the next start only redoes the failed lane.
        _raise_failures([error for future in futures if (error := future.exception()) is not None])

    def lane(self, name: str, steps: list[Step], cores: _SharedCores) -> None:
        """Run one lane's steps in order, their output in their logs only; raise at a failed required one."""
        try:
            for step in steps:
                self.lane_step(name, step, cores.environment())
        finally:
            cores.lane_done()

    def lane_step(self, name: str, step: Step, env: Mapping[str, str]) -> None:
        """One step of lane ``name``; raise at a failed required one."""
        command = f"python -m train {' '.join(step.arguments)}"
        self.say(f"[{name}] {step.name}: {command} (output in {self.log(step)})")
        code, seconds, log = self.execute(step, env, echo=False)
        if code == 0:
            self.say(f"[{name}] {step.name} done in {seconds:.0f} s (log: {log})")
        elif step.optional:
            self.say(f"[{name}] {step.name} failed (exit {code}, see {log}); going on without it")
        else:
            self.say(f"[{name}] {step.name} failed (exit {code}, see {log}); the {name} lane stops here")
            raise _failure(step, code, log)

    def execute(self, step: Step, env: Mapping[str, str], *, echo: bool) -> tuple[int, float, Path]:
        """Run one step and leave its marker when it succeeds; its exit code, seconds and log."""
        log = self.log(step)
        log.parent.mkdir(exist_ok=True)
        command = [self.python, "-m", "train", *step.arguments]
        started = time.perf_counter()
        code = self.run(command, log, env) if self.run else _run(command, log, env, echo=echo)
        seconds = time.perf_counter() - started
        if code == 0:
            (self.root / step.marker).write_text(f"{seconds:.0f} s\n", encoding="utf-8")
        return code, seconds, log

    def log(self, step: Step) -> Path:
        """Where a step's output goes."""
        return self.root / "logs" / f"{step.marker.removesuffix('.done')}.log"


def _lane_limit(lanes: int | None) -> int | None:
    """How many lanes may run at once: ``lanes``, else ``RRG_BOOTSTRAP_LANES``, else None (all)."""
    value = os.environ.get(LANES_VARIABLE, "").strip() if lanes is None else str(lanes)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BootstrapError(
            f"the number of bootstrap lanes ({LANES_VARIABLE}) must be at least 1, got {value!r}"
        )
    return int(value)


def _chains(todo: list[Step]) -> dict[str, list[Step]]:
    """The lanes' steps still to do, by lane, each lane's in their order."""
    chains: dict[str, list[Step]] = {}
    for step in todo:
        if step.lane:
            chains.setdefault(step.lane, []).append(step)
    return chains


class _SharedCores:
    """The cores shared out between the lanes still running: when one lane ends, the others take its
    cores over, in their next steps and, through ``grants`` (a file named by ``RRG_TRAIN_THREADS_FILE``,
    read by the training harness at each epoch), in the training they are running: the DCRRG lane
    trains alone on one core for minutes otherwise, once UAR is done."""

    def __init__(self, lanes: int, width: int, grants: Path) -> None:
        self._remaining, self._width, self._lock, self._grants = lanes, width, threading.Lock(), grants
        self._grants.parent.mkdir(parents=True, exist_ok=True)
        self._grants.unlink(missing_ok=True)

    def environment(self) -> dict[str, str]:
        """The thread variables for a lane's next step."""
        with self._lock:
            environment = _lane_environment(self._running())
        return {**environment, THREADS_FILE_VARIABLE: str(self._grants)} if environment else environment

    def lane_done(self) -> None:
        with self._lock:
            self._remaining -= 1
            threads = _lane_environment(self._running()).get("RRG_TRAIN_THREADS")
            if threads is not None and self._remaining > 0:
                self._grants.write_text(threads + "\n", encoding="utf-8")

    def _running(self) -> int:
        return max(1, min(self._width, self._remaining))


def _lane_environment(width: int) -> dict[str, str]:
    """The thread variables of a lane's commands: the cores shared out between the ``width`` lanes that run
    at once (each training would otherwise take them all, and the lanes would fight over them); nothing
    when the user set ``RRG_TRAIN_THREADS``, whose choice wins."""
    if os.environ.get("RRG_TRAIN_THREADS", "").strip():
        return {}
    return dict.fromkeys(THREAD_VARIABLES, str(max(1, (os.cpu_count() or 1) // width)))


def _failure(step: Step, code: int, log: Path) -> BootstrapError:
    return BootstrapError(
        f"the demo bootstrap step '{step.name}' failed (exit {code}); its output is in {log}"
    )


def _raise_failures(errors: list[BaseException]) -> None:
    """Raise the lanes' errors: an unexpected one as it is, else a BootstrapError naming each failed step."""
    for error in errors:
        if not isinstance(error, BootstrapError):
            raise error
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise BootstrapError("; ".join(str(error) for error in errors))


def _one_line_at_a_time(say: Callable[[str], None]) -> Callable[[str], None]:
    """``say`` for several lanes' threads: one whole line at a time."""
    lock = threading.Lock()

    def locked(line: str) -> None:
        with lock:
            say(line)

    return locked


def _run(
    command: Sequence[str], log: Path, env: Mapping[str, str] | None = None, *, echo: bool = True
) -> int:
    """Run a command with ``env`` set over the inherited environment and its output kept in ``log``; with
    ``echo``, also passed through to the console as it comes (tqdm bars included)."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    folder = Path(__file__).resolve().parents[1]
    with open(log, "wb") as handle:
        if not echo:
            return subprocess.run(
                list(command),
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=folder,
                check=False,
            ).returncode
        process = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment, cwd=folder
        )
        assert process.stdout is not None
        for chunk in iter(lambda: process.stdout.read1(4096), b""):
            handle.write(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return process.wait()
