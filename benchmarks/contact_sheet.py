"""Write a PNG contact sheet of 16 phantom studies (frontal + lateral each), captioned with their findings.

Usage: ``python benchmarks/contact_sheet.py OUT.png [--size 256] [--seed 0]``. Two normal studies,
then one study per finding (large, so a reader can judge the drawing), extras included.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rrg_core.observations import Label
from rrg_core.phantoms import FRONTAL, LATERAL, Finding, StudySpec, render_study, sample_body

P = Label.POSITIVE
SHOWCASE: list[tuple[Finding, ...]] = [
    (),
    (),
    (Finding("Cardiomegaly", P, severity="large"),),
    (Finding("Pleural Effusion", P, "right", severity="moderate"),),
    (Finding("Pneumothorax", P, "left", severity="large"),),
    (Finding("Consolidation", P, "right", "lower", "large"),),
    (Finding("Pneumonia", P, "left", "mid", "moderate"),),
    (Finding("Atelectasis", P, "bilateral", "lower", "moderate"),),
    (Finding("Edema", P, severity="large"), Finding("Pleural Effusion", P, "bilateral", severity="mild")),
    (Finding("Enlarged Cardiomediastinum", P, severity="large"),),
    (Finding("Lung Lesion", P, "right", "upper", "large"), Finding("Lung Lesion", P, "left", "mid", "mild")),
    (Finding("Lung Opacity", P, "left", "upper", "moderate"), Finding("Fracture", P, "right", "mid")),
    (Finding("Support Devices", P, devices=("pacemaker", "sternotomy", "central line")),),
    (
        Finding("Support Devices", P, devices=("endotracheal tube", "nasogastric tube")),
        Finding("Pleural Other", P, "left", "mid", "large"),
    ),
    (Finding("hyperinflation", P, severity="large"), Finding("granuloma", P, "right", "upper")),
    (
        Finding("scoliosis", P, severity="large"),
        Finding("hiatal_hernia", P, severity="large"),
        Finding("aorta", P, severity="large"),
    ),
]


def caption(findings: tuple[Finding, ...]) -> str:
    """Short caption: the findings' names with side and severity."""
    if not findings:
        return "No Finding"
    parts = []
    for f in findings:
        attrs = " ".join(a for a in (f.side, f.zone, f.severity) if a)
        parts.append(f"{f.name}" + (f" ({attrs})" if attrs else ""))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Render the showcase and save the sheet."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    fig, axes = plt.subplots(4, 8, figsize=(24, 15.5))
    for i, findings in enumerate(SHOWCASE):
        rng = np.random.default_rng([args.seed, i])
        spec = StudySpec(findings, (), (), sample_body(rng))
        extras = tuple(f for f in findings if f.name[0].islower())
        spec = StudySpec(tuple(f for f in findings if f.name[0].isupper()), extras, (), spec.body)
        rendered = render_study(spec, args.size, rng)
        for j, view in enumerate((FRONTAL, LATERAL)):
            ax = axes[i // 4, (i % 4) * 2 + j]
            ax.imshow(rendered.images[view], cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
            ax.set_title(caption(findings) if j == 0 else view, fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=72)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
