"""Phantom data sets on disk in the R2Gen layout: images, masks and annotation.json.

Files are deterministic: PNGs carry no time stamps, each study has its own generator seeded from
(seed, index) (or from (seed, id) for ``--from-reports``), so neither N nor the number of worker
processes changes a study's bytes.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from rrg_core.data.datasets import read_annotation
from rrg_core.errors import RRGError
from rrg_core.labeler import label_report
from rrg_core.observations import OBSERVATIONS, Label, labels_to_json
from rrg_core.phantoms.anatomy import FRONTAL, LATERAL, sample_body
from rrg_core.phantoms.generate import RenderedStudy, StudySpec, make_study, render_study
from rrg_core.phantoms.reports import findings_from_labels
from rrg_core.progress import progress_bar

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class LabelsLike(Protocol):
    """What ``--from-reports`` needs of a labeler's result (``rrg_core.labeler.ReportLabels``)."""

    labels: dict[str, Label | None]
    sentences: dict[str, tuple[str, ...]]


Labeler = Callable[[str], LabelsLike]


def save_png16(path: Path, image: np.ndarray) -> None:
    """Save a [0, 1] float image as a 16-bit grey PNG (Pillow mode I;16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.rint(np.clip(image, 0, 1) * 65535).astype("<u2")
    # Stored, not deflated: the quantum noise fills the low byte, so zlib saves ~10% of the size
    # for twice the time (4 ms instead of 9 ms an image here).
    Image.frombytes("I;16", (data.shape[1], data.shape[0]), data.tobytes()).save(
        path, format="PNG", compress_level=0
    )


def save_mask(path: Path, mask: np.ndarray) -> None:
    """Save a boolean mask as an 8-bit PNG, 0 or 255."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * np.uint8(255), mode="L").save(
        path, format="PNG", compress_level=1
    )


def split_for(rng: np.random.Generator, fractions: tuple[float, float, float]) -> str:
    """A split drawn from the study's own generator (so it does not depend on N)."""
    draw, edge = rng.random(), 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        edge += fraction
        if draw < edge:
            return name
    return SPLITS[-1]


def write_views(out: Path, study_id: str, paths: list[str], rendered: RenderedStudy) -> None:
    """Write each image path (the first the frontal view, the rest lateral) and every mask."""
    for i, relative in enumerate(paths):
        view = FRONTAL if i == 0 else LATERAL
        save_png16(out / "images" / relative, rendered.images[view])
    for view, masks in rendered.masks.items():
        for name, mask in masks.items():
            save_mask(out / "masks" / study_id / f"{view}_{name}.png", mask)


def _phantom_entry(
    index: int, *, out: Path, seed: int, size: int, fractions: tuple[float, float, float]
) -> dict[str, Any]:
    spec, rendered, report = make_study(seed, index, size)
    study_id = f"PH{index:06d}"
    paths = [f"{study_id}/0.png", f"{study_id}/1.png"]
    write_views(out, study_id, paths, rendered)
    split = split_for(np.random.default_rng([seed, index, 1]), fractions)
    return {
        "id": study_id,
        "report": report,
        "image_path": paths,
        "split": split,
        "labels": labels_to_json(spec.labels()),
    }


def _run(fn: Callable[[int], dict[str, Any]], count: int, workers: int) -> Iterator[dict[str, Any]]:
    """Map ``fn`` over 0..count-1 in order, in ``workers`` processes when > 1, with a progress bar."""
    if workers <= 1:
        yield from progress_bar((fn(i) for i in range(count)), total=count, unit="study", mininterval=1)
        return
    with get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
        studies = pool.imap(fn, range(count), chunksize=8)
        yield from progress_bar(studies, total=count, unit="study", mininterval=1)


def _finish(out: Path, splits: dict[str, list[dict[str, Any]]], started: float) -> dict[str, Any]:
    (out / "annotation.json").write_text(json.dumps(splits, indent=1) + "\n", encoding="utf-8")
    total = sum(len(v) for v in splits.values())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    seconds = time.perf_counter() - started
    logger.info(
        "wrote %d studies (%s) to %s in %.1f s, %.1f MB on disk",
        total,
        ", ".join(f"{k} {len(v)}" for k, v in splits.items()),
        out,
        seconds,
        size / 1e6,
    )
    return {"studies": total, "seconds": seconds, "bytes": size}


def _check_size(size: int) -> None:
    if size < 64 or size > 2048:
        raise RRGError(f"image size {size} is out of range; use 64 to 2048 pixels (default 256)")


def write_phantoms(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    size: int = 256,
    workers: int = 1,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> dict[str, Any]:
    """Write ``n`` templated phantom studies to ``out`` (R2Gen layout plus ``masks/``); returns stats."""
    if n < 1:
        raise RRGError(f"--n must be at least 1, got {n}")
    _check_size(size)
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise RRGError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    fn = partial(_phantom_entry, out=root, seed=seed, size=size, fractions=fractions)
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for entry in _run(fn, n, workers):
        splits[entry["split"]].append(entry)
    return _finish(root, splits, started)


def study_seed(seed: int, study_id: str) -> np.random.Generator:
    """A study's generator for ``--from-reports``: from the seed and a stable hash of its id."""
    return np.random.default_rng([seed, zlib.crc32(study_id.encode("utf-8"))])


def _report_entry(
    entry: dict[str, Any], *, out: Path, seed: int, size: int, labeler: Labeler
) -> dict[str, Any]:
    result = labeler(entry["report"])
    findings, extras = findings_from_labels(result.labels, result.sentences, entry["report"])
    rng = study_seed(seed, entry["id"])
    spec = StudySpec(findings, extras, (), sample_body(rng))
    views = (FRONTAL, LATERAL) if len(entry["image_path"]) > 1 else (FRONTAL,)
    rendered = render_study(spec, size, rng, views)
    write_views(out, entry["id"], list(entry["image_path"]), rendered)
    labels = {name: result.labels.get(name) for name in OBSERVATIONS}
    return {**entry, "labels": labels_to_json(labels)}


def write_from_reports(
    annotation: str | os.PathLike,
    out: str | os.PathLike,
    *,
    limit: int | None = None,
    seed: int = 0,
    size: int = 256,
    workers: int = 1,
    labeler: Labeler | None = None,
) -> dict[str, Any]:
    """Render IU-Phantom: for each study of ``annotation`` phantoms showing what its report states.

    Ids, reports, splits and image paths are kept; ``labels`` (the labeler's) is added. ``limit``
    keeps the first K studies of each split. ``labeler`` defaults to ``rrg_core.labeler.label_report``.
    """
    _check_size(size)
    if limit is not None and limit < 1:
        raise RRGError(f"--limit must be at least 1, got {limit}")
    labeler = labeler or label_report
    splits = read_annotation(annotation)
    root = Path(out)
    if root.resolve() == Path(annotation).resolve().parent:
        raise RRGError(f"--out {root} is the source folder; choose a new folder for the phantoms")
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    entries = []
    for split, records in splits.items():
        for r in records[:limit] if limit else records:
            entries.append(
                {
                    "id": r.id,
                    "report": r.report,
                    "image_path": list(r.image_paths),
                    "split": split,
                    **{k: v for k, v in r.extra.items() if k != "labels"},
                }
            )
    fn = partial(_entry_at, entries=entries, out=root, seed=seed, size=size, labeler=labeler)
    written: dict[str, list[dict[str, Any]]] = {s: [] for s in splits}
    for entry in _run(fn, len(entries), workers):
        written[entry["split"]].append(entry)
    return _finish(root, written, started)


def _entry_at(index: int, *, entries: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    return _report_entry(entries[index], **kwargs)
