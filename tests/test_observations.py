import math

import pytest

from rrg_core.errors import RRGError
from rrg_core.observations import (
    NUM_OBSERVATIONS,
    OBSERVATIONS,
    Label,
    binary_targets,
    canonical_name,
    is_positive,
    labels_to_json,
    observation_index,
    parse_label,
    validate_labels,
)


def test_fourteen_observations_in_chexpert_order():
    assert NUM_OBSERVATIONS == 14
    assert OBSERVATIONS[0] == "Atelectasis"
    assert OBSERVATIONS[8] == "No Finding"
    assert OBSERVATIONS[-1] == "Support Devices"
    assert list(OBSERVATIONS[:8]) == sorted(OBSERVATIONS[:8])  # CheXpert lists them alphabetically


def test_label_values():
    assert (Label.POSITIVE, Label.NEGATIVE, Label.UNCERTAIN) == (1, 0, -1)


@pytest.mark.parametrize("spelling", ["pleural effusion", "Pleural_Effusion", " PLEURAL EFFUSION "])
def test_names_forgive_case_and_underscores(spelling):
    assert canonical_name(spelling) == "Pleural Effusion"
    assert observation_index(spelling) == 9


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(RRGError, match=r"unknown observation 'Pneumonitis'.*Atelectasis"):
        canonical_name("Pneumonitis")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1, Label.POSITIVE),
        ("1.0", Label.POSITIVE),
        (0.0, Label.NEGATIVE),
        ("-1", Label.UNCERTAIN),
        (None, None),
        ("", None),
        (math.nan, None),
        ("nan", None),
    ],
)
def test_parse_label(raw, expected):
    assert parse_label(raw) == expected


@pytest.mark.parametrize("raw", [2, "yes", True, 0.5])
def test_parse_label_refuses_other_values(raw):
    with pytest.raises(RRGError, match="not one of 1, 0, -1"):
        parse_label(raw)


def test_validate_labels_fills_unmentioned():
    labels = validate_labels({"cardiomegaly": 1, "Edema": -1})
    assert len(labels) == 14
    assert labels["Cardiomegaly"] == Label.POSITIVE and labels["Edema"] == Label.UNCERTAIN
    assert labels["Atelectasis"] is None
    with pytest.raises(RRGError, match="mapping"):
        validate_labels([1, 0])


def test_binary_targets_drop_uncertain_and_count_unmentioned_negative():
    targets, keep = binary_targets({"Atelectasis": 1, "Cardiomegaly": 0, "Edema": -1})
    assert targets[:4] == [1.0, 0.0, 0.0, 0.0]
    assert keep[:4] == [True, True, True, False]
    assert all(keep[4:]) and not any(targets[4:])


def test_is_positive():
    assert is_positive(1) and not is_positive(-1) and not is_positive(None) and not is_positive(0)


def test_labels_to_json_is_complete_and_plain():
    plain = labels_to_json({"Edema": Label.UNCERTAIN, "cardiomegaly": 1})
    assert list(plain) == list(OBSERVATIONS)
    assert plain["Edema"] == -1 and type(plain["Cardiomegaly"]) is int and plain["Atelectasis"] is None
