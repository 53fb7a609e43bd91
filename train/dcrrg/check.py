"""Score a trained DCRRG run on a split: Step-1 AUROC and the generated full reports' CE (and BLEU).

Used by the demo-quality test and to report a run's figures; ``python -m train evaluate`` is the
full evaluation (every NLG metric, baselines, P@K).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from rrg_core.data.datasets import IMAGES_DIR, detect_spec, read_annotation
from rrg_core.evaluation import GeneratedReport, evaluate_reports
from rrg_core.models.dcrrg_io import load_dcrrg
from rrg_core.observations import OBSERVATIONS
from train.dcrrg.data import cache_images, to_model_input, transform_config


@torch.no_grad()
def score_run(run_dir: Path, data: Path, split: str = "test", beam_size: int = 3) -> dict[str, Any]:
    """{"auroc_mean", "auroc", "ce_micro_f1", "ce_macro_f1", "bleu4", "studies"} of the final checkpoint."""
    model, checkpoint = load_dcrrg(run_dir)
    settings = checkpoint.config["training"]["settings"]
    size = int(settings["image_size"])
    records = read_annotation(data)[split]
    views = detect_spec(records).views
    cached = cache_images(
        [[data / IMAGES_DIR / p for p in r.image_paths] for r in records], size, views, 0, False
    )
    config = transform_config(model.config.clip.image_encoder, size)
    generated = []
    for start in range(0, len(records), 16):
        images = to_model_input(cached[start : start + 16], config, torch.device("cpu"))
        probabilities = model.clip.observation_probabilities(images)
        ids = model.generate(images, beam_size=beam_size)
        for offset, row in enumerate(ids):
            record = records[start + offset]
            probs = dict(zip(OBSERVATIONS, probabilities[offset].tolist(), strict=True))
            generated.append(GeneratedReport(record.id, checkpoint.vocab.decode(row), probabilities=probs))
    result = evaluate_reports(records, generated, metrics=("BLEU_4",))
    auroc = result.auroc
    return {
        "studies": len(records),
        "auroc_mean": auroc.mean if auroc is not None else math.nan,
        "auroc": auroc.per_observation if auroc is not None else {},
        "ce_micro_f1": result.clinical.micro.f1,
        "ce_macro_f1": result.clinical.macro.f1,
        "bleu4": result.nlg.get("BLEU_4"),
        "examples": [(s.reference, s.generated) for s in result.studies[:3]],
    }
