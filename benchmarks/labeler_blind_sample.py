"""Draw the blind labeler sample (``tests/data/labeler_blind.jsonl``) from the real IU X-ray reports.

Run: ``python benchmarks/labeler_blind_sample.py [--annotation PATH] > sentences.txt``. Prints one JSON line
per drawn sentence (``sentence``, ``stratum``, empty ``labels`` to fill in by hand); the procedure is
described in ``tests/data/labeler_blind.md``. Deterministic: same annotation file, same draw.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from rrg_core.data.reports import raw_sentences  # noqa: E402

DEFAULT = REPO_ROOT.parent / "shared" / "data" / "iu_xray" / "annotation.json"
GOLD_SETS = ("labeler_gold.jsonl", "labeler_heldout.jsonl")
SEED = 20261201
PER_STRATUM = 75
KEYWORDS = re.compile(
    r"\b(opacit|atelecta|effusion|nodul|mass|granulom|cardiomegal|heart|enlarg|edema|congest|pneumonia|infect"
    r"|fractur|pneumothora|catheter|tube|line|pacemaker|pacer|device|marker|sternotomy|clip|thickening|fibros"
    r"|consolidat|scar|infiltrat|density|densit|interstitial|mediastin|contour|silhouette|blunt|fluid|calcifi)",
    re.IGNORECASE,
)


def draw(annotation: Path) -> list[dict[str, object]]:
    data = json.loads(annotation.read_text(encoding="utf-8"))
    sentences = {
        s
        for split in ("train", "val", "test")
        for item in data.get(split, [])
        for s in raw_sentences(item["report"])
    }
    data_dir = REPO_ROOT / "tests" / "data"
    taken = {
        json.loads(line)["sentence"]
        for name in GOLD_SETS
        for line in (data_dir / name).read_text(encoding="utf-8").splitlines()
    }
    pool = sorted(sentences - taken)
    rng = random.Random(SEED)
    uniform = rng.sample(pool, PER_STRATUM)
    chosen = set(uniform)
    keyword_pool = [s for s in pool if s not in chosen and KEYWORDS.search(s)]
    keyword = rng.sample(keyword_pool, PER_STRATUM)
    print(
        f"# pool {len(pool)} (distinct {len(sentences)}, in gold sets {len(sentences & taken)}), "
        f"keyword pool {len(keyword_pool)}",
        file=sys.stderr,
    )
    return [
        {"sentence": s, "labels": {}, "stratum": stratum}
        for stratum, group in (("uniform", uniform), ("keyword", keyword))
        for s in group
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotation", type=Path, default=DEFAULT)
    args = parser.parse_args()
    for item in draw(args.annotation):
        print(json.dumps(item))


if __name__ == "__main__":
    main()
