"""``python -m train``: commands print their result, user errors exit 2 with one readable line."""

import json

from train.__main__ import main


def _write_annotation(folder, reports):
    entries = [
        {"id": f"s{i}", "report": r, "image_path": [f"s{i}/0.png", f"s{i}/1.png"], "split": "train"}
        for i, r in enumerate(reports)
    ]
    (folder / "annotation.json").write_text(json.dumps({"train": entries, "val": [], "test": []}))


def test_vocab_command_prints_size_and_saves(tmp_path, capsys):
    _write_annotation(tmp_path, ["Heart normal. Lungs clear."] * 3 + ["Small effusion."])
    assert main(["vocab", "--data", str(tmp_path), "--out", str(tmp_path / "vocab.json")]) == 0
    out = capsys.readouterr().out
    # heart, normal, lungs, clear and "." reach the IU X-ray minimum count of 3; "small", "effusion" do not.
    assert "min count 3: vocabulary of 9 tokens" in out
    assert json.loads((tmp_path / "vocab.json").read_text())["tokens"][4] == "."


def test_vocab_command_on_the_real_reports(iu_xray_dir, capsys):
    assert main(["vocab", "--data", str(iu_xray_dir)]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "2069 training reports" in out


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    assert main(["vocab", "--data", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("error: no annotation file at")
