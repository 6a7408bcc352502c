"""BEIR-format datasets: corpus.jsonl, queries.jsonl and qrels/<split>.tsv, read as BEIR reads them.

- corpus.jsonl: one {"_id", "title", "text"} object per line; a document is embedded as
  `(title + " " + text).strip()` (BEIR's SentenceBERT with sep=" "; MTEB joins the same way).
- queries.jsonl: one {"_id", "text"} object per line; only the queries with judgements in the
  split are evaluated (BEIR's GenericDataLoader keeps `queries[qid] for qid in qrels`).
- qrels/<split>.tsv: `query-id<TAB>corpus-id<TAB>score` with a header line; a later line for the
  same pair replaces an earlier one, as in BEIR.

Ids are strings (a number in JSON becomes its decimal text), since qrels ids are always text.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, NotFoundError
from ..pipeline.records import read_records, record_id

__all__ = ["BeirDataset", "DatasetDefaults", "load_beir", "document_text", "dataset_defaults"]


@dataclass(frozen=True)
class BeirDataset:
    name: str  # the folder name, e.g. "nfcorpus"
    path: Path
    split: str
    corpus_ids: list[str]
    corpus_texts: list[str]  # title and text joined as BEIR joins them
    query_ids: list[str]  # the queries with judgements in this split, in qrels order
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]

    @property
    def corpus_file(self) -> Path:
        return self.path / "corpus.jsonl"

    @property
    def defaults(self) -> DatasetDefaults:
        """By folder name, or by the parent's for sub-datasets such as cqadupstack/android."""
        own = dataset_defaults(self.name)
        return own if own != DatasetDefaults() else dataset_defaults(self.path.parent.name)


@dataclass(frozen=True)
class DatasetDefaults:
    """What the published evaluations use for a dataset (by folder name)."""

    instruction: str | None = None  # Qwen3 query instruction (the E5-mistral / Qwen3 task prompts)
    ignore_identical_ids: bool = True  # BEIR's default; MTEB keeps it only where queries are documents


# The task instructions used for Qwen3-Embedding's MTEB numbers (the E5-mistral set); MTEB sets
# ignore_identical_ids for ArguAna, Quora, FiQA, FEVER and MS MARCO and not for the others.
_KNOWN: dict[str, DatasetDefaults] = {
    "arguana": DatasetDefaults("Given a claim, find documents that refute the claim", True),
    "climatefever": DatasetDefaults(
        "Given a claim about climate change, retrieve documents that support or refute the claim", False),
    "cqadupstack": DatasetDefaults(
        "Given a question, retrieve detailed question descriptions from Stackexchange that are duplicates "
        "to the given question", False),
    "dbpediaentity": DatasetDefaults("Given a query, retrieve relevant entity descriptions from DBPedia", False),
    "fever": DatasetDefaults("Given a claim, retrieve documents that support or refute the claim", True),
    "fiqa": DatasetDefaults("Given a financial question, retrieve user replies that best answer the question", True),
    "hotpotqa": DatasetDefaults(
        "Given a multi-hop question, retrieve documents that can help answer the question", False),
    "msmarco": DatasetDefaults("Given a web search query, retrieve relevant passages that answer the query", True),
    "nfcorpus": DatasetDefaults("Given a question, retrieve relevant documents that best answer the question", False),
    "nq": DatasetDefaults("Given a question, retrieve Wikipedia passages that answer the question", False),
    "quora": DatasetDefaults(
        "Given a question, retrieve questions that are semantically equivalent to the given question", True),
    "scidocs": DatasetDefaults(
        "Given a scientific paper title, retrieve paper abstracts that are cited by the given paper", False),
    "scifact": DatasetDefaults("Given a scientific claim, retrieve documents that support or refute the claim", False),
    "touche2020": DatasetDefaults(
        "Given a question, retrieve detailed and persuasive arguments that answer the question", False),
    "treccovid": DatasetDefaults("Given a query on COVID-19, retrieve documents that answer the query", False),
}
_ALIASES = {"webistouche2020": "touche2020", "fiqa2018": "fiqa", "quoraretrieval": "quora",
            "dbpedia": "dbpediaentity"}


def dataset_defaults(name: str) -> DatasetDefaults:
    """Defaults for a dataset folder name ("nfcorpus", "trec-covid", "cqadupstack/android", ...)."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    key = _ALIASES.get(key, key)
    if key.startswith("cqadupstack"):
        key = "cqadupstack"
    return _KNOWN.get(key, DatasetDefaults())


def document_text(title: str, text: str) -> str:
    return (title + " " + text).strip()


def _field(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    return value


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(FILE:LINE, object) per record, strictly: a bad line stops the load with its place."""
    if not path.is_file():
        raise NotFoundError(f"{path} does not exist: a BEIR dataset folder holds corpus.jsonl, "
                            "queries.jsonl and qrels/<split>.tsv")
    for record in read_records(path, "jsonl"):
        if not isinstance(record.data, dict):
            raise InputError(f"{record.where}: expected a JSON object, got {type(record.data).__name__}")
        yield record.where, record.data


def _read_corpus(path: Path) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for where, row in _jsonl(path):
        doc_id = record_id(row.get("_id"), where, "_id")
        if doc_id in seen:
            raise InputError(f"{where}: document id {doc_id!r} appears twice in the corpus")
        seen.add(doc_id)
        ids.append(doc_id)
        texts.append(document_text(_field(row, "title", where), _field(row, "text", where)))
    if not ids:
        raise InputError(f"{path} holds no documents")
    return ids, texts


def _read_queries(path: Path) -> dict[str, str]:
    return {record_id(row.get("_id"), where, "_id"): _field(row, "text", where) for where, row in _jsonl(path)}


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        splits = sorted(p.stem for p in path.parent.glob("*.tsv"))
        raise NotFoundError(f"{path} does not exist"
                            + (f"; splits here: {', '.join(splits)}" if splits else ""))
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_MINIMAL), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < 3:
                raise InputError(f"{path}:{number}: expected query-id, corpus-id and score separated by tabs")
            try:
                grade = int(row[2])
            except ValueError:
                if number == 1:
                    continue  # the header line (BEIR always skips line 1; a file without one keeps it here)
                raise InputError(f"{path}:{number}: score {row[2]!r} is not an integer") from None
            qrels.setdefault(row[0], {})[row[1]] = grade
    if not qrels:
        raise InputError(f"{path} holds no judgements")
    return qrels


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Read a BEIR-format folder; every query with judgements in `split` must be in queries.jsonl."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise NotFoundError(f"dataset folder {folder} does not exist")
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv")
    queries = _read_queries(folder / "queries.jsonl")
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise InputError(f"{len(missing)} judged queries are not in queries.jsonl "
                         f"(first: {', '.join(map(repr, missing[:3]))})")
    empty = [qid for qid in qrels if not queries[qid].strip()]
    if empty:
        raise InputError(f"{len(empty)} judged queries have no text (first: {', '.join(map(repr, empty[:3]))})")
    corpus_ids, corpus_texts = _read_corpus(folder / "corpus.jsonl")
    query_ids = list(qrels)
    return BeirDataset(name=folder.resolve().name, path=folder.resolve(), split=split, corpus_ids=corpus_ids,
                       corpus_texts=corpus_texts, query_ids=query_ids,
                       query_texts=[queries[qid] for qid in query_ids], qrels=qrels)
