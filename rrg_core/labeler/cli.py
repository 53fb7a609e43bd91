"""Command line in the CheXpert labeler's convention.

``python -m rrg_core.labeler --reports REPORTS.csv --out LABELS.csv`` (or the CheXpert labeler's own
``--reports_path`` / ``--output_path``): REPORTS.csv holds one report per row in its first column, no
header; LABELS.csv gets a ``Reports`` column and one column per observation ("1.0", "0.0", "-1.0" or
blank), rows in input order. A bad row (empty, undecodable, over :data:`MAX_REPORT_CHARS`, no columns)
gets a blank label row and a warning naming it; it never stops the run.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from rrg_core.labeler.conventions import DEFAULT_OPTIONS, LabelerOptions
from rrg_core.labeler.core import label_report
from rrg_core.observations import OBSERVATIONS

LOGGER = logging.getLogger(__name__)

MAX_REPORT_CHARS = 100_000
"""Reports longer than this are refused (a real report is a few hundred characters)."""

# Large enough that an oversized field is read whole and refused by us with a warning, rather than
# stopping the csv module with an exception mid-file.
_FIELD_LIMIT = 64 * 1024 * 1024


def _report_of(row_number: int, row: list[str]) -> str | None:
    """The row's report text, or None (with a warning) when the row cannot be labelled."""
    if not row:
        LOGGER.warning("row %d: no columns; writing a blank label row", row_number)
        return None
    text = row[0]
    if "\ufffd" in text:
        LOGGER.warning("row %d: undecodable bytes (not UTF-8); writing a blank label row", row_number)
        return None
    if len(text) > MAX_REPORT_CHARS:
        LOGGER.warning(
            "row %d: report of %d characters is over the %d limit; writing a blank label row",
            row_number,
            len(text),
            MAX_REPORT_CHARS,
        )
        return None
    if not text.strip():
        LOGGER.warning("row %d: empty report; writing a blank label row", row_number)
        return None
    return text


def _rows(path: Path) -> Iterator[list[str]]:
    # errors="replace": one bad byte becomes U+FFFD in its own row instead of ending the run.
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        yield from csv.reader(handle)


def label_csv(reports: Path, out: Path, options: LabelerOptions = DEFAULT_OPTIONS) -> int:
    """Label every row of ``reports`` into ``out``; returns the number of rows written."""
    csv.field_size_limit(_FIELD_LIMIT)
    count = 0
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Reports", *OBSERVATIONS])
        for count, row in enumerate(_rows(reports), start=1):
            text = _report_of(count, row)
            if text is None:
                writer.writerow(["", *([""] * len(OBSERVATIONS))])
                continue
            writer.writerow([text, *label_report(text, options).to_csv_row()])
    return count


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a missing input file)."""
    parser = argparse.ArgumentParser(prog="python -m rrg_core.labeler", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reports",
        "--reports_path",
        dest="reports",
        type=Path,
        required=True,
        help="CSV, one report per row, no header",
    )
    parser.add_argument(
        "--out", "--output_path", dest="out", type=Path, required=True, help="where to write the labels CSV"
    )
    parser.add_argument(
        "--granuloma-as-lesion",
        action="store_true",
        help="departure from CheXpert: read granulomas as Lung Lesion (see LabelerOptions)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.reports.is_file():
        print(f"error: reports file not found: {args.reports}", file=sys.stderr)
        return 2
    count = label_csv(args.reports, args.out, LabelerOptions(granuloma_as_lesion=args.granuloma_as_lesion))
    LOGGER.info("labelled %d rows into %s", count, args.out)
    return 0
