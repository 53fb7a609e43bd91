"""Pure formatting for the review page: model output -> what the Gradio components show.

No Gradio import and no state: every function takes plain values and returns strings, lists or
rows, so each can be unit-tested on its own. Everything shown as HTML is escaped here: reports,
names and messages can hold any characters a user or a model produced.
"""

from __future__ import annotations

import base64
import difflib
import html
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import numpy as np
from PIL import Image

from rrg_core.corrections import describe as describe_corrections
from rrg_core.labeler import label_report
from rrg_core.observations import OBSERVATIONS
from rrg_core.review_result import Disagreement, DomainCheck, ModelDraft, Neighbour, ObservationRow

MODEL_NAMES = {"dcrrg": "DCRRG", "uar": "UAR"}
LABEL_WORDS = {1: "positive", 0: "negative", -1: "uncertain", None: "not mentioned"}
#: The label a click on the table's label cell moves to: positive -> negative -> uncertain -> none.
NEXT_LABEL = {1: 0, 0: -1, -1: None, None: 1}
TABLE_HEADERS = ["Observation", "Your label (click)", "Step-1 probability", "Description", "Drafts say"]
LABEL_COLUMN = 1
_SHORT = {1: "pos", 0: "neg", -1: "unc", None: "—"}


def escape(text: object) -> str:
    """``text`` as HTML-safe text (quotes included)."""
    return html.escape(str(text), quote=True)


# -- alerts ---------------------------------------------------------------------------------------


def alert(message: str, kind: str = "error") -> str:
    """An alert box (kind: error, warning, info, success) for the page's message area."""
    if not message:
        return ""
    kind = kind if kind in ("error", "warning", "info", "success") else "error"
    role = "alert" if kind in ("error", "warning") else "status"
    body = "<br>".join(escape(line) for line in str(message).splitlines())
    return f'<div class="rrg-alert rrg-{kind}" role="{role}">{body}</div>'


def alerts(messages: Iterable[tuple[str, str]]) -> str:
    """Several alerts, one after the other (pairs of kind and message)."""
    return "".join(alert(message, kind) for kind, message in messages if message)


# -- drafts ---------------------------------------------------------------------------------------


def prose(sentences: Sequence[str]) -> str:
    """Model sentences ("the heart is enlarged") as report prose: "The heart is enlarged." ..."""
    parts = []
    for sentence in sentences:
        text = " ".join(sentence.split())
        if not text:
            continue
        text = text[0].upper() + text[1:]
        parts.append(text if text.endswith((".", "!", "?")) else text + ".")
    return " ".join(parts)


def flagged_sentences(draft: ModelDraft, disagreements: Sequence[Disagreement]) -> dict[str, list[str]]:
    """For each sentence of ``draft`` that the labeler ties to a flagged observation, those observations."""
    flagged = {d.observation for d in disagreements}
    if not flagged or not draft.text:
        return {}
    behind = label_report(draft.text).sentences
    out: dict[str, list[str]] = {}
    for observation in OBSERVATIONS:
        if observation in flagged:
            for sentence in behind.get(observation, ()):
                out.setdefault(sentence, []).append(observation)
    return out


#: The category of a weakly supported sentence (a legend entry of the drafts' HighlightedText).
WEAK = "◌ weakly supported"


def _category(observations: Sequence[str] | None, weak: bool = False) -> str | None:
    flag = "⚑ " + ", ".join(observations) if observations else None
    if weak:
        return f"{flag} · {WEAK}" if flag else WEAK
    return flag


def weak_sentences(draft: ModelDraft, weak_below: float | None) -> set[str]:
    """The draft's sentences whose support is below ``weak_below`` (none when support was not computed)."""
    if weak_below is None or len(draft.support) != len(draft.sentences):
        return set()
    return {
        s for s, v in zip(draft.sentences, draft.support, strict=True) if v is not None and v < weak_below
    }


def sentence_highlights(
    draft: ModelDraft, disagreements: Sequence[Disagreement], weak_below: float | None = None
) -> list[tuple[str, str | None]]:
    """The draft as (sentence, category) pairs for a HighlightedText; flagged and weakly supported
    sentences get a category."""
    flags = flagged_sentences(draft, disagreements)
    weak = weak_sentences(draft, weak_below)
    return [(prose([s]) + " ", _category(flags.get(s), s in weak)) for s in draft.sentences]


def word_highlights(
    draft: ModelDraft, disagreements: Sequence[Disagreement], weak_below: float | None = None
) -> list[tuple[str, str | None]]:
    """The draft as one (word, category) pair per token, so that a click names the token's index.

    Tokens of flagged or weakly supported sentences carry the sentence's category.
    """
    flags = flagged_sentences(draft, disagreements)
    weak = weak_sentences(draft, weak_below)
    pairs: list[tuple[str, str | None]] = []
    sentence: list[int] = []

    def close() -> None:
        if sentence:
            text = " ".join(draft.tokens[i] for i in sentence)
            category = _category(flags.get(text), text in weak)
            for i in sentence:
                pairs[i] = (pairs[i][0], category)
            sentence.clear()

    for position, token in enumerate(draft.tokens):
        pairs.append((token + " ", None))
        if token == ".":
            close()
        else:
            sentence.append(position)
    close()
    return pairs


def disagreements_html(disagreements: Sequence[Disagreement]) -> str:
    """The disagreement flags with their reasons, or a line saying there are none."""
    if not disagreements:
        return '<div class="rrg-flags rrg-none">No disagreement between the drafts and the classifier.</div>'
    items = "".join(
        f"<li><b>⚑ {escape(d.observation)}</b>: {escape('; '.join(d.reasons))}</li>" for d in disagreements
    )
    return f'<div class="rrg-flags"><b>Look here</b> ({len(disagreements)}):<ul>{items}</ul></div>'


def domain_html(domain: DomainCheck | None) -> str:
    """The out-of-domain warning above the drafts ("" when the study is in domain or was not checked)."""
    if domain is None or domain.in_domain:
        return ""
    return (
        '<div class="rrg-domain" role="alert"><div class="rrg-domain-title">⚠ Out of domain</div>'
        f"<div>{escape(domain.message)}</div></div>"
    )


def support_note(drafts: Mapping[str, ModelDraft], support: Mapping[str, object] | None) -> str:
    """A line under the drafts saying how many sentences are weakly supported and how that was measured."""
    if not support:
        return ""
    below = support.get("weak_below")
    counts = []
    for key, draft in drafts.items():
        weak = len(weak_sentences(draft, below if isinstance(below, float | int) else None))
        counts.append(f"{MODEL_NAMES.get(key, key)} {weak} of {len(draft.sentences)}")
    return (
        f'<div class="rrg-support rrg-small">{WEAK} sentences ({escape("; ".join(counts))}): fewer than '
        f"{float(below or 0):.0%} of {support.get('samples')} alternative drafts "
        f"({escape(support.get('method'))} at T={support.get('temperature')}) say the same about"
        " the findings they name.</div>"
    )


def missing_html(missing: Mapping[str, str]) -> str:
    """Why a model gave no draft (its checkpoint is missing or broken)."""
    return alerts(("warning", f"{MODEL_NAMES.get(key, key)}: {reason}") for key, reason in missing.items())


# -- Table 7 --------------------------------------------------------------------------------------


def probability_bar(probability: float | None, threshold: float | None) -> str:
    """A horizontal bar of the probability with a tick at the threshold (HTML with inline styles)."""
    if probability is None:
        return '<span class="rrg-muted">n/a (no DCRRG)</span>'
    p = min(max(float(probability), 0.0), 1.0)
    t = None if threshold is None else min(max(float(threshold), 0.0), 1.0)
    colour = "#c2410c" if t is not None and p >= t else "#2563eb"
    tick = (
        f'<span title="threshold {t:.2f}" style="position:absolute;left:calc({t * 100:.1f}% - 1px);'
        'top:-3px;width:2px;height:16px;background:#111"></span>'
        if t is not None
        else ""
    )
    label = f"{p:.2f}"
    hint = f"probability {p:.2f}" + (f", threshold {t:.2f} (the black tick)" if t is not None else "")
    return (
        f'<span title="{hint}" style="display:inline-flex;align-items:center;gap:6px">'
        '<span style="position:relative;display:inline-block;width:90px;height:10px;background:#e5e7eb;'
        'border-radius:2px">'
        f'<span style="position:absolute;left:0;top:0;height:10px;width:{p * 100:.1f}%;background:{colour};'
        f'border-radius:2px"></span>{tick}</span>'
        f'<span style="font-variant-numeric:tabular-nums;font-size:12px">{label}</span></span>'
    )


def label_cell(label: int | None, model_label: int | None) -> str:
    """The reviewer's label, marked when it differs from the model's."""
    word = LABEL_WORDS[label]
    return f"{word} ✎" if label != model_label else word


def observation_rows(
    observations: Sequence[ObservationRow],
    labels: Mapping[str, int | None],
    drafts: Mapping[str, ModelDraft],
    disagreements: Sequence[Disagreement],
    model_labels: Mapping[str, int | None] | None = None,
) -> list[list[str]]:
    """The rows of the observation table (:data:`TABLE_HEADERS`), one per observation in CheXpert order.

    ``labels``: the reviewer's labels; ``model_labels``: where they started (marks edited cells).
    Works without DCRRG (no Step-1 figures), from the drafts' labels alone.
    """
    by_name = {row.observation: row for row in observations}
    flagged = {d.observation for d in disagreements}
    start = model_labels if model_labels is not None else labels
    rows = []
    for name in OBSERVATIONS:
        row = by_name.get(name)
        says = " · ".join(f"{MODEL_NAMES.get(k, k)} {_SHORT[d.labels.get(name)]}" for k, d in drafts.items())
        says = f'<b style="color:#b45309">⚑ {escape(says)}</b>' if name in flagged else escape(says)
        rows.append(
            [
                name,
                label_cell(labels.get(name), start.get(name)),
                probability_bar(row.probability if row else None, row.threshold if row else None),
                description_cell(row),
                says,
            ]
        )
    return rows


def description_cell(row: ObservationRow | None) -> str:
    """Table 7's description; a withheld one (it said the opposite of the row's label) struck through
    with the reason, so the reader sees what the model wrote and that it was not kept."""
    if row is None:
        return ""
    if row.withheld:
        reason = "withheld: the generated description said the opposite of this row's label"
        return f'<s class="rrg-muted" title="{reason}">{escape(row.withheld)}</s> <i>(withheld)</i>'
    return escape(row.description)


def starting_labels(
    observations: Sequence[ObservationRow], drafts: Mapping[str, ModelDraft]
) -> dict[str, int | None]:
    """The labels the reviewer starts from: DCRRG's Step-1 labels, else the first draft's labels."""
    if observations:
        by_name = {row.observation: int(row.label) for row in observations}
        return {name: by_name.get(name) for name in OBSERVATIONS}
    for draft in drafts.values():
        return {name: draft.labels.get(name) for name in OBSERVATIONS}
    return dict.fromkeys(OBSERVATIONS)


# -- neighbours -----------------------------------------------------------------------------------


def thumbnail_uri(image: np.ndarray | None, side: int = 112) -> str | None:
    """A small PNG data URI of a grey or RGB uint8 image (None passes through)."""
    if image is None:
        return None
    picture = Image.fromarray(image)
    picture.thumbnail((side, side))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def neighbours_html(
    neighbours: Mapping[str, Sequence[Neighbour]],
    thumbnails: Mapping[tuple[str, int], str | None],
    missing_reason: str = "",
) -> str:
    """Cards of the retrieved studies per index: thumbnail, score, id and the full report.

    ``thumbnails[(model, i)]``: a data URI of neighbour ``i``'s image, or None when it is not found.
    """
    if not any(neighbours.values()):
        return (
            '<div class="rrg-muted">No retrieval neighbours: no index was saved beside the checkpoints.</div>'
        )
    sections = []
    for key, found in neighbours.items():
        cards = []
        for i, n in enumerate(found):
            uri = thumbnails.get((key, i))
            picture = (
                f'<img src="{uri}" alt="image of study {escape(n.study_id)}">'
                if uri
                else f'<div class="rrg-noimg" title="{escape(missing_reason)}">image not found</div>'
            )
            cards.append(
                f'<div class="rrg-card">{picture}<div class="rrg-card-body">'
                f"<div><b>{escape(n.study_id)}</b> "
                f'<span class="rrg-score">similarity {n.score:.3f}</span></div>'
                f'<div class="rrg-report">{escape(n.report)}</div></div></div>'
            )
        title = f"Nearest training studies by {MODEL_NAMES.get(key, key)}'s image embedding"
        sections.append(
            f'<div class="rrg-nsec"><h4>{escape(title)}</h4>'
            f'<div class="rrg-cards">{"".join(cards)}</div></div>'
        )
    return "".join(sections)


# -- worklist and history -------------------------------------------------------------------------

WORKLIST_HEADERS = ["Study", "Source", "Views", "Status", "Reviewer", "Version", "Last change (UTC)", "Flags"]
HISTORY_HEADERS = ["Version", "Reviewer", "Status", "Saved (UTC)", "Comment", "Started from", "Corrections"]
OUT_OF_DOMAIN = "⚠ out of domain"


def corrections_cell(corrections: Mapping[str, object] | None) -> str:
    """What a version corrected in its starting draft, for the history table."""
    return describe_corrections(corrections) if corrections else "–"


def when(moment: datetime | None) -> str:
    """A timestamp for tables: ``2026-11-23 10:32``."""
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def word_diff_html(before: str, after: str) -> str:
    """A word-level diff: deleted words struck through in red, inserted words underlined in green."""
    old, new = before.split(), after.split()
    if not old and not new:
        return '<div class="rrg-muted">Both texts are empty.</div>'
    parts = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            parts.append(escape(" ".join(old[a0:a1])))
            continue
        if op in ("delete", "replace"):
            parts.append(f'<del class="rrg-del">{escape(" ".join(old[a0:a1]))}</del>')
        if op in ("insert", "replace"):
            parts.append(f'<ins class="rrg-ins">{escape(" ".join(new[b0:b1]))}</ins>')
    codes = matcher.get_opcodes()
    deleted = sum(a1 - a0 for op, a0, a1, _b0, _b1 in codes if op in ("delete", "replace"))
    inserted = sum(b1 - b0 for op, _a0, _a1, b0, b1 in codes if op in ("insert", "replace"))
    summary = f"{len(old)} words in the draft: {deleted} removed, {inserted} added"
    return f'<div class="rrg-diff"><div class="rrg-muted">{summary}</div><p>{" ".join(parts)}</p></div>'
