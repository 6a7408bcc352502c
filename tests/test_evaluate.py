"""q3embed eval / parity / the MTEB encoder, offline on tiny random checkpoints and tiny BEIR folders."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import q3embed.engine
from q3embed import Embedder, InputError, NotFoundError, Reranker
from q3embed.cli import main
from q3embed.evaluate import (
    EvalConfig,
    dataset_defaults,
    evaluate_beir,
    evaluate_run,
    exact_search,
    load_beir,
)
from q3embed.evaluate.cache import EmbeddingCache, cache_key
from q3embed.evaluate.encoding import encode_texts
from q3embed.evaluate.mteb import MTEBEncoder
from q3embed.evaluate.parity import ParityConfig, check_parity, model_kind
from q3embed.text.prompts import DEFAULT_TASK

NFCORPUS_TASK = "Given a question, retrieve relevant documents that best answer the question"
DOCS = [
    ("d1", "Beijing", "The capital of China is Beijing."),
    ("d2", "", "Gravity is a force that attracts two bodies towards each other."),
    ("d3", "Cats", "Cats purr when they are content."),
    ("d4", "Paris", "Paris is the capital of France."),
    ("d5", "", ""),  # an empty document, as real corpora have
    ("d6", "Rust", "Rust is a systems programming language."),
]
QUERIES = {"q1": "What is the capital of China?", "q2": "Explain gravity", "q3": "Why do cats purr?",
           "q9": "not judged in test"}
QRELS = [("q1", "d1", 2), ("q1", "d4", 1), ("q2", "d2", 1), ("q3", "d3", 1), ("q3", "d6", 0)]


def write_beir(folder: Path, docs=DOCS, queries=QUERIES, qrels=QRELS, header: bool = True) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for doc_id, title, text in docs:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def no_q3embed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("Q3EMBED_"):
            monkeypatch.delenv(name)


@pytest.fixture
def nfcorpus(tmp_path: Path) -> Path:
    """Named like the real dataset, so its published defaults apply."""
    return write_beir(tmp_path / "nfcorpus")


# ---------------------------------------------------------------- loading


def test_load_beir_joins_title_and_text_and_keeps_judged_queries(nfcorpus):
    data = load_beir(nfcorpus)
    assert data.corpus_ids == ["d1", "d2", "d3", "d4", "d5", "d6"]
    assert data.corpus_texts[0] == "Beijing The capital of China is Beijing."
    assert data.corpus_texts[1] == "Gravity is a force that attracts two bodies towards each other."  # no title
    assert data.corpus_texts[4] == ""
    assert data.query_ids == ["q1", "q2", "q3"]  # q9 has no judgement in test
    assert data.qrels["q1"] == {"d1": 2, "d4": 1} and data.qrels["q3"]["d6"] == 0
    assert data.defaults.instruction == NFCORPUS_TASK and data.defaults.ignore_identical_ids is False


def test_load_beir_numbers_missing_titles_and_a_file_without_header(tmp_path):
    folder = write_beir(tmp_path / "x", header=False)
    (folder / "corpus.jsonl").write_text('{"_id": 7, "text": "seven"}\n{"_id": "d1", "title": null, "text": "one"}\n')
    (folder / "qrels" / "test.tsv").write_text("q1\t7\t1\n")
    data = load_beir(folder)
    assert data.corpus_ids == ["7", "d1"] and data.corpus_texts == ["seven", "one"]
    assert data.qrels == {"q1": {"7": 1}}  # a first line that is a judgement is kept


@pytest.mark.parametrize("problem, error, match", [
    ("no_folder", NotFoundError, "does not exist"),
    ("no_split", NotFoundError, "splits here: test"),
    ("bad_json", InputError, r"corpus.jsonl:2: not valid JSON"),
    ("missing_query", InputError, "not in queries.jsonl"),
    ("duplicate_doc", InputError, "appears twice"),
    ("bad_score", InputError, "is not an integer"),
])
def test_load_beir_errors_name_the_problem(tmp_path, problem, error, match):
    folder = write_beir(tmp_path / "data")
    split = "test"
    if problem == "no_folder":
        folder = tmp_path / "nowhere"
    elif problem == "no_split":
        split = "dev"
    elif problem == "bad_json":
        (folder / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{not json\n')
    elif problem == "missing_query":
        write_beir(folder, queries={"q1": "only one"})
    elif problem == "duplicate_doc":
        write_beir(folder, docs=DOCS + [("d1", "", "again")])
    elif problem == "bad_score":
        with (folder / "qrels" / "test.tsv").open("a") as f:
            f.write("q1\td2\thigh\n")
    with pytest.raises(error, match=match):
        load_beir(folder, split)


def test_dataset_defaults():
    assert dataset_defaults("arguana").ignore_identical_ids is True
    assert dataset_defaults("trec-covid").instruction.startswith("Given a query on COVID-19")
    assert dataset_defaults("webis-touche2020") == dataset_defaults("touche2020")
    unknown = dataset_defaults("my-own-data")
    assert unknown.instruction is None and unknown.ignore_identical_ids is True  # BEIR's default


# ---------------------------------------------------------------- search and cache


def test_exact_search_breaks_ties_at_the_cut_like_trec_eval():
    docs = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)  # a, b, c tie
    run = exact_search(np.array([[1, 0]], dtype=np.float32), docs, ["q"], ["a", "b", "c", "d"], 2)
    assert list(run["q"]) == ["c", "b"]  # trec_eval ranks equal scores by id descending
    full = exact_search(np.array([[1, 0]], dtype=np.float32), docs, ["q"], ["a", "b", "c", "d"], 10)
    assert list(full["q"]) == ["c", "b", "a", "d"]


def test_exact_search_matches_brute_force_and_drops_the_query_itself():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((500, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:7] + 0.01
    ids = [f"d{i}" for i in range(500)]
    run = exact_search(queries, docs, ids[:7], ids, 5, ignore_identical_ids=True)
    for row, qid in enumerate(ids[:7]):
        scores = docs @ queries[row]
        scores[row] = -np.inf
        assert list(run[qid]) == [ids[i] for i in np.argsort(-scores, kind="stable")[:5]]
        assert qid not in run[qid]


def test_cache_round_trip_and_refusals(tmp_path, embedder):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("{}\n")
    cache = EmbeddingCache(tmp_path / "cache")
    key = cache_key(embedder.info, 64, corpus)
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.store(key, ["a", "b", "c"], vectors, embedder.info, "data")
    assert np.array_equal(cache.load(key, ["a", "b", "c"], 4), vectors)
    assert cache.load(key, ["a", "b", "x"], 4) is None  # other documents
    assert cache.load(key, ["a", "b", "c"], 8) is None  # other size
    assert cache_key(embedder.info, 32, corpus) != key
    os.utime(corpus, ns=(1, 1))
    assert cache_key(embedder.info, 64, corpus) != key  # the corpus changed
    cache.paths(key)[0].write_bytes(b"broken")
    assert cache.load(key, ["a", "b", "c"], 4) is None
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_encode_texts_keeps_order_and_embeds_empty_texts(embedder):
    texts = ["short", "", "a much longer text about retrieval and embeddings", "mid length text"]
    vectors = encode_texts(embedder, texts)
    filled = [0, 2, 3]
    assert np.allclose(vectors[filled], embedder.encode([texts[i] for i in filled]), atol=1e-6)
    empty = embedder.forward(embedder.prepare([""], allow_empty=True).token_lists)[0]  # one batch, no scatter
    assert np.allclose(vectors[1], (empty / empty.norm()).numpy(), atol=1e-6)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------- evaluate_beir


def _manual_run(embedder: Embedder, folder: Path, instruction: str) -> dict[str, dict[str, float]]:
    """The run computed without the eval code: encode, cosine, every document."""
    data = load_beir(folder)
    docs = encode_texts(embedder, data.corpus_texts)
    queries = embedder.encode(data.query_texts, query=True, instruction=instruction)
    scores = queries @ docs.T
    return {qid: {d: float(s) for d, s in zip(data.corpus_ids, scores[i])} for i, qid in enumerate(data.query_ids)}


def test_evaluate_beir_equals_a_manual_run_and_uses_the_cache(embedder, nfcorpus, tmp_path):
    config = EvalConfig(cache_dir=tmp_path / "cache")
    first = evaluate_beir(embedder, nfcorpus, config)
    assert first.instruction == NFCORPUS_TASK and first.ignore_identical_ids is False
    assert first.cache["hit"] is False and Path(first.cache["path"]).is_file()
    expected = evaluate_run(load_beir(nfcorpus).qrels, _manual_run(embedder, nfcorpus, NFCORPUS_TASK)).means
    assert first.metrics["dense"] == pytest.approx(expected, abs=1e-6)
    second = evaluate_beir(embedder, nfcorpus, config)
    assert second.cache["hit"] is True and second.metrics == first.metrics
    assert set(first.timings) >= {"load", "corpus", "queries", "search", "total"}


def test_evaluate_beir_instruction_dimensions_and_unknown_dataset(embedder, tmp_path):
    folder = write_beir(tmp_path / "mine")
    report = evaluate_beir(embedder, folder, EvalConfig(cache_dir=None, dimensions=32))
    assert report.instruction == DEFAULT_TASK and report.dimensions == 32 and report.ignore_identical_ids
    custom = evaluate_beir(embedder, folder, EvalConfig(cache_dir=None, instruction="Find the answer"))
    expected = evaluate_run(load_beir(folder).qrels, _manual_run(embedder, folder, "Find the answer"),
                            ignore_identical_ids=True).means
    assert custom.metrics["dense"] == pytest.approx(expected, abs=1e-6)


def test_evaluate_beir_reranks_the_top_candidates(embedder, reranker, nfcorpus):
    report = evaluate_beir(embedder, nfcorpus, EvalConfig(cache_dir=None, rerank_candidates=3), reranker=reranker)
    data = load_beir(nfcorpus)
    dense = _manual_run(embedder, nfcorpus, NFCORPUS_TASK)
    texts = dict(zip(data.corpus_ids, data.corpus_texts))
    expected_run = {}
    for qid, query in zip(data.query_ids, data.query_texts):
        top = sorted(dense[qid], key=lambda d: (dense[qid][d], d), reverse=True)[:3]
        nonempty = [d for d in top if texts[d]]
        scores = reranker.score(query, [texts[d] for d in nonempty], instruction=NFCORPUS_TASK)
        expected_run[qid] = {d: dict(zip(nonempty, scores)).get(d, float("-inf")) for d in top}
    assert report.metrics["rerank"] == pytest.approx(evaluate_run(data.qrels, expected_run).means, abs=1e-6)
    assert report.reranker["kind"] == "qwen3-reranker" and report.rerank_candidates == 3


# ---------------------------------------------------------------- CLI


_MODELS: dict[tuple, object] = {}


@pytest.fixture(autouse=True)
def reuse_loaded_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def cached(cls):
        def build(model, **kwargs):
            key = (cls, model, *sorted((k, str(v)) for k, v in kwargs.items()))
            return _MODELS.setdefault(key, cls(model, **kwargs))
        return build
    monkeypatch.setattr(q3embed.engine, "Embedder", cached(Embedder))
    monkeypatch.setattr(q3embed.engine, "Reranker", cached(Reranker))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_eval_json_table_output_file_and_env_twin(capsys, monkeypatch, tiny_embedding_dir, nfcorpus, tmp_path):
    flags = ["--model", str(tiny_embedding_dir), "--dtype", "float32", "--device", "cpu",
             "--cache-dir", str(tmp_path / "cache")]
    code, out, err = run_cli(capsys, "eval", "--data", str(nfcorpus), *flags, "--format", "json",
                             "--output", str(tmp_path / "report.json"))
    assert code == 0, err
    report = json.loads(out)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert set(report["metrics"]["dense"]) == {"NDCG@10", "Recall@100", "MRR@10", "MAP@10"}
    assert "took" in err and report["timings"]["total"] >= report["timings"]["corpus"]
    monkeypatch.setenv("Q3EMBED_DATA", str(nfcorpus))
    code, out, err = run_cli(capsys, "eval", *flags)
    assert code == 0, err
    assert "NDCG@10" in out and f"{report['metrics']['dense']['NDCG@10']:.5f}" in out
    assert "corpus vectors from cache" in out


@pytest.mark.parametrize("argv, message", [
    (["eval"], "--data DIR is required"),
    (["eval", "--data", "/no/such/folder"], "does not exist"),
])
def test_cli_eval_mistakes_are_one_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("q3embed: error:") and message in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- parity


def test_model_kind(tiny_embedding_dir, tiny_reranker_dir):
    assert model_kind(tiny_embedding_dir) == "qwen3-embedding"
    assert model_kind(tiny_reranker_dir) == "qwen3-reranker"
    assert model_kind(tiny_reranker_dir, "embedding") == "qwen3-embedding"


def test_parity_passes_on_tiny_checkpoints(tiny_embedding_dir, tiny_reranker_dir):
    embedding = check_parity(tiny_embedding_dir, texts=["one more text"], queries=["one more question?"])
    assert embedding.passed and embedding.metric == "cosine" and embedding.worst >= 0.99999
    assert len(embedding.rows) == 2 + 7 + 1 + 2 + 1
    rerank = check_parity(tiny_reranker_dir, pairs=[("a question?", "an answer.")])
    assert rerank.passed and rerank.metric == "abs_difference" and rerank.worst <= 1e-4


def test_parity_catches_a_wrong_query_template(monkeypatch, tiny_embedding_dir):
    from q3embed.evaluate import parity

    monkeypatch.setattr(parity, "query_text", lambda q, task=None: f"Instruct: {task or DEFAULT_TASK}\nQuery: {q}")
    report = check_parity(tiny_embedding_dir, ParityConfig())
    assert not report.passed
    assert {row.side for row in report.rows if row.value < 0.99999} == {"query"}


def test_cli_parity(capsys, tiny_embedding_dir, tiny_reranker_dir):
    code, out, err = run_cli(capsys, "parity", str(tiny_embedding_dir), "extra text", "--query")
    assert code == 0, err
    assert "PASS" in out and "worst cosine" in out and "What is the capital of China?" in out
    # an impossible threshold: the check fails with exit code 1, and JSON says why
    code, out, err = run_cli(capsys, "parity", str(tiny_reranker_dir), "capital?", "Beijing.",
                             "--max-difference", "-1", "--format", "json")
    report = json.loads(out)
    assert code == 1 and report["passed"] is False and report["metric"] == "abs_difference", err
    assert report["rows"][-1]["text"] == "capital? || Beijing." and report["worst"] <= 1e-4
    code, _, err = run_cli(capsys, "parity", str(tiny_reranker_dir), "only a query")
    assert code == 2 and "needs a query and at least one document" in err


# ---------------------------------------------------------------- MTEB encoder


def _loader(texts: list[str], batch: int = 2) -> torch.utils.data.DataLoader:
    """What mteb hands an encoder: a DataLoader whose batches are {"text": [...]}."""
    return torch.utils.data.DataLoader([{"text": t} for t in texts], batch_size=batch,
                                       collate_fn=lambda rows: {"text": [r["text"] for r in rows]})


def test_mteb_encoder_contract_with_stand_ins(embedder):
    encoder = MTEBEncoder(embedder)
    task = SimpleNamespace(name="NFCorpus", type="Retrieval", prompt=None)
    texts = ["What is the capital of China?", "Explain gravity", "Why do cats purr?"]
    queries = encoder.encode(_loader(texts), task_metadata=task, hf_split="test", hf_subset="default",
                             prompt_type="query")
    assert np.allclose(queries, embedder.encode(texts, query=True, instruction=NFCORPUS_TASK), atol=1e-6)
    documents = encoder.encode(_loader(texts), task_metadata=task, hf_split="test", hf_subset="default",
                               prompt_type="document")
    assert np.allclose(documents, embedder.encode(texts), atol=1e-6)
    sts = SimpleNamespace(name="STSBenchmark", type="STS", prompt="Retrieve semantically similar text.")
    symmetric = encoder.encode(_loader(texts), task_metadata=sts, hf_split="test", hf_subset="default")
    assert np.allclose(symmetric, embedder.encode(texts, query=True, instruction=sts.prompt), atol=1e-6)
    own = MTEBEncoder(embedder, instructions={"NFCorpus": "Mine"})
    assert own.task_instruction(task, "query") == "Mine" and own.task_instruction(task, "document") is None
    assert encoder.similarity(queries, documents).shape == (3, 3)
    assert np.allclose(encoder.similarity_pairwise(queries, queries), 1.0, atol=1e-5)
    assert encoder.encode(_loader([]), task_metadata=task, hf_split="test", hf_subset="default").shape == (0, 64)


def test_mteb_encoder_with_the_real_package(embedder):
    mteb = pytest.importorskip("mteb", reason="mteb is an optional extra (pip install q3embed[mteb])")
    from datasets import Dataset
    from mteb._create_dataloaders import create_dataloader
    from mteb.models.model_meta import ModelMeta
    from mteb.models.models_protocols import EncoderProtocol
    from mteb.types import PromptType

    encoder = MTEBEncoder(embedder)
    assert isinstance(encoder, EncoderProtocol)
    meta = encoder.mteb_model_meta
    assert isinstance(meta, ModelMeta) and meta.embed_dim == 64 and meta.similarity_fn_name == "cosine"
    task = mteb.get_task("NFCorpus").metadata  # metadata only: nothing is downloaded
    corpus = Dataset.from_dict({"id": ["d1", "d2"], "title": ["Beijing", ""],
                                "text": ["The capital of China is Beijing.", "Gravity is a force."]})
    loader = create_dataloader(corpus, task_metadata=task, prompt_type=PromptType.document, batch_size=1)
    vectors = encoder.encode(loader, task_metadata=task, hf_split="test", hf_subset="default",
                             prompt_type=PromptType.document)
    expected = embedder.encode(["Beijing The capital of China is Beijing.", "Gravity is a force."])
    assert np.allclose(vectors, expected, atol=1e-6)  # mteb joins title and text as BEIR does
    queries = Dataset.from_dict({"id": ["q1"], "text": ["What is the capital of China?"]})
    loader = create_dataloader(queries, task_metadata=task, prompt_type=PromptType.query)
    vector = encoder.encode(loader, task_metadata=task, hf_split="test", hf_subset="default",
                            prompt_type=PromptType.query)
    instruction = encoder.task_instruction(task, PromptType.query)
    assert instruction  # the task's own prompt or the published one
    assert np.allclose(vector, embedder.encode(["What is the capital of China?"], query=True,
                                               instruction=instruction), atol=1e-6)


def test_mteb_runs_its_own_tasks_with_the_encoder(tiny_embedding_dir, embedder):
    """mteb.evaluate end to end, offline: its in-memory mock retrieval and STS tasks."""
    mteb = pytest.importorskip("mteb", reason="mteb is an optional extra (pip install q3embed[mteb])")
    from mteb.mocks.mock_tasks import MockRetrievalTask, MockSTSTask

    result = mteb.evaluate(MTEBEncoder(embedder), [MockRetrievalTask(), MockSTSTask()], cache=None,
                           show_progress_bar=False)
    scores = {task.task_name: task.get_score() for task in result.task_results}
    assert set(scores) == {"MockRetrievalTask", "MockSTSTask"}
    assert 0.0 <= scores["MockRetrievalTask"] <= 1.0  # nDCG@10
    assert -1.0 <= scores["MockSTSTask"] <= 1.0  # Spearman correlation (a random model may be negative)
