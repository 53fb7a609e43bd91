"""What a radiologist corrected: the labeler's reading of the draft a review started from against the
final text, per observation, in the categories of the ReXErr taxonomy of AI-draft errors that labels
can tell apart (ReXErr, PhysioNet: "false prediction", "false negation", "changed severity"):

- :data:`FALSE_PREDICTION` ("false finding"): the draft asserts a finding (positive or uncertain),
  the final text denies it or drops it;
- :data:`FALSE_NEGATION` ("missed finding"): the draft denies or omits it, the final text asserts it
  (positive or uncertain);
- :data:`CHANGED_CERTAINTY` ("certainty changed"): uncertain <-> positive;
- :data:`TEXT_ONLY` ("text only"): the text changed, no label did (wording, location, a sentence the
  labeler does not read).

A negative reading turned unmentioned (or back) is no correction: both say "not there". No Finding is
left out (it follows from the others). Pure Python: the store classifies every save with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rrg_core.labeler import LABELER_VERSION, label_report
from rrg_core.observations import NO_FINDING, OBSERVATIONS

FALSE_PREDICTION = "false_prediction"
FALSE_NEGATION = "false_negation"
CHANGED_CERTAINTY = "changed_certainty"
TEXT_ONLY = "text_only"
#: The per-observation categories, with the words the page uses.
CATEGORIES: dict[str, str] = {
    FALSE_PREDICTION: "false finding",
    FALSE_NEGATION: "missed finding",
    CHANGED_CERTAINTY: "certainty changed",
}
_ASSERTED = (1, -1)


def category(draft: int | None, final: int | None) -> str | None:
    """The correction category of one observation read as ``draft`` in the draft and ``final`` in the
    final text (1, 0, -1 or None), or None when there is no correction."""
    if draft in _ASSERTED and final in _ASSERTED:
        return CHANGED_CERTAINTY if draft != final else None
    if draft in _ASSERTED:
        return FALSE_PREDICTION
    if final in _ASSERTED:
        return FALSE_NEGATION
    return None


def _labels(text: str) -> dict[str, int | None]:
    found = label_report(text).labels if text.strip() else dict.fromkeys(OBSERVATIONS)
    return {name: None if value is None else int(value) for name, value in found.items()}


def classify(draft_text: str, final_text: str, model: str | None = None) -> dict[str, Any]:
    """The corrections from ``draft_text`` to ``final_text`` as JSON-ready data::

    {"model": ..., "labeler_version": ..., "text_changed": bool, "text_only": bool,
     "findings": [{"observation", "category", "draft", "final"}, ...]}   # CheXpert order
    """
    before, after = _labels(draft_text), _labels(final_text)
    findings = []
    for name in OBSERVATIONS:
        if name == NO_FINDING:
            continue
        found = category(before[name], after[name])
        if found is not None:
            findings.append(
                {"observation": name, "category": found, "draft": before[name], "final": after[name]}
            )
    changed = " ".join(draft_text.lower().split()) != " ".join(final_text.lower().split())
    return {
        "model": model,
        "labeler_version": LABELER_VERSION,
        "text_changed": changed,
        "text_only": changed and not findings,
        "findings": findings,
    }


def describe(corrections: Mapping[str, Any] | None) -> str:
    """One line for the version history: "false finding: Pleural Effusion; missed finding: Edema"."""
    if not corrections:
        return ""
    by_category: dict[str, list[str]] = {}
    for finding in corrections.get("findings", []):
        by_category.setdefault(finding["category"], []).append(finding["observation"])
    parts = [f"{CATEGORIES.get(key, key)}: {', '.join(names)}" for key, names in by_category.items()]
    if corrections.get("text_only"):
        parts.append("text only")
    elif not parts and not corrections.get("text_changed"):
        parts.append("no change")
    return "; ".join(parts)


def summarise(corrections: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over many reviews' corrections (one model's, say)::

    {"reviews": n, "text_only": n, "unchanged": n, "counts": {category: {observation: n}}}
    """
    summary: dict[str, Any] = {"reviews": 0, "text_only": 0, "unchanged": 0, "counts": {}}
    for item in corrections:
        summary["reviews"] += 1
        summary["text_only"] += bool(item.get("text_only"))
        summary["unchanged"] += not item.get("text_changed") and not item.get("findings")
        for finding in item.get("findings", []):
            by_observation = summary["counts"].setdefault(finding["category"], {})
            by_observation[finding["observation"]] = by_observation.get(finding["observation"], 0) + 1
    return summary


def summary_sentence(model: str, summary: Mapping[str, Any]) -> str:
    """One line per model: "DCRRG: reviewers removed 12 false Pleural Effusion; added 7 missed Cardiomegaly
    in 40 reviews"."""
    counts = summary.get("counts", {})
    parts = []
    for key, verb, adjective in (
        (FALSE_PREDICTION, "removed", "false"),
        (FALSE_NEGATION, "added", "missed"),
        (CHANGED_CERTAINTY, "changed the certainty of", ""),
    ):
        items = sorted(counts.get(key, {}).items(), key=lambda pair: (-pair[1], pair[0]))
        if items:
            named = ", ".join(f"{n} {adjective + ' ' if adjective else ''}{name}" for name, n in items)
            parts.append(f"{verb} {named}")
    reviews = summary.get("reviews", 0)
    what = "; ".join(parts) if parts else "corrected no finding"
    extra = f" ({summary['text_only']} with text-only changes)" if summary.get("text_only") else ""
    return f"{model}: reviewers {what} in {reviews} review{'s' if reviews != 1 else ''}{extra}."
