"""The "Model card" tab: which checkpoints are loaded, what they were trained on, how they scored.

Read from each checkpoint's config.json and metrics.json (``python -m train evaluate`` merges its
results there under the split's name). Figures are drawn with matplotlib's object API (no pyplot),
so building them from a server thread touches no global state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from rrg_core.observations import OBSERVATIONS
from ui.context import AppContext, CheckpointInfo
from ui.formatting import MODEL_NAMES

NOT_CLINICAL = (
    "**Not for clinical use without review.** The drafts, labels, heatmaps and neighbours on this page "
    "are produced by research models. A qualified radiologist must read the images and check and correct "
    "every draft before anything is used for a patient."
)
NLG_METRICS = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")
ROC_MISSING = (
    "ROC curves need, per observation, the false and true positive rates over the thresholds (or each test "
    "study's probability and reference label). The metrics.json of {models} holds the AUROC per observation "
    "but not those points, so the figure shows the AUROC per observation instead. `python -m train evaluate` "
    "would have to save them (e.g. under `auroc.curves`: observation -> {{fpr, tpr}}) for curves to be drawn."
)


def evaluations(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The evaluation results in a metrics.json, by split (the entries that hold NLG scores)."""
    return {k: v for k, v in metrics.items() if isinstance(v, dict) and isinstance(v.get("nlg"), dict)}


def _number(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def trained_on(context: AppContext, info: CheckpointInfo) -> str:
    """What a checkpoint was trained on, as far as the app can tell."""
    if context.trained_on:
        return context.trained_on
    root = info.data_root
    if root is not None and (root / "masks").is_dir():
        return f"synthetic phantoms (the index's data set {root} has finding masks: phantom generator)"
    if root is not None:
        return f"the data set at {root} (data fingerprint {info.header.get('data_fingerprint') or 'unknown'})"
    return f"unknown (data fingerprint {info.header.get('data_fingerprint') or 'not recorded'})"


def checkpoints_markdown(context: AppContext) -> str:
    """The loaded checkpoints as a table, the models that are not loaded with the reason, and what
    each was trained on (said once when both were trained on the same)."""
    lines = ["| Model | Name | Checkpoint | Hash | Preset | Created |", "|---|---|---|---|---|---|"]
    trained: dict[str, str] = {}
    for key, model in context.pipeline.models.items():
        info = context.checkpoints.get(key)
        header = info.header if info else {}
        lines.append(
            f"| {MODEL_NAMES.get(key, key)} | {model.generator.name} | `{info.folder if info else '?'}` | "
            f"`{model.checkpoint_hash}` | {header.get('preset') or '–'} | "
            f"{str(header.get('created', '–'))[:19]} |"
        )
        if info is not None:
            trained[MODEL_NAMES.get(key, key)] = trained_on(context, info)
    for key, reason in context.pipeline.missing.items():
        lines.append(f"| {MODEL_NAMES.get(key, key)} | not loaded | {reason} | | | |")
    if len(set(trained.values())) == 1:
        lines.append(f"\n**Trained on:** {next(iter(trained.values()))}")
    else:
        lines += ["", *(f"- **{name} trained on:** {what}" for name, what in trained.items())]
    return "\n".join(lines)


def corrections_markdown(context: AppContext) -> str:
    """Per model, what reviewers corrected in its drafts (the current reviews that started from one)."""
    from rrg_core.corrections import summary_sentence
    from rrg_core.store import StoreError

    try:
        summaries = context.store.get().correction_summaries()
    except StoreError as error:
        return f"The review database cannot be read now: {error}"
    if not summaries:
        return "No saved review started from a model draft yet: nothing to summarise."
    lines = [f"- {summary_sentence(name, summary)}" for name, summary in summaries.items()]
    lines.append(
        "\nCategories (the ReXErr error types labels can tell apart): *false finding* (the draft asserted "
        "it, the report denies or drops it), *missed finding* (the report asserts what the draft denied or "
        "omitted), *certainty changed* (uncertain ↔ positive); read by the labeler from the draft and the "
        "final text."
    )
    return "\n".join(lines)


def evaluation_markdown(context: AppContext) -> str:
    """The evaluation tables of every loaded checkpoint, split by split."""
    by_model = {key: evaluations(info.metrics) for key, info in context.checkpoints.items()}
    splits = sorted({split for found in by_model.values() for split in found})
    if not splits:
        return (
            "No evaluation results in the checkpoints' metrics.json. Run "
            "`python -m train evaluate --checkpoint "
            "RUN_DIR --data DIR` to add them."
        )
    parts = []
    keys = list(by_model)
    for split in splits:
        head = "| Metric | " + " | ".join(MODEL_NAMES.get(k, k) for k in keys) + " |"
        rule = "|---|" + "---|" * len(keys)
        rows = [head, rule]
        results = {k: by_model[k].get(split, {}) for k in keys}
        counts = " / ".join(str(results[k].get("num_studies", "–")) for k in keys)
        for metric in NLG_METRICS:
            rows.append(
                f"| {metric} | "
                + " | ".join(_number(results[k].get("nlg", {}).get(metric)) for k in keys)
                + " |"
            )
        for block, label in (("clinical_efficacy", "CE"), ("clinical_efficacy_5", "CE-5")):
            for average in ("micro", "macro", "example_based"):
                for measure in ("precision", "recall", "f1") if label == "CE" else ("f1",):
                    cells = [
                        _number(((results[k].get(block) or {}).get(average) or {}).get(measure)) for k in keys
                    ]
                    name = f"{label} {average.replace('_', '-')} {measure}"
                    rows.append(f"| {name} | " + " | ".join(cells) + " |")
        rows.append(
            "| AUROC (mean) | "
            + " | ".join(_number((results[k].get("auroc") or {}).get("mean")) for k in keys)
            + " |"
        )
        rows.extend(_image_dependence_rows(results, keys))
        rows.append(
            "| Studies/s | "
            + " | ".join(_number(results[k].get("studies_per_second"), 1) for k in keys)
            + " |"
        )
        uncertain = {str(results[k].get("uncertain_as", "negative")) for k in keys if results[k]}
        table = "\n".join(rows)
        parts.append(f"#### Split `{split}` ({counts} studies)\n\n{table}\n\n{ce_note(uncertain)}")
        parts.append(per_observation_markdown(results))
    return "\n\n".join(parts)


def _image_dependence_rows(results: Mapping[str, Mapping[str, Any]], keys: list[str]) -> list[str]:
    """Distinct drafts and the swapped-image CE F1 (``train evaluate``'s image dependence), if recorded."""
    found = {k: results[k].get("image_dependence") or {} for k in keys}
    if not any(found.values()):
        return []
    distinct = [f"{d['distinct_drafts']}/{d['num_studies']}" if d else "–" for d in (found[k] for k in keys)]
    swapped = [_number(found[k].get("swapped_ce_micro_f1")) for k in keys]
    return [
        "| Distinct drafts | " + " | ".join(distinct) + " |",
        "| CE micro F1, another study's images | " + " | ".join(swapped) + " |",
    ]


def ce_note(uncertain_as: set[str]) -> str:
    """Which CE figure the papers' tables correspond to, and how uncertain labels were counted."""
    counted = ", ".join(sorted(uncertain_as)) or "negative"
    return (
        "CE: clinical efficacy from the project's CheXpert-convention labeler, over the 14 observations; "
        "CE-5 over the CheXbert five (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion). "
        f"Uncertain labels counted as {counted}. The papers' CE rows (R2Gen, DCRRG) are the **macro** "
        'figures; the R2Gen-lineage and PromptMRG "example-based" rows are **example-based**; '
        '"micro-14" / "macro-14" and CE-5 tables match the rows of those names. Never compare '
        'across forms. "Another study\'s images": the CE micro F1 when every study is given another '
        "study's images; a model that reads the image loses most of its CE there, one that writes the "
        "same report for every image loses nothing."
    )


def per_observation_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Per observation: each model's CE F1 (with support) and AUROC."""
    keys = list(results)
    head = (
        "| Observation | "
        + " | ".join(f"{MODEL_NAMES.get(k, k)} F1 | {MODEL_NAMES.get(k, k)} AUROC" for k in keys)
        + " |"
    )
    rows = [head, "|---|" + "---|---|" * len(keys)]
    for name in OBSERVATIONS:
        cells = []
        for k in keys:
            ce = ((results[k].get("clinical_efficacy") or {}).get("per_observation") or {}).get(name) or {}
            auroc = ((results[k].get("auroc") or {}).get("per_observation") or {}).get(name)
            support = ce.get("support")
            cells.append(f"{_number(ce.get('f1'))}" + (f" (n={support})" if support is not None else ""))
            cells.append(_number(auroc))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def roc_figure(context: AppContext) -> tuple[Figure | None, str]:
    """ROC curves per observation when the metrics hold them, else the AUROC per observation; and a note."""
    curves: dict[str, dict[str, Any]] = {}
    aurocs: dict[str, dict[str, float]] = {}
    for key, info in context.checkpoints.items():
        for result in evaluations(info.metrics).values():
            auroc = result.get("auroc") or {}
            if isinstance(auroc.get("curves"), dict):
                curves[key] = auroc["curves"]
            if isinstance(auroc.get("per_observation"), dict):
                aurocs[key] = auroc["per_observation"]
            break  # the first split (metrics.json keeps them in the order they were added)
    if curves:
        return _curves(curves), "ROC curves per observation from the checkpoints' metrics.json."
    if not aurocs:
        return (
            None,
            "No AUROC in the checkpoints' metrics.json (run `python -m train evaluate`): nothing to plot.",
        )
    names = ", ".join(MODEL_NAMES.get(k, k) for k in aurocs)
    return _auroc_bars(aurocs), ROC_MISSING.format(models=names)


def _curves(curves: Mapping[str, Mapping[str, Any]]) -> Figure:
    figure = Figure(figsize=(12, 7), layout="constrained")
    axes = figure.subplots(3, 5, sharex=True, sharey=True).ravel()
    for axis, name in zip(axes, OBSERVATIONS, strict=False):
        axis.plot([0, 1], [0, 1], color="#9ca3af", linewidth=0.8, linestyle="--")
        for key, found in curves.items():
            curve = found.get(name) or {}
            if curve.get("fpr") and curve.get("tpr"):
                axis.plot(curve["fpr"], curve["tpr"], label=MODEL_NAMES.get(key, key))
        axis.set_title(name, fontsize=9)
    axes[-1].axis("off")
    axes[0].legend(fontsize=8)
    figure.supxlabel("false positive rate")
    figure.supylabel("true positive rate")
    return figure


def _auroc_bars(aurocs: Mapping[str, Mapping[str, float]]) -> Figure:
    figure = Figure(figsize=(9, 5), layout="constrained")
    axis = figure.subplots()
    height = 0.8 / max(len(aurocs), 1)
    positions = range(len(OBSERVATIONS))
    for offset, (key, values) in enumerate(aurocs.items()):
        numbers = [
            values.get(name) if isinstance(values.get(name), int | float) else 0.0 for name in OBSERVATIONS
        ]
        axis.barh(
            [p + offset * height for p in positions],
            numbers,
            height=height,
            label=f"{MODEL_NAMES.get(key, key)}",
        )
    axis.axvline(0.5, color="#6b7280", linewidth=0.8, linestyle="--")
    axis.set_yticks([p + height * (len(aurocs) - 1) / 2 for p in positions], OBSERVATIONS, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("AUROC on the evaluation split (0.5: chance)")
    axis.legend(fontsize=8, loc="lower right")
    return figure
