import json

import pytest

from rrg_core.data.vocab import SPECIAL_TOKENS, Vocabulary
from rrg_core.errors import RRGError

REPORTS = ["The heart is normal. Lungs are clear.", "The heart is enlarged.", "Lungs are clear. No effusion."]


def test_min_count_and_deterministic_order():
    vocab = Vocabulary.build(REPORTS, min_count=2)
    # "." 5x; "the","heart","is","lungs","are","clear" 2x each, alphabetical among ties.
    assert vocab.tokens == (*SPECIAL_TOKENS, ".", "are", "clear", "heart", "is", "lungs", "the")
    assert len(vocab) == 11
    assert Vocabulary.build(reversed(REPORTS), min_count=2) == vocab


def test_encode_decode_round_trip_with_unknown_words():
    vocab = Vocabulary.build(REPORTS, min_count=2)
    ids = vocab.encode("The heart is enlarged.", max_length=60)
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert vocab.decode(ids) == "the heart is <unk> ."
    assert vocab.decode([*ids, vocab.pad_id, vocab.pad_id]) == "the heart is <unk> ."


def test_truncation_keeps_eos():
    vocab = Vocabulary.build(REPORTS, min_count=1)
    ids = vocab.encode("the heart is normal . lungs are clear .", max_length=5)
    assert len(ids) == 5 and ids[-1] == vocab.eos_id
    assert vocab.decode(ids) == "the heart is"


@pytest.mark.parametrize("bad", [0, 2, True, "60"])
def test_bad_max_length(bad):
    with pytest.raises(RRGError, match="max_length"):
        Vocabulary.build(REPORTS, 1).encode("x", max_length=bad)


def test_bad_min_count_and_ids():
    with pytest.raises(RRGError, match="min_count"):
        Vocabulary.build(REPORTS, 0)
    with pytest.raises(RRGError, match="outside the vocabulary"):
        Vocabulary.build(REPORTS, 1).decode([1, 999])


def test_save_load(tmp_path):
    vocab = Vocabulary.build(REPORTS, min_count=1)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.min_count == 1
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(RRGError, match="not a rrg-review vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(RRGError, match="cannot read vocabulary"):
        Vocabulary.load(tmp_path / "missing.json")


def test_iu_xray_vocabulary_size(iu_xray_dir):
    data = json.loads((iu_xray_dir / "annotation.json").read_text())
    vocab = Vocabulary.build((entry["report"] for entry in data["train"]), min_count=3)
    print(f"IU X-ray vocabulary (train split, min count 3): {len(vocab)} tokens")
    # The UAR paper reports "around 1K" words for this setting.
    assert 500 < len(vocab) < 1200
