"""Natural-language-generation metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr via pycocoevalcap.

Both papers score with the COCO caption evaluation code (UAR: "Microsoft COCO
Evaluation Server"; DCRRG: "a standard evaluation toolkit"), i.e. pycocoevalcap,
as the R2Gen code base they build on does. SPICE is left out: it downloads
Stanford CoreNLP on first use and so fails offline.

METEOR (and the optional PTB tokenisation) run in Java. Each METEOR call starts a
JVM and loads its paraphrase table (several seconds), so a whole corpus is scored
in one call, never pair by pair.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from rrg_core.errors import RRGError

logger = logging.getLogger(__name__)

NLG_METRICS: tuple[str, ...] = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")
"""Every metric :func:`nlg_scores` can compute, in the papers' column order."""

JAVA_METRICS: frozenset[str] = frozenset({"METEOR"})
"""Metrics that need a Java runtime (leave them out to score without Java)."""

METEOR_TIMEOUT_S = 600.0
"""Wall-clock limit for one METEOR run; the JVM is killed after it (a wedged pipe must not hang the app)."""

JAVA_HINT = (
    "METEOR and PTB tokenisation (tokenize=True) run in Java: install Java 17, "
    "e.g. `apt-get install openjdk-17-jre-headless`, or leave METEOR out with metrics=(...)"
)

_BLEU_KEYS = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4")
_BY_KEY = {name.lower(): name for name in NLG_METRICS}

Corpus = dict[int, list[str]]


def sanitize_text(text: str) -> str:
    """Make a report safe for the pycocoevalcap scorers, without changing its tokens.

    METEOR talks to its JVM one line at a time with ``|||`` as the field separator, so a
    newline or a ``|||`` inside a report desynchronises the protocol (an error or a hang);
    ROUGE-L splits on single spaces, so runs of whitespace would create empty tokens.
    All whitespace (newlines, tabs, Unicode separators) becomes one space and ``|||`` is
    dropped; the same cleaning is applied for every metric so they all score the same text.
    """
    return " ".join(text.replace("|||", " ").split())


def java_available() -> bool:
    """Whether a ``java`` executable is on the PATH (needed for METEOR and ``tokenize=True``)."""
    return shutil.which("java") is not None


def nlg_scores(
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    tokenize: bool = False,
    metrics: Iterable[str] = NLG_METRICS,
) -> dict[str, float]:
    """Corpus-level NLG scores of generated reports against their references (one reference each).

    Args:
        references: the ground-truth reports.
        hypotheses: the generated reports, aligned with ``references``.
        tokenize: False (default) scores the strings as given, split on whitespace, which
            is how the R2Gen code base (and so UAR) scores reports already cleaned into
            lower case with punctuation as separate tokens. True first runs
            pycocoevalcap's PTBTokenizer (Java), which lower-cases and drops punctuation,
            as the COCO caption evaluation does.
        metrics: which of :data:`NLG_METRICS` to compute (case-insensitive); leave out
            ``"METEOR"`` to skip the JVM.

    Returns:
        ``{metric: score}`` in :data:`NLG_METRICS` order. BLEU is pycocoevalcap's
        corpus-level BLEU (n-gram counts pooled over all pairs, one brevity penalty, with
        its tiny smoothing constants, so a missing n-gram order gives a small positive
        value rather than 0). METEOR is the jar's corpus score; ROUGE-L (beta 1.2) and
        CIDEr (CIDEr-D, times 10) are means over pairs. CIDEr's IDF comes from the
        references themselves, so a single pair always scores CIDEr 0.

    Raises:
        RRGError: empty input, different lengths, a non-string item, an empty reference
            (nothing to score against), an unknown metric, or Java missing or failing.

    Empty hypotheses are allowed (they score 0). Newlines and ``|||`` are cleaned first
    (:func:`sanitize_text`).
    """
    chosen = _choose_metrics(metrics)
    refs = _check_texts(references, "references")
    hyps = _check_texts(hypotheses, "hypotheses")
    _check_pairs(refs, hyps)
    if (tokenize or JAVA_METRICS.intersection(chosen)) and not java_available():
        raise RRGError(f"no `java` on the PATH. {JAVA_HINT}")
    gts = {i: [sanitize_text(text)] for i, text in enumerate(refs)}
    res = {i: [sanitize_text(text)] for i, text in enumerate(hyps)}
    if tokenize:
        gts, res = _ptb_tokenize(gts), _ptb_tokenize(res)
    _check_references_not_empty(gts)
    scores = _run_scorers(gts, res, chosen)
    return {name: scores[name] for name in NLG_METRICS if name in chosen}


def _choose_metrics(metrics: Iterable[str]) -> set[str]:
    if isinstance(metrics, str):  # a lone name is a common slip for a one-element tuple
        metrics = (metrics,)
    chosen = set()
    for name in metrics:
        key = str(name).strip().lower()
        if key not in _BY_KEY:
            raise RRGError(f"unknown NLG metric {name!r}; expected some of: {', '.join(NLG_METRICS)}")
        chosen.add(_BY_KEY[key])
    if not chosen:
        raise RRGError(f"no NLG metric chosen; expected some of: {', '.join(NLG_METRICS)}")
    return chosen


def _check_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str | bytes):
        raise RRGError(f"{what} must be a list of report strings, not one string")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise RRGError(f"{what}[{i}] must be a string, got {type(text).__name__}")
    return items


def _check_pairs(refs: list[str], hyps: list[str]) -> None:
    if len(refs) != len(hyps):
        raise RRGError(
            f"got {len(refs)} references but {len(hyps)} hypotheses; "
            "each generated report needs one reference"
        )
    if not refs:
        raise RRGError("no reports to score: references and hypotheses are empty")


def _check_references_not_empty(gts: Corpus) -> None:
    empty = [i for i, texts in gts.items() if not texts[0]]
    if empty:
        shown = ", ".join(str(i) for i in empty[:10]) + (" ..." if len(empty) > 10 else "")
        raise RRGError(
            f"{len(empty)} reference report(s) have no words (index {shown}); nothing to score against"
        )


def _ptb_tokenize(corpus: Corpus) -> Corpus:
    """PTB-tokenise the non-empty texts; empty ones stay empty.

    Empty texts are kept away from the tokenizer because it reads one sentence per
    line and an empty line could shift every later sentence onto the wrong pair.
    """
    todo = {i: [{"caption": texts[0]}] for i, texts in corpus.items() if texts[0]}
    if not todo:
        return {i: [""] for i in corpus}
    try:
        tokenized = PTBTokenizer().tokenize(todo)
    except OSError as exc:  # java missing, or the package folder is read-only (it writes a temp file)
        raise RRGError(f"PTB tokenisation failed ({exc}). {JAVA_HINT}") from exc
    if set(tokenized) != set(todo):
        raise RRGError(
            f"PTB tokenisation returned {len(tokenized)} of {len(todo)} reports; "
            f"is Java 17 working? {JAVA_HINT}"
        )
    return {i: tokenized[i][:1] if i in tokenized else [""] for i in corpus}


def _run_scorers(gts: Corpus, res: Corpus, chosen: set[str]) -> dict[str, float]:
    scores: dict[str, float] = {}
    if chosen.intersection(_BLEU_KEYS):
        with _timed("BLEU"):
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)  # verbose=0: it prints otherwise
        scores.update(zip(_BLEU_KEYS, (float(value) for value in bleu), strict=True))
    if "METEOR" in chosen:
        with _timed("METEOR"):
            scores["METEOR"] = _run_meteor(gts, res)
    if "ROUGE_L" in chosen:
        with _timed("ROUGE_L"):
            scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr" in chosen:
        with _timed("CIDEr"):
            scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores


@contextlib.contextmanager
def _timed(name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    logger.debug("%s scored in %.2f s", name, time.perf_counter() - start)


def _run_meteor(gts: Corpus, res: Corpus, timeout_s: float = METEOR_TIMEOUT_S) -> float:
    """One METEOR run for the whole corpus, with a watchdog and a clean shutdown.

    pycocoevalcap's wrapper blocks on the JVM's stdout; if the JVM stalls, the watchdog
    kills it, which ends the blocked read. Its ``__del__`` takes a lock that a failed
    ``compute_score`` leaves held, so the lock is released here to keep garbage
    collection from deadlocking.
    """
    try:
        meteor = Meteor()
    except OSError as exc:
        raise RRGError(f"could not start METEOR's JVM ({exc}). {JAVA_HINT}") from exc
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        meteor.meteor_p.kill()

    watchdog = threading.Timer(timeout_s, kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        score, _ = meteor.compute_score(gts, res)
        return float(score)
    except (ValueError, OSError) as exc:  # ValueError: a non-number line (JVM died or got out of step)
        reason = f"timed out after {timeout_s:.0f} s" if timed_out.is_set() else f"failed ({exc})"
        raise RRGError(f"METEOR {reason}; Java said: {_stderr_tail(meteor)}. {JAVA_HINT}") from exc
    finally:
        watchdog.cancel()
        _close_meteor(meteor)


def _close_meteor(meteor: Meteor) -> None:
    if meteor.lock.locked():
        meteor.lock.release()
    process = meteor.meteor_p
    with contextlib.suppress(OSError):
        process.stdin.close()
    process.kill()
    process.wait()
    process.stdout.close()
    process.stderr.close()


def _stderr_tail(meteor: Meteor) -> str:
    """The end of the JVM's error output (it is killed first so the read cannot block)."""
    process = meteor.meteor_p
    process.kill()
    try:
        text = process.stderr.read().decode(errors="replace").strip()
    except (OSError, ValueError):
        return "(nothing)"
    return text[-500:] or "(nothing)"
