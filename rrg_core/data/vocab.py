"""Word vocabulary over cleaned reports: build with a minimum count, encode, decode, save.

Ids 0-3 are the special tokens ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; words
follow by descending count, ties alphabetical, so the same reports always give
the same ids. The sentence end "." is a word like any other, as in R2Gen.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from rrg_core.data.reports import report_tokens
from rrg_core.errors import RRGError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
_FORMAT = "rrg-vocab"
_FORMAT_VERSION = 1


class Vocabulary:
    """An immutable token <-> id mapping with the project's special tokens first."""

    def __init__(self, words: Sequence[str], *, min_count: int = 1) -> None:
        """Create from the words in id order (specials excluded: they are added in front)."""
        clashes = set(words) & set(SPECIAL_TOKENS)
        if clashes:
            raise RRGError(f"vocabulary words may not be special tokens: {sorted(clashes)}")
        if len(set(words)) != len(words):
            raise RRGError("vocabulary words must be unique")
        self._tokens: tuple[str, ...] = SPECIAL_TOKENS + tuple(words)
        self._index = {token: i for i, token in enumerate(self._tokens)}
        self.min_count = min_count

    @classmethod
    def build(cls, reports: Iterable[str], min_count: int) -> Vocabulary:
        """Count the tokens of the cleaned ``reports`` and keep those seen at least ``min_count`` times.

        Build it from the training split only, so validation and test words the
        model never saw become ``<unk>`` as they would in use.
        """
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise RRGError(f"min_count must be a positive integer, got {min_count!r}")
        counts: Counter[str] = Counter()
        for report in reports:
            counts.update(report_tokens(report))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept, min_count=min_count)

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self._tokens)

    @property
    def tokens(self) -> tuple[str, ...]:
        """All tokens in id order, specials first."""
        return self._tokens

    pad_id = property(lambda self: 0, doc="Id of <pad>.")
    bos_id = property(lambda self: 1, doc="Id of <bos>.")
    eos_id = property(lambda self: 2, doc="Id of <eos>.")
    unk_id = property(lambda self: 3, doc="Id of <unk>.")

    def token_id(self, token: str) -> int:
        """The id of ``token``, or the id of ``<unk>``."""
        return self._index.get(token, self.unk_id)

    def encode(self, report: str, max_length: int) -> list[int]:
        """Clean and encode a report as ``<bos> words... <eos>``, at most ``max_length`` ids in all.

        Over-long reports lose their last words but keep ``<eos>``, so a model
        never learns that reports stop without ending.
        """
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
            raise RRGError(f"max_length must be an integer of at least 3, got {max_length!r}")
        words = report_tokens(report)[: max_length - 2]
        return [self.bos_id, *(self.token_id(w) for w in words), self.eos_id]

    def decode_tokens(self, ids: Iterable[int]) -> list[str]:
        """Tokens of an id sequence: stops at ``<eos>``, skips ``<bos>`` and ``<pad>``."""
        tokens = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.bos_id, self.pad_id):
                continue
            if not 0 <= i < len(self._tokens):
                raise RRGError(f"token id {i} is outside the vocabulary (size {len(self)})")
            tokens.append(self._tokens[i])
        return tokens

    def decode(self, ids: Iterable[int]) -> str:
        """The text of an id sequence, tokens joined by spaces (the cleaned-report form)."""
        return " ".join(self.decode_tokens(ids))

    def to_dict(self) -> dict:
        """A JSON-ready description (the ``vocab.json`` of a checkpoint)."""
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "min_count": self.min_count,
            "tokens": list(self._tokens),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """Inverse of :meth:`to_dict`; checks the format and the special tokens."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise RRGError("not a rrg-review vocabulary (missing format 'rrg-vocab')")
        if data.get("version") != _FORMAT_VERSION:
            raise RRGError(f"unsupported vocabulary version {data.get('version')!r}")
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise RRGError("vocabulary tokens must start with " + ", ".join(SPECIAL_TOKENS))
        return cls(tokens[len(SPECIAL_TOKENS) :], min_count=int(data.get("min_count", 1)))

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RRGError(f"cannot read vocabulary {path}: {error}") from error
        return cls.from_dict(data)
