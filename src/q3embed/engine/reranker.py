"""Reranker: (query, documents) -> relevance scores, with Qwen3-Reranker's yes/no head.

Scoring takes two steps, so that a server can tokenize the next request on another thread while
the model scores this one: `tokenize` (checks, prompt template, truncation) and `score_tokens`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from ..errors import CheckpointError, ModelNotFoundError
from ..model.heads import YesNoHead, last_token_indices, matryoshka
from ..model.kernels import KernelSchedule
from ..model.qwen3 import KVPrefix
from ..model.transfer import to_device
from ..text.tokenizer import MAX_LENGTH_DEFAULT
from ..weights.checkpoint import LoadedQwen3
from ..weights.loading import is_qwen3_model, load_qwen3
from ..weights.resolve import AUTO, QWEN3_RERANKER_DEFAULT, ResolvedModel, resolve_model
from .batch import pack, shared_prefix_length
from .device import Placement, place
from .embedder import Embedder
from .info import ModelInfo
from .inputs import check_text, check_texts, check_top_n
from .jobs import RerankJob, run_jobs
from .options import ModelOptions, model_options
from .qwen3_backend import compile_for_any_length, prepare_qwen3_model, qwen3_model_info

__all__ = ["Reranker", "RerankResult", "PreparedRerank", "rank_scores"]

log = logging.getLogger("q3embed")


class RerankResult(NamedTuple):
    index: int  # position of the document in the request
    score: float


@dataclass(frozen=True)
class PreparedRerank:
    """A checked, tokenized rerank request, ready for the model."""

    pairs: list[list[int]]  # what the model sees per document (Qwen3: the whole prompt)
    query: list[int] | None = None  # the query's own tokens, where the scorer embeds it apart

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids in self.pairs) + len(self.query or ())


class RerankScorer(Protocol):
    """Tokenize once, then score in batches: `start` does what all pairs share, `score` a batch
    (jobs.RerankBatches), so the engine's scheduler can interleave a long request with others."""

    info: ModelInfo
    bytes_per_token: int  # activation memory one token of a batch needs (sizes a GPU's token budget)

    def tokenize(self, query: str, documents: Sequence[str], instruction: str | None,
                 truncate: bool) -> PreparedRerank: ...

    def start(self, prepared: PreparedRerank) -> tuple[Any, list[int]]: ...

    def score(self, state: Any, indices: Sequence[int]) -> list[float]: ...

    def compile_now(self) -> bool: ...


# Below this many shared tokens a separate prefill pass costs more than it saves.
MIN_SHARED_PREFIX = 16


@dataclass
class _Qwen3State:
    shared: int  # prefix tokens every pair shares (0: none prefilled)
    prefix: KVPrefix | None  # their keys and values, per layer
    rests: list[list[int]]  # each pair's tokens after the prefix


class Qwen3RerankScorer:
    """P(yes) for each pair: the packed decoder, then two rows of lm_head at the last token.

    All pairs of a request share prefix + instruction + query: those tokens are run once
    (prefill) and their keys/values reused by every document, which then costs only its own
    tokens plus the suffix.
    """

    def __init__(self, resolved: ResolvedModel, loaded: LoadedQwen3, placement: Placement,
                 reuse_prefix: bool = True) -> None:
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        self.bytes_per_token = prepare_qwen3_model(loaded, placement)
        self.kernels = KernelSchedule.for_model(self.model, placement.compile_after, placement.dtype, placement.device)
        self.head = YesNoHead(loaded.head_rows)
        self.device = placement.device
        self.reuse_prefix = reuse_prefix
        self.info = qwen3_model_info(resolved, loaded, placement, "qwen3-reranker")

    def tokenize(self, query: str, documents: Sequence[str], instruction: str | None,
                 truncate: bool) -> PreparedRerank:
        """prefix + instruction + query + document + suffix ids, one list per document."""
        return PreparedRerank(self.tokenizer.encode_rerank_inputs(query, documents, instruction, truncate=truncate))

    def start(self, prepared: PreparedRerank) -> tuple[_Qwen3State, list[int]]:
        """Prefill the tokens every pair shares (when there are enough to pay for a pass of their own)."""
        pairs = prepared.pairs
        shared = shared_prefix_length(pairs) if len(pairs) > 1 and self.reuse_prefix else 0
        if shared < MIN_SHARED_PREFIX:
            shared = 0
        prefix = None
        if shared:
            self.kernels.count(shared)
            prefix = self.model.prefill(to_device(torch.tensor(pairs[0][:shared]), self.device))
        rests = [ids[shared:] for ids in pairs]
        return _Qwen3State(shared, prefix, rests), [len(ids) for ids in rests]

    def score(self, state: _Qwen3State, indices: Sequence[int]) -> list[float]:
        input_ids, positions, seq_lens = pack([state.rests[i] for i in indices], self.device, start=state.shared)
        self.kernels.count(len(input_ids))
        rows = last_token_indices(seq_lens, self.device)  # [b]: the head reads only these
        return self.head(self.model(input_ids, positions, seq_lens, state.prefix, rows=rows)).tolist()  # [b]

    def compile_now(self) -> bool:
        return compile_for_any_length(self.kernels, self.model, self.device)


class EmbeddingSimilarityScorer:
    """The offline fallback of `auto`: cosine similarity of query and document embeddings."""

    def __init__(self, embedder: Embedder, aliases: tuple[str, ...] = ()) -> None:
        """aliases: the reranker names this scorer answers to (`auto` and the model it stands for)."""
        self.embedder = embedder
        self.info = ModelInfo(**{**embedder.info.__dict__, "kind": "cosine-similarity", "aliases": aliases})
        self.bytes_per_token = embedder.bytes_per_token

    def tokenize(self, query: str, documents: Sequence[str], instruction: str | None,
                 truncate: bool) -> PreparedRerank:
        """The documents as documents, the query (in its query prompt) apart."""
        query_ids = self.embedder.tokenize([query], query=True, instruction=instruction, truncate=truncate)[0]
        return PreparedRerank(self.embedder.tokenize(documents, truncate=truncate), query_ids)

    def start(self, prepared: PreparedRerank) -> tuple[tuple[Tensor, list[list[int]]], list[int]]:
        query = matryoshka(self.embedder.forward([prepared.query]), None, True)[0]  # [hidden]
        return (query, prepared.pairs), [len(ids) for ids in prepared.pairs]

    def score(self, state: tuple[Tensor, list[list[int]]], indices: Sequence[int]) -> list[float]:
        query, pairs = state
        documents = matryoshka(self.embedder.forward([pairs[i] for i in indices]), None, True)  # [b, hidden]
        return (documents @ query).tolist()

    def compile_now(self) -> bool:
        return False  # its embedder was warmed up with its own options


def _qwen3_scorer(resolved: ResolvedModel, options: ModelOptions, placement: Placement,
                  reuse_prefix: bool) -> Qwen3RerankScorer:
    if not is_qwen3_model(resolved.path):
        raise CheckpointError(f"{resolved.path} is not a Qwen3 reranker (config.json model_type must be qwen3)")
    loaded = load_qwen3(resolved.path, max_length=options.max_length or MAX_LENGTH_DEFAULT, dtype=placement.dtype,
                        device=placement.device, reranker=True)
    if options.special_tokens == "plain":  # a document cannot close the prompt and write its own answer
        loaded.tokenizer.treat_special_tokens_as_text()
    return Qwen3RerankScorer(resolved, loaded, placement, reuse_prefix)


def _auto_scorer(options: ModelOptions, placement: Placement, reuse_prefix: bool,
                 embedder: Embedder | None) -> RerankScorer:
    try:
        resolved = resolve_model(QWEN3_RERANKER_DEFAULT, hub=options.hub)
    except ModelNotFoundError as exc:
        embedder = embedder or Embedder(options.with_model(AUTO))
        log.warning(
            "reranker auto -> cosine similarity with %s, because %s is not available (%s)",
            embedder.info.name, QWEN3_RERANKER_DEFAULT, str(exc).split(". ")[0],
        )
        return EmbeddingSimilarityScorer(embedder, aliases=(AUTO, QWEN3_RERANKER_DEFAULT))
    log.warning("reranker auto -> %s (%s)", QWEN3_RERANKER_DEFAULT, resolved.reason)
    return _qwen3_scorer(replace(resolved, aliases=(AUTO,)), options, placement, reuse_prefix)


class Reranker:
    """Scores documents against a query with Qwen3-Reranker.

    >>> rr = Reranker("Qwen/Qwen3-Reranker-0.6B")
    >>> rr.rerank("What is the capital of China?", ["Beijing is...", "Gravity is..."], top_n=1)
    [RerankResult(index=0, score=0.99...)]
    """

    def __init__(self, model: str | os.PathLike[str] | ModelOptions = "auto", *, reuse_prefix: bool = True,
                 embedder: Embedder | None = None, **options: Any) -> None:
        """`model` and `options` as for Embedder. reuse_prefix=False runs every pair in full (the
        plain computation, for comparison). `embedder`: the model that `auto` scores with by cosine
        similarity when no Qwen3-Reranker can be had (default: the embedding model `auto` picks),
        so that a server shares its own instead of loading a second copy."""
        self.options = model_options(model, options)
        placement = place(self.options)  # a bad device, dtype or compile mode fails before any loading
        if self.options.model == AUTO:
            self._scorer = _auto_scorer(self.options, placement, reuse_prefix, embedder)
        else:
            resolved = resolve_model(self.options.model, hub=self.options.hub)
            self._scorer = _qwen3_scorer(resolved, self.options, placement, reuse_prefix)
        self.max_batch_tokens = placement.batch_tokens(self._scorer.bytes_per_token)
        self.info: ModelInfo = self._scorer.info

    def warm_up(self) -> None:
        """Compile the fused kernels now, where they are enabled (for any length: the scorer runs
        the decoder at two), then score one short pair end to end."""
        if self._scorer.compile_now():
            self.score("warm", ["up"])

    def score(self, query: str, documents: str | Sequence[str], *, instruction: str | None = None,
              truncate: bool = True) -> list[float]:
        """One relevance score per document, in the order given (P(yes) in [0, 1] for Qwen3)."""
        return self.score_tokens(self.tokenize(query, documents, instruction=instruction, truncate=truncate))

    def tokenize(self, query: str, documents: str | Sequence[str], *, instruction: str | None = None,
                 truncate: bool = True) -> PreparedRerank:
        """The exact token ids the scorer sees, for `score_tokens` (and for counting usage)."""
        check_text(query, "query")
        docs, _ = check_texts(documents, "document")
        if instruction is not None:
            check_text(instruction, "instruction")
        return self._scorer.tokenize(query, docs, instruction, truncate)

    def job(self, prepared: PreparedRerank) -> RerankJob:
        """The request as a unit of work for a scheduler (the engine's worker, or score_tokens)."""
        return RerankJob(prepared.pairs, scorer=self._scorer, prepared=prepared)

    def score_tokens(self, prepared: PreparedRerank) -> list[float]:
        """Scores for the output of `tokenize`, in the same order."""
        job = self.job(prepared)
        run_jobs([job], None, self.max_batch_tokens)
        return job.future.result()

    def rerank(self, query: str, documents: str | Sequence[str], *, top_n: int | None = None,
               instruction: str | None = None, truncate: bool = True) -> list[RerankResult]:
        """(index, score) pairs, best first; ties keep the input order."""
        scores = self.score(query, documents, instruction=instruction, truncate=truncate)
        return rank_scores(scores, top_n)


def rank_scores(scores: Sequence[float], top_n: int | None = None) -> list[RerankResult]:
    """(index, score) pairs, best first, ties in input order, the best `top_n` (all when None)."""
    keep = check_top_n(top_n, len(scores))
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [RerankResult(i, scores[i]) for i in ranked[:keep]]
