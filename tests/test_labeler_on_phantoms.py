"""The labeler and the phantom generator agree: templated phantom reports are labelled exactly, in
their written form and in the cleaned form a model writes ("plate-like" becomes "plate like")."""

from collections import Counter

import numpy as np

from rrg_core.data.reports import clean_report
from rrg_core.labeler import label_report
from rrg_core.phantoms.generate import sample_study
from rrg_core.phantoms.reports import write_report


def test_labeler_recovers_the_labels_of_1000_templated_phantom_reports():
    mismatches = []
    values = Counter()
    for index in range(1000):
        rng = np.random.default_rng([7, index])
        spec = sample_study(rng)
        report = write_report(spec.findings, spec.extras, spec.negatives, rng)
        expected = spec.labels()
        values.update((name, value) for name, value in expected.items() if value is not None)
        for text in (report, clean_report(report)):
            found = label_report(text).labels
            if found != expected:
                diff = {n: (expected[n], found[n]) for n in expected if expected[n] != found[n]}
                mismatches.append((text, diff))
    assert not mismatches, f"{len(mismatches)} of 2 x 1000 differ, e.g. {mismatches[:3]}"
    # The reports must exercise the labeler: positive, uncertain and negative statements all occur.
    assert {value for _, value in values} == {1, 0, -1}
