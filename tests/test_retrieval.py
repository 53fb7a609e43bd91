"""rrg_core.retrieval: exact and FAISS top-k against brute force, ties, bad input, the files beside a
checkpoint (round trip, tampering, stale indexes) and ``python -m train index`` end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional

from rrg_core.checkpoints import load_checkpoint
from rrg_core.data.datasets import R2GenDataset, StudyRecord, read_annotation
from rrg_core.data.reports import clean_report
from rrg_core.generators import load_generator
from rrg_core.retrieval import (
    IndexMismatchError,
    IndexSource,
    Neighbour,
    RetrievalError,
    RetrievalIndex,
    index_folder,
    indexable,
    load_index,
    read_index,
    save_index,
    saved_indexes,
)
from rrg_core.retrieval import files as index_files
from rrg_core.retrieval import index as index_module
from rrg_core.retrieval.search import faiss_module, top_k
from train.__main__ import main

SOURCE = IndexSource("dcrrg", "image", "test vectors", "a" * 64, "f" * 16, "train")
needs_faiss = pytest.mark.skipif(
    faiss_module() is None, reason="faiss-cpu not installed (requirements-faiss.txt)"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_index(embeddings: torch.Tensor, **options) -> RetrievalIndex:
    n = embeddings.shape[0]
    ids = [f"s{i}" for i in range(n)]
    return RetrievalIndex(
        embeddings,
        ids,
        [f"report {i}" for i in range(n)],
        [f"images/{i}.png" for i in range(n)],
        SOURCE,
        **options,
    )


def brute_force(queries: torch.Tensor, bank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine top-k by sorting every score: (score descending, row ascending), the documented order."""
    scores = functional.normalize(queries.double(), dim=1) @ functional.normalize(bank.double(), dim=1).T
    rows = [sorted(range(bank.shape[0]), key=lambda r, s=s: (-s[r].item(), r))[:k] for s in scores]
    rows = torch.tensor(rows)
    return scores.gather(1, rows), rows


# -- search ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 100_000])
def test_exact_search_matches_brute_force(chunk_rows: int) -> None:
    g = torch.Generator().manual_seed(chunk_rows)
    bank, queries = torch.randn(300, 24, generator=g) * 3, torch.randn(9, 24, generator=g)
    index = make_index(bank, chunk_rows=chunk_rows, backend="exact")
    scores, rows = index.top_k(queries, 10)
    want_scores, want_rows = brute_force(queries, bank, 10)
    assert torch.equal(rows, want_rows)
    assert torch.allclose(scores.double(), want_scores, atol=1e-5)
    assert scores.dtype == torch.float32 and rows.dtype == torch.long


def test_more_queries_than_a_block_and_numpy_input() -> None:
    g = torch.Generator().manual_seed(1)
    bank, queries = torch.randn(50, 8, generator=g), torch.randn(300, 8, generator=g)
    _, rows = make_index(bank.numpy()).top_k(queries.numpy(), 3)
    assert torch.equal(rows, brute_force(queries, bank, 3)[1])


def test_ties_go_to_the_earlier_study_whatever_the_chunking() -> None:
    # Rows 1, 3, 4 and 6 point the same way as the query (row 6 at another length: same cosine).
    bank = torch.tensor([[0.0, 1], [1, 0], [0.6, 0.8], [1, 0], [1, 0], [-1, 0], [5, 0]])
    for chunk_rows in (1, 2, 3, 100):
        index = make_index(bank, chunk_rows=chunk_rows)
        assert [n.study_id for n in index.search(torch.tensor([2.0, 0]), 3)] == ["s1", "s3", "s4"]
        assert [n.study_id for n in index.search(torch.tensor([1.0, 0]), 6)] == [
            "s1",
            "s3",
            "s4",
            "s6",
            "s2",
            "s0",
        ]
    same = make_index(torch.ones(20, 4), chunk_rows=6)
    scores, rows = same.top_k(torch.ones(2, 4), 5)
    assert rows.tolist() == [[0, 1, 2, 3, 4]] * 2 and torch.allclose(scores, torch.ones(2, 5))


def test_top_k_keeps_the_lowest_tied_columns_at_the_boundary() -> None:
    # More columns tied at the k-th score than fit; torch.topk alone returns columns 67, 66, 65 here.
    scores = torch.zeros(1, 100)
    scores[0, 50:] = 1
    values, rows = top_k(scores, torch.eye(100), 3)  # the query's scores against the identity are itself
    assert rows.tolist() == [[50, 51, 52]] and values.tolist() == [[1.0, 1.0, 1.0]]
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.9, 0.1, 0.5]])
    values, rows = top_k(scores, torch.eye(7), 3, chunk_rows=2)
    assert rows.tolist() == [[1, 4, 0]] and torch.equal(values, torch.tensor([[0.9, 0.9, 0.5]]))


def test_search_returns_neighbours_with_reports_paths_and_cosine_scores() -> None:
    bank = torch.tensor([[3.0, 0], [0, 2], [1, 1]])
    index = make_index(bank)
    found = index.search(torch.tensor([0.0, 5.0]), k=2)
    assert found[0] == Neighbour("s1", "report 1", "images/1.png", pytest.approx(1.0))
    assert found[1].study_id == "s2" and found[1].score == pytest.approx(2**-0.5)
    batch = index.search(torch.tensor([[0.0, 5.0], [1.0, 0.0]]), k=1)
    assert [[n.study_id for n in row] for row in batch] == [["s1"], ["s0"]]
    assert len(index) == 3 and index.dim == 2 and torch.allclose(index.embeddings.norm(dim=1), torch.ones(3))


def test_k_larger_than_the_index_gives_every_study() -> None:
    index = make_index(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
    assert len(index.search(torch.ones(3), 50)) == 4
    assert index.top_k(torch.ones(2, 3), 50)[1].shape == (2, 4)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_is_refused(k) -> None:
    with pytest.raises(RetrievalError, match="k "):
        make_index(torch.ones(3, 2)).search(torch.ones(2), k)


@pytest.mark.parametrize(
    ("query", "match"),
    [
        (torch.ones(5), "must have 4 values"),
        (torch.ones(2, 3), "must have 4 values"),
        (torch.ones(1, 2, 4), "must have 4 values"),
        (torch.tensor([1.0, float("nan"), 0, 0]), "NaN or infinite"),
        (torch.zeros(4), "all zeros"),
    ],
)
def test_bad_queries_are_refused(query: torch.Tensor, match: str) -> None:
    with pytest.raises(RetrievalError, match=match):
        make_index(torch.ones(3, 4)).search(query)


@pytest.mark.parametrize(
    ("embeddings", "match"),
    [
        (torch.empty(0, 8), "at least one study"),
        (torch.ones(8), "shape"),
        (torch.ones(3, 0), "at least one study"),
        (torch.ones(3, 2, dtype=torch.long), "floating point"),
        (torch.tensor([[1.0, 0], [float("inf"), 0]]), "NaN or infinite"),
        (torch.tensor([[1.0, 0], [0, 0]]), "row 1 is all zeros"),
    ],
)
def test_bad_embeddings_are_refused(embeddings: torch.Tensor, match: str) -> None:
    with pytest.raises(RetrievalError, match=match):
        RetrievalIndex(
            embeddings, ["a"] * len(embeddings), ["r"] * len(embeddings), ["p"] * len(embeddings), SOURCE
        )


def test_mismatched_lists_and_options_are_refused() -> None:
    with pytest.raises(RetrievalError, match="3 embeddings but 2 study ids"):
        RetrievalIndex(torch.ones(3, 2), ["a", "b"], ["r"] * 3, ["p"] * 3, SOURCE)
    with pytest.raises(RetrievalError, match="unknown search backend"):
        make_index(torch.ones(3, 2), backend="annoy")
    with pytest.raises(RetrievalError, match="chunk_rows"):
        make_index(torch.ones(3, 2), chunk_rows=0)


def test_without_faiss_auto_is_exact_and_faiss_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "faiss_module", lambda: None)
    assert make_index(torch.ones(3, 2), faiss_min_rows=0).backend_for(1) == "exact"
    with pytest.raises(RetrievalError, match="faiss-cpu"):
        make_index(torch.ones(3, 2), backend="faiss")


@needs_faiss
def test_faiss_gives_the_exact_search_results() -> None:
    g = torch.Generator().manual_seed(3)
    bank, queries = torch.randn(2000, 32, generator=g), torch.randn(40, 32, generator=g)
    exact = make_index(bank, backend="exact")
    fast = make_index(bank, backend="faiss")
    exact_scores, exact_rows = exact.top_k(queries, 7)
    # FAISS scans one query at a time below 20 queries and uses BLAS from 20 on: check both paths.
    for some in (queries[:3], queries):
        faiss_scores, faiss_rows = fast.top_k(some, 7)
        assert torch.equal(faiss_rows, exact_rows[: len(some)])
        assert torch.allclose(faiss_scores, exact_scores[: len(some)], atol=1e-5)
    auto = make_index(bank, faiss_min_rows=1000)
    assert auto.backend_for(1) == "faiss" and auto.backend_for(20) == "exact"
    assert make_index(bank).backend_for(1) == "exact"  # the default threshold: 200,000 studies
    assert [n.study_id for n in auto.search(queries[0], 7)] == [f"s{row}" for row in exact_rows[0].tolist()]
    # Duplicates among the k returned come back in row order, as the exact search gives them.
    twins = make_index(torch.cat([bank[:5], bank[:5]]), backend="faiss")
    assert twins.top_k(bank[:1], 2)[1].tolist() == [[0, 5]]


# -- files -----------------------------------------------------------------------------------------


def saved(tmp_path: Path, n: int = 6) -> tuple[RetrievalIndex, Path]:
    index = make_index(torch.randn(n, 5, generator=torch.Generator().manual_seed(n)))
    return index, save_index(index, tmp_path / "run" / "index" / "image")


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    index, folder = saved(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["embeddings.safetensors", "index.json"]
    loaded = read_index(folder, checkpoint_sha256=SOURCE.checkpoint_sha256)
    assert torch.equal(loaded.embeddings, index.embeddings)
    assert (loaded.study_ids, loaded.reports, loaded.image_paths) == (
        index.study_ids,
        index.reports,
        index.image_paths,
    )
    assert loaded.source == index.source
    query = torch.randn(5)
    assert loaded.search(query, 3) == index.search(query, 3)
    document = json.loads((folder / "index.json").read_text())
    assert document["schema_version"] == index_files.SCHEMA_VERSION and document["count"] == 6
    # Saving again replaces the index as a whole.
    save_index(make_index(torch.ones(2, 5)), folder)
    assert len(read_index(folder, checkpoint_sha256=SOURCE.checkpoint_sha256)) == 2


def test_an_index_of_other_weights_is_refused(tmp_path: Path) -> None:
    _, folder = saved(tmp_path)
    with pytest.raises(IndexMismatchError, match="other weights"):
        read_index(folder, checkpoint_sha256="b" * 64)


def edit_document(folder: Path, change) -> None:
    path = folder / "index.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda d: d.update(schema_version=2), IndexMismatchError, "schema version 2.*newer"),
        (lambda d: d.update(schema_version=0), IndexMismatchError, "schema version 0.*older"),
        (lambda d: d.update(schema_version="1"), RetrievalError, "malformed schema_version"),
        (lambda d: d.update(format="other"), RetrievalError, "not a rrg-review retrieval index"),
        (lambda d: d["source"].update(checkpoint_sha256="c" * 64), IndexMismatchError, "other weights"),
        (lambda d: d["studies"].pop(), RetrievalError, "malformed"),
        (lambda d: d["studies"][0].update(report=None), RetrievalError, "malformed"),
        (lambda d: d.update(count=7, studies=[*d["studies"], d["studies"][0]]), RetrievalError, r"\(6, 5\)"),
        (lambda d: d.update(embeddings_sha256="0" * 64), RetrievalError, "changed or corrupt"),
    ],
)
def test_tampered_metadata_is_refused(tmp_path: Path, change, error: type, match: str) -> None:
    _, folder = saved(tmp_path)
    edit_document(folder, change)
    with pytest.raises(error, match=match):
        read_index(folder, checkpoint_sha256=SOURCE.checkpoint_sha256)


def test_changed_missing_or_corrupt_files_are_named(tmp_path: Path) -> None:
    _, folder = saved(tmp_path)
    tensors = folder / "embeddings.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(RetrievalError, match="changed or corrupt"):
        read_index(folder, checkpoint_sha256=SOURCE.checkpoint_sha256)
    tensors.write_bytes(b"not a safetensors file")
    with pytest.raises(RetrievalError, match="corrupt or not a safetensors"):
        read_index(folder, checkpoint_sha256=SOURCE.checkpoint_sha256, verify=False)
    tensors.unlink()
    with pytest.raises(RetrievalError, match=r"no embeddings\.safetensors"):
        read_index(folder, checkpoint_sha256=SOURCE.checkpoint_sha256)
    (folder / "index.json").write_text("{not json")
    with pytest.raises(RetrievalError, match="not valid JSON"):
        read_index(folder, checkpoint_sha256=SOURCE.checkpoint_sha256)
    (folder / "index.json").unlink()
    with pytest.raises(RetrievalError, match=r"index\.json is missing"):
        read_index(folder, checkpoint_sha256=SOURCE.checkpoint_sha256)
    with pytest.raises(RetrievalError, match="build it with"):
        read_index(tmp_path / "nowhere", checkpoint_sha256=SOURCE.checkpoint_sha256)


def test_saving_over_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(RetrievalError, match="holds something else"):
        save_index(make_index(torch.ones(2, 3)), tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    with pytest.raises(RetrievalError, match="plain name"):
        index_folder(tmp_path, "../image")


# -- building with real (tiny) models and `python -m train index` --------------------------------


@pytest.mark.parametrize("kind", ["dcrrg", "uar"])
def test_train_index_end_to_end(
    kind: str, request: pytest.FixtureRequest, phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = Path(shutil.copytree(request.getfixturevalue(f"tiny_{kind}_checkpoint"), tmp_path / kind))
    args = ["index", "--checkpoint", str(run), "--data", str(phantoms), "--workers", "0", "--batch", "5"]
    assert main(args) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("indexed ") and f"with {kind}" in summary
    assert saved_indexes(run) == ["image", "report"]
    checkpoint = load_checkpoint(run)
    images, reports = load_index(checkpoint, "image"), load_index(run, "report")
    train = indexable(read_annotation(phantoms)["train"])
    assert images.study_ids == reports.study_ids == [r.id for r in train]
    assert images.image_paths[0] == f"images/{train[0].image_paths[0]}"
    assert images.source.model_kind == kind and images.source.checkpoint_sha256 == checkpoint.sha256
    assert images.source.split == "train" and images.source.data_fingerprint

    # The image index holds the very embeddings generation returns (embed_images skips the beam search).
    generator = load_generator(checkpoint, torch.device("cpu"), beam_size=1)
    dataset = R2GenDataset(phantoms, "train")
    stacks = [dataset[i]["images"] for i in range(2)]
    drafted = generator.generate(dataset.records[:2], stacks)
    embedded = torch.tensor([d.image_embedding for d in drafted])
    assert torch.allclose(generator.embed_images(stacks), embedded, atol=1e-5)
    first = images.search(embedded[0], 1)[0]
    assert first.study_id == train[0].id and first.score == pytest.approx(1.0, abs=1e-5)
    # Report queries find their own report first (the report index holds embed_reports' vectors).
    text = clean_report(train[3].report)
    nearest = reports.search(generator.embed_reports([text])[0], 1)[0]
    assert clean_report(nearest.report) == text and nearest.score == pytest.approx(1.0, abs=1e-5)

    # A retrained checkpoint leaves a stale index behind: it is refused, not silently used.
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    with pytest.raises(IndexMismatchError, match="other weights"):
        load_index(run, "image")
    assert load_index(run, "missing", missing_ok=True) is None


def test_train_index_refuses_bad_input(
    tiny_dcrrg_checkpoint: Path, phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = ["index", "--checkpoint", str(tiny_dcrrg_checkpoint), "--data", str(phantoms), "--workers", "0"]
    for extra, match in [
        (["--split", "nope"], "no split 'nope'"),
        (["--batch", "0"], "--batch must be at least 1"),
    ]:
        assert main([*base, *extra]) == 2
        assert match in capsys.readouterr().err
    assert main(["index", "--checkpoint", str(tmp_path), "--data", str(phantoms)]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    assert not (tiny_dcrrg_checkpoint / "index").exists()


def test_indexable_leaves_out_studies_without_a_report_or_image() -> None:
    records = [
        StudyRecord("a", "The heart is normal.", ("a/0.png",), "train"),
        StudyRecord("b", "  ", ("b/0.png",), "train"),
        StudyRecord("c", "Clear lungs.", (), "train"),
    ]
    assert [r.id for r in indexable(records)] == ["a"]


def test_unit_rows_do_not_depend_on_the_chunking() -> None:
    bank = np.random.default_rng(0).normal(size=(100, 6)).astype(np.float32)
    assert torch.equal(make_index(bank, chunk_rows=7).embeddings, make_index(bank).embeddings)
