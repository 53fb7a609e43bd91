"""Score a trained DCRRG run on a split: Step-1 AUROC and the generated full reports' CE (and BLEU).

Used by the demo-quality test and to report a run's figures; ``python -m train evaluate`` is the
full evaluation (every NLG metric, baselines, P@K).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from rrg_core.data.datasets import R2GenDataset
from rrg_core.evaluation import evaluate_model
from rrg_core.generators import load_generator


def score_run(run_dir: Path, data: Path, split: str = "test", beam_size: int = 3) -> dict[str, Any]:
    """{"auroc_mean", "auroc", "ce_micro_f1", "ce_macro_f1", "bleu4", "studies"} of the final checkpoint.

    The same generator and scoring as ``python -m train evaluate``, with BLEU-4 only (no JVM start).
    """
    generator = load_generator(run_dir, torch.device("cpu"), beam_size=beam_size, expected_kind="dcrrg")
    dataset = R2GenDataset(data, split)
    images = (dataset[index]["images"] for index in range(len(dataset)))
    result = evaluate_model(generator, dataset.records, images, metrics=("BLEU_4",), progress=False)
    auroc = result.auroc
    return {
        "studies": len(dataset),
        "auroc_mean": auroc.mean if auroc is not None else math.nan,
        "auroc": auroc.per_observation if auroc is not None else {},
        "ce_micro_f1": result.clinical.micro.f1,
        "ce_macro_f1": result.clinical.macro.f1,
        "bleu4": result.nlg.get("BLEU_4"),
        "examples": [(s.reference, s.generated) for s in result.studies[:3]],
    }
