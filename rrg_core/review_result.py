"""What :class:`~rrg_core.pipeline.ReviewPipeline` returns for one study: :class:`ReviewResult`.

The one record the app shows, the store saves and a batch job prints. Plain dataclasses of
strings, numbers, lists and dicts, so :meth:`ReviewResult.to_dict` is JSON as it stands; the only
arrays are the UAR attention maps, kept as numpy in memory and written as nested lists (rounded)
in JSON. ``schema_version`` changes whenever a field changes meaning, so a stored result is never
misread.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rrg_core.errors import RRGError
from rrg_core.observations import NUM_OBSERVATIONS

#: Bumped when a field of the JSON form changes meaning or shape (2: ``domain``, ``support`` and each
#: draft's per-sentence ``support``).
SCHEMA_VERSION = 2
MODELS: tuple[str, ...] = ("dcrrg", "uar")


@dataclass
class ModelDraft:
    """One model's draft: its text, sentences and tokens, and the labels the labeler reads from it.

    ``labels``: observation -> 1 positive, 0 negative, -1 uncertain, None unmentioned.
    ``support``: per sentence, the share of the model's alternative drafts that agree with what the
    sentence says (:mod:`rrg_core.support`); None for a sentence naming no observation. Empty when
    sentence support was not computed.
    """

    model: str
    name: str
    checkpoint_hash: str
    text: str
    sentences: list[str]
    tokens: list[str]
    labels: dict[str, int | None]
    support: list[float | None] = field(default_factory=list)


@dataclass
class DomainCheck:
    """Whether the study looks like the models' training studies (:mod:`rrg_core.retrieval.domain`).

    ``in_domain`` False when any loaded model's score is above its threshold; ``score``/``threshold``
    are those of the model that finds the study least familiar; ``models``: per model key its own
    ``{"in_domain", "score", "threshold", "k", "train_studies"}``. ``message``: what to tell the
    radiologist ("" when in domain).
    """

    in_domain: bool
    score: float
    threshold: float
    message: str
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ObservationRow:
    """A row of the DCRRG paper's Table 7: the Step-1 probability, its threshold and the label it
    gives, and the Step-3 description of that observation.

    ``withheld``: a generated description that said the opposite of the row's label
    (:mod:`rrg_core.table_consistency`) is not shown as the description (which is then empty) but
    kept here, so the page can show it struck through and nothing is lost.
    """

    observation: str
    probability: float
    threshold: float
    label: int
    description: str
    withheld: str = ""


@dataclass
class Disagreement:
    """An observation to look at: the two drafts, or a draft and the Step-1 probability, disagree.

    ``labels``: what each draft says (1, 0, -1 or None); ``probability``/``threshold``: DCRRG's
    Step-1 figures (None when DCRRG is not loaded); ``reasons``: sentences a radiologist can read.
    """

    observation: str
    labels: dict[str, int | None]
    probability: float | None
    threshold: float | None
    reasons: list[str]


@dataclass
class TokenAttention:
    """UAR's text-to-image attention: for each generated token, a map over each view's grid; and the
    findings head's evidence for each observation on the same grid.

    ``maps`` (T, V, h, w), float32; each token's maps sum to 1 over all its views together.
    ``evidence`` (14, V, h, w), float32, signed (gradient x input), in the order of
    :data:`~rrg_core.observations.OBSERVATIONS`; None for a model without a findings head (and in
    results saved before it existed).
    """

    tokens: list[str]
    maps: np.ndarray
    evidence: np.ndarray | None = None

    def to_dict(self, decimals: int = 5) -> dict[str, Any]:
        evidence = None if self.evidence is None else _rounded(self.evidence, decimals)
        return {"tokens": self.tokens, "maps": _rounded(self.maps, decimals), "evidence": evidence}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenAttention:
        maps = np.asarray(data["maps"], dtype=np.float32)
        if maps.ndim != 4 and len(data["tokens"]):
            raise RRGError(f"attention maps must be (tokens, views, h, w), got shape {maps.shape}")
        evidence = data.get("evidence")
        if evidence is not None:
            evidence = np.asarray(evidence, dtype=np.float32)
            if evidence.ndim != 4 or evidence.shape[0] != NUM_OBSERVATIONS:
                raise RRGError(f"evidence maps must be (14, views, h, w), got shape {evidence.shape}")
        return cls(list(data["tokens"]), maps.reshape(len(data["tokens"]), *maps.shape[1:]), evidence)


def _rounded(values: np.ndarray, decimals: int) -> list:
    return np.round(values.astype(np.float64), decimals).tolist()


@dataclass(frozen=True)
class Neighbour:
    """A retrieved study: its id, report (as in the annotation), first image path (relative to the
    data set folder the index was built from, ``images/...``) and cosine score."""

    study_id: str
    report: str
    image_path: str | None
    score: float


@dataclass
class ReviewResult:
    """Everything the pipeline found for one study (module docstring).

    ``drafts``/``missing``: per model key ("dcrrg", "uar"), the draft or why there is none.
    ``observations``: DCRRG's 14 Table-7 rows (empty without DCRRG). ``attention``: UAR's per-token
    maps (None without UAR). ``neighbours``: per index ("dcrrg", "uar") the k nearest studies.
    ``warnings``: things the radiologist should know (an odd image, checkpoints from different data).
    ``timings``: seconds per part. ``domain``: the out-of-domain check (None when no loaded model has
    a calibrated index). ``support``: how each draft's sentence support was computed (method, samples,
    temperature, seed, weak_below), None when it was not.
    """

    study_id: str | None
    views: list[dict[str, Any]]
    drafts: dict[str, ModelDraft] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    observations: list[ObservationRow] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)
    attention: TokenAttention | None = None
    neighbours: dict[str, list[Neighbour]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    domain: DomainCheck | None = None
    support: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (attention maps as nested lists)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "attention"}
        data = json.loads(json.dumps(data, default=_plain))
        data["attention"] = None if self.attention is None else self.attention.to_dict()
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReviewResult:
        """Rebuild a result from :meth:`to_dict`'s form; another schema version is refused."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RRGError(f"review result schema version {version!r}; this code reads {SCHEMA_VERSION}")
        try:
            return cls(
                study_id=data["study_id"],
                views=list(data["views"]),
                drafts={k: ModelDraft(**v) for k, v in data["drafts"].items()},
                missing=dict(data["missing"]),
                observations=[ObservationRow(**row) for row in data["observations"]],
                disagreements=[Disagreement(**row) for row in data["disagreements"]],
                attention=None if data["attention"] is None else TokenAttention.from_dict(data["attention"]),
                neighbours={k: [Neighbour(**n) for n in v] for k, v in data["neighbours"].items()},
                warnings=list(data["warnings"]),
                timings=dict(data["timings"]),
                domain=None if data["domain"] is None else DomainCheck(**data["domain"]),
                support=data["support"],
            )
        except (KeyError, TypeError) as error:
            raise RRGError(f"not a review result: {error}") from error

    @classmethod
    def from_json(cls, text: str) -> ReviewResult:
        return cls.from_dict(json.loads(text))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
