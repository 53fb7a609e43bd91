"""The trust signals' figures on real checkpoints: out-of-domain flags and sentence support.

- Share of the phantom test split's studies flagged out of domain (the aim: at most 5 %), per model
  and with either model's flag counting, as the pipeline does.
- Share of out-of-domain inputs flagged (the aim: 100 %): pydicom-data's real chest CR (RG1, three
  encodings), matplotlib's sample photographs, and synthetic non-radiographs made here.
- Sentence support on the phantom test split: the error rate (a sentence whose claims disagree with
  the study's true labels, :func:`rrg_core.support.agrees`) of weakly and of strongly supported
  sentences, per model and pooled.

Run from the repository root, e.g.:
  .venv/bin/python benchmarks/measure_trust.py --checkpoints ~/.cache/rrg-review/demo/checkpoints \
      --data ~/.cache/rrg-review/demo/phantoms
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from rrg_core.data.datasets import read_annotation  # noqa: E402
from rrg_core.pipeline import ReviewPipeline  # noqa: E402
from rrg_core.support import SupportSettings, agrees, sentence_claims, weak  # noqa: E402


def synthetic_non_radiographs(size: int = 256) -> dict[str, np.ndarray]:
    """Grey images that are plainly not chest X-rays (uint8)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    disks = np.zeros((size, size))
    for cx, cy, r in rng.random((12, 3)):
        disks[(x - cx) ** 2 + (y - cy) ** 2 < (0.05 + 0.1 * r) ** 2] = 1.0
    images = {
        "uniform noise": rng.random((size, size)),
        "checkerboard": ((np.floor(x * 8) + np.floor(y * 8)) % 2),
        "horizontal gradient": x,
        "flat grey": np.full((size, size), 0.5),
        "stripes": (np.sin(x * 60) > 0).astype(float),
        "random disks": disks,
        "smooth blobs": np.clip(np.cumsum(np.cumsum(rng.normal(size=(size, size)), 0), 1), -50, 50),
        "black": np.zeros((size, size)),
    }
    out = {}
    for name, image in images.items():
        lo, hi = float(image.min()), float(image.max())
        out[name] = ((image - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)
    return out


def ood_inputs() -> dict[str, object]:
    """Name -> a view source, for every out-of-domain input this script checks."""
    import matplotlib
    import pydicom.data

    found: dict[str, object] = {}
    for name in ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"):
        found[f"chest CR {name}"] = pydicom.data.get_testdata_file(name)
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        found[f"photo {name}"] = str(sample / name)
    for name, image in synthetic_non_radiographs().items():
        found[f"synthetic {name}"] = image
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", required=True, type=Path)
    parser.add_argument(
        "--data", required=True, type=Path, help="the phantom data set the models were trained on"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--samples", type=int, default=SupportSettings().samples)
    parser.add_argument("--temperature", type=float, default=SupportSettings().temperature)
    parser.add_argument("--limit", type=int, help="the first N studies of the split only")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = SupportSettings(samples=args.samples, temperature=args.temperature)
    pipeline = ReviewPipeline.from_checkpoints(args.checkpoints, device="cpu", support=settings)
    print(f"models: {', '.join(pipeline.models)}; support: {settings.describe()}")
    for key, model in pipeline.models.items():
        c = model.domain.calibration
        print(f"  {key}: threshold {c.threshold:.4f} (p{c.percentile:g} of {c.val_studies} {c.split})")

    records = read_annotation(args.data)[args.split][: args.limit]
    raw = json.loads((args.data / "annotation.json").read_text(encoding="utf-8"))[args.split]
    true_labels = {entry["id"]: entry.get("labels") or {} for entry in raw}
    flagged = {key: 0 for key in pipeline.models} | {"either": 0}
    counts = {key: {"weak": [0, 0], "strong": [0, 0], "none": 0} for key in pipeline.models}
    for record in records:
        views = [str(args.data / "images" / p) for p in record.image_paths]
        result = pipeline.review(views, study_id=record.id)
        flagged["either"] += not result.domain.in_domain
        for key, model in result.domain.models.items():
            flagged[key] += not model["in_domain"]
        truth = true_labels[record.id]
        for key, draft in result.drafts.items():
            for sentence, value in zip(draft.sentences, draft.support, strict=True):
                claims = sentence_claims(sentence)
                if value is None or not claims:
                    counts[key]["none"] += 1
                    continue
                wrong = not all(agrees(claim, truth.get(name)) for name, claim in claims.items())
                bucket = counts[key]["weak" if weak(value, settings) else "strong"]
                bucket[0] += wrong
                bucket[1] += 1
    n = len(records)
    print(f"\n{args.split} split of {args.data}: {n} studies")
    for key, value in flagged.items():
        print(f"  flagged out of domain by {key}: {value}/{n} = {value / n:.1%}")

    print(
        f"\nsentence support (weak: support < {settings.weak_below:.2f}); "
        "error = a claim disagrees with the true labels"
    )
    pooled = {"weak": [0, 0], "strong": [0, 0]}
    for key, c in counts.items():
        for kind in ("weak", "strong"):
            pooled[kind][0] += c[kind][0]
            pooled[kind][1] += c[kind][1]
        print(
            f"  {key}: "
            + "; ".join(_rate(kind, *c[kind]) for kind in ("weak", "strong"))
            + f"; {c['none']} name no observation"
        )
    print("  pooled: " + "; ".join(_rate(kind, *pooled[kind]) for kind in ("weak", "strong")))

    print("\nout-of-domain inputs")
    inputs = ood_inputs()
    hits = 0
    for name, source in inputs.items():
        result = pipeline.review([source])
        out = not result.domain.in_domain
        hits += out
        scores = ", ".join(
            f"{k} {m['score']:.2f}/{m['threshold']:.2f}" for k, m in result.domain.models.items()
        )
        print(f"  {'FLAGGED' if out else 'missed '} {name}: {scores}")
    print(f"  flagged {hits}/{len(inputs)} = {hits / len(inputs):.0%}")
    return 0


def _rate(kind: str, wrong: int, total: int) -> str:
    return f"{kind} {wrong}/{total} wrong = {wrong / total:.1%}" if total else f"{kind}: none"


if __name__ == "__main__":
    raise SystemExit(main())
