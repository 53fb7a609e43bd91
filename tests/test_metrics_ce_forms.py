"""Clinical efficacy in the field's three forms (micro, macro, example-based), over 14 observations and
the CheXbert five, with uncertain labels counted as negative (default) or positive. Hand-computed."""

from __future__ import annotations

import pytest
from pytest import approx
from test_metrics import CE_HYPS, CE_REFS

from rrg_core.errors import RRGError
from rrg_core.metrics import CHEXBERT_FIVE, clinical_efficacy


def _prf(prf):
    return (prf.precision, prf.recall, prf.f1)


def test_example_based_by_hand():
    # Per report (uncertain = not positive):
    #   1: truth {Cardiomegaly, Edema}, predicted {Cardiomegaly}:          P 1,   R 1/2, F1 2/3
    #   2: truth {Pleural Effusion}, predicted {Cardiomegaly, PE}:          P 1/2, R 1,   F1 2/3
    #   3: truth {No Finding}, predicted {Edema, No Finding}:               P 1/2, R 1,   F1 2/3
    ce = clinical_efficacy(CE_REFS, CE_HYPS)
    assert _prf(ce.example_based) == approx((2 / 3, 5 / 6, 2 / 3))
    assert ce.uncertain_as == "negative"
    as_dict = ce.to_dict()
    assert as_dict["example_based"]["f1"] == approx(2 / 3) and as_dict["uncertain_as"] == "negative"


def test_uncertain_as_positive_by_hand():
    # Report 3 becomes truth {Edema, No Finding}, predicted {Edema, No Finding, Fracture}: P 2/3, R 1, F1 4/5.
    ce = clinical_efficacy(CE_REFS, CE_HYPS, uncertain_as="positive")
    assert _prf(ce.micro) == approx((4 / 6, 4 / 5, 8 / 11))  # TP 4, FP 2, FN 1
    assert _prf(ce.example_based) == approx((13 / 18, 5 / 6, 32 / 45))
    assert ce.per_observation["Edema"].f1 == approx(2 / 3)  # TP 1 (report 3), FN 1, FP 0
    assert ce.to_dict()["uncertain_as"] == "positive"


def test_chexbert_five_by_hand():
    # Cardiomegaly P 1/2 R 1 F1 2/3; Edema 0 0 0; Pleural Effusion 1 1 1; Atelectasis, Consolidation 0.
    ce = clinical_efficacy(CE_REFS, CE_HYPS, observations=CHEXBERT_FIVE)
    assert ce.observations == CHEXBERT_FIVE
    assert _prf(ce.micro) == approx((1 / 2, 2 / 3, 4 / 7))  # TP 2, FP 2, FN 1
    assert _prf(ce.macro) == approx((1.5 / 5, 2 / 5, (5 / 3) / 5))
    # Report 3 has no positive reference among the five and one false positive: 0, 0, 0.
    assert _prf(ce.example_based) == approx((1 / 2, 1 / 2, 4 / 9))


def test_degenerate_inputs():
    empty = clinical_efficacy([{}], [{}])  # nothing positive on either side: zero_division = 0 everywhere
    assert _prf(empty.micro) == _prf(empty.macro) == _prf(empty.example_based) == (0.0, 0.0, 0.0)
    both = [{"Edema": 1}, {"Edema": -1}]
    perfect = clinical_efficacy(both, both, uncertain_as="positive")
    assert _prf(perfect.example_based) == (1.0, 1.0, 1.0) and perfect.micro.support == 2
    silent = clinical_efficacy([{"Edema": 1}], [{}])  # a report that says nothing
    assert _prf(silent.example_based) == (0.0, 0.0, 0.0) and silent.micro.recall == 0.0
    with pytest.raises(RRGError, match="uncertain_as must be one of negative, positive"):
        clinical_efficacy([{}], [{}], uncertain_as="ignore")
