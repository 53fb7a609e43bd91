"""DCRRG's Table 7 never contradicts itself and its report states what the table says.

A CI-sized phantom run (300 studies at 64 px) of the demo preset, whose label conditioning
(``label_prompts``, ``label_rows``) and report reconciliation are on. On its test split and on
inputs unlike any phantom (pydicom-data's real chest CR, photographs, synthetic non-radiographs):
no shown Table-7 description says the opposite of its row's label, few are withheld (the model
writes for the label; the guard is the exception), and the report agrees with the table (an
abnormal study with no finding over its threshold hedges the nearest one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from rrg_core import load_generator
from rrg_core.data.datasets import R2GenDataset, read_annotation
from rrg_core.generators.dcrrg import DCRRGGenerator
from rrg_core.labeler import label_report
from rrg_core.observations import Label
from rrg_core.phantoms import write_phantoms
from rrg_core.review_result import ObservationRow
from rrg_core.study_input import load_study
from rrg_core.table_consistency import description_contradicts, hedged_finding, report_disagreements
from train.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL_RUN = [
    "--preset", "demo", "--workers", "0", "--set", "image_size=64",
    "--set", "step1.epochs=3", "--set", "step3.epochs=3", "--set", "step3.batch_size=64",
    "--set", "step4.epochs=12", "--set", "step4.batch_size=16",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DCRRGGenerator]:
    root = tmp_path_factory.mktemp("table7")
    write_phantoms(root / "data", n=300, seed=5, size=64)
    os.environ.setdefault("RRG_TRAIN_THREADS", "1")
    assert main(["dcrrg", "--data", str(root / "data"), "--out", str(root / "run"), *SMALL_RUN]) == 0
    generator = load_generator(root / "run", "cpu")
    assert isinstance(generator, DCRRGGenerator)
    return root / "data", generator


def _review(generator: DCRRGGenerator, stacks: list) -> tuple[list[str], list[list[ObservationRow]]]:
    reports, tables = [], []
    for start in range(0, len(stacks), 16):
        drafts, rows = generator.review_batch(stacks[start : start + 16])
        reports += [generator.vocab.decode(ids) for ids in drafts.token_ids]
        tables += rows
    return reports, tables


def _check(reports: list[str], tables: list[list[ObservationRow]], withheld_share: float) -> None:
    rows = [row for table in tables for row in table]
    shown = [
        r for r in rows if description_contradicts(r.observation, r.label, r.description) and r.description
    ]
    assert shown == [], shown[:5]
    withheld = [r for r in rows if r.withheld]
    assert len(withheld) <= withheld_share * len(rows), withheld[:5]
    disagreeing = [
        (report, names)
        for report, table in zip(reports, tables, strict=True)
        if (
            names := report_disagreements(
                label_report(report).labels, [r.label for r in table], hedged_finding(table)
            )
        )
    ]
    assert len(disagreeing) <= 0.05 * len(reports), disagreeing[:5]
    # an abnormal study with no finding over its threshold: the report hedges, it does not read normal
    for report, table in zip(reports, tables, strict=True):
        if (hedged := hedged_finding(table)) is not None:
            said = label_report(report).labels
            assert said[hedged] == Label.UNCERTAIN and said["No Finding"] != Label.POSITIVE, (hedged, report)


def test_table7_and_report_agree_on_the_test_split(trained: tuple[Path, DCRRGGenerator]) -> None:
    data, generator = trained
    splits = read_annotation(data)
    dataset = R2GenDataset(data, "test", annotation=splits)
    reports, tables = _review(generator, [dataset[i]["images"] for i in range(len(dataset))])
    _check(reports, tables, withheld_share=0.03)
    positive_rows = [r for table in tables for r in table if r.label == 1 and r.observation != "No Finding"]
    assert positive_rows, "the reader called nothing present: the run learned nothing"
    # the reconciled report states the findings its table calls present
    stated = sum(
        1
        for report, table in zip(reports, tables, strict=True)
        for r in table
        if r.label == 1
        and r.observation != "No Finding"
        and label_report(report).labels[r.observation] in (1, -1)
    )
    assert stated >= 0.9 * len(positive_rows), (stated, len(positive_rows))


def test_table7_and_report_agree_on_inputs_unlike_any_phantom(trained: tuple[Path, DCRRGGenerator]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from measure_trust import ood_inputs

    stacks = [torch.stack(load_study([source]).views) for source in ood_inputs().values()]
    reports, tables = _review(trained[1], stacks)
    _check(reports, tables, withheld_share=0.15)
