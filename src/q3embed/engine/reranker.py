"""Reranker: (query, documents) -> relevance scores, with Qwen3-Reranker's yes/no head.

Scoring takes two steps, so that a server can tokenize the next request on another thread while
the model scores this one: `tokenize` (checks, prompt template, truncation) and `score_tokens`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import torch

from ..errors import CheckpointError, ModelNotFoundError
from ..model.heads import YesNoHead, last_token_indices, matryoshka
from ..model.kernels import KernelSchedule
from ..text.tokenizer import MAX_LENGTH_DEFAULT
from ..weights.checkpoint import LoadedQwen3
from ..weights.loading import is_qwen3_model, load_qwen3
from ..weights.resolve import AUTO, QWEN3_RERANKER_DEFAULT, ResolvedModel, resolve_model
from .backend import ModelInfo
from .batch import pack, plan_batches, shared_prefix_length
from .device import Placement, place
from .embedder import Embedder
from .inputs import check_text, check_texts, check_top_n
from .options import ModelOptions, model_options
from .qwen3_backend import qwen3_model_info

__all__ = ["Reranker", "RerankResult"]

log = logging.getLogger("q3embed")


class RerankResult(NamedTuple):
    index: int  # position of the document in the request
    score: float


class RerankScorer(Protocol):
    info: ModelInfo

    def tokenize(self, query: str, documents: Sequence[str], instruction: str | None,
                 truncate: bool) -> list[list[int]]: ...

    def score_tokens(self, token_lists: Sequence[Sequence[int]]) -> list[float]: ...

    def compile_now(self) -> bool: ...


# Below this many shared tokens a separate prefill pass costs more than it saves.
MIN_SHARED_PREFIX = 16


class Qwen3RerankScorer:
    """P(yes) for each pair: the packed decoder, then two rows of lm_head at the last token.

    All pairs of a request share prefix + instruction + query: those tokens are run once
    (prefill) and their keys/values reused by every document, which then costs only its own
    tokens plus the suffix.
    """

    def __init__(self, resolved: ResolvedModel, loaded: LoadedQwen3, placement: Placement, max_batch_tokens: int,
                 reuse_prefix: bool = True) -> None:
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        self.kernels = KernelSchedule(self.model, placement.compile_after)
        self.head = YesNoHead(loaded.head_rows)
        self.device = placement.device
        self.max_batch_tokens = max_batch_tokens
        self.reuse_prefix = reuse_prefix
        self.info = qwen3_model_info(resolved, loaded, placement, "qwen3-reranker")

    def tokenize(self, query: str, documents: Sequence[str], instruction: str | None,
                 truncate: bool) -> list[list[int]]:
        """prefix + instruction + query + document + suffix ids, one list per document."""
        return self.tokenizer.encode_rerank_inputs(query, documents, instruction, truncate=truncate)

    @torch.inference_mode()
    def score_tokens(self, token_lists: Sequence[Sequence[int]]) -> list[float]:
        shared = shared_prefix_length(token_lists) if len(token_lists) > 1 and self.reuse_prefix else 0
        if shared < MIN_SHARED_PREFIX:
            shared = 0
        prefix = None
        if shared:
            self.kernels.count(shared)
            prefix = self.model.prefill(torch.tensor(token_lists[0][:shared], device=self.device))
            token_lists = [ids[shared:] for ids in token_lists]
        scores = [0.0] * len(token_lists)
        for batch in plan_batches([len(t) for t in token_lists], self.max_batch_tokens):
            input_ids, positions, seq_lens = pack([token_lists[i] for i in batch], self.device, start=shared)
            self.kernels.count(len(input_ids))
            hidden = self.model(input_ids, positions, seq_lens, prefix)  # [T, hidden]
            batch_scores = self.head(hidden[last_token_indices(seq_lens, self.device)])  # [b]
            for index, value in zip(batch, batch_scores.tolist()):
                scores[index] = value
        return scores

    def compile_now(self) -> bool:
        return self.kernels.compile_now()


class EmbeddingSimilarityScorer:
    """The offline fallback of `auto`: cosine similarity of query and document embeddings."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.info = ModelInfo(**{**embedder.info.__dict__, "kind": "cosine-similarity"})

    def tokenize(self, query: str, documents: Sequence[str], instruction: str | None,
                 truncate: bool) -> list[list[int]]:
        """The query (in its query prompt) first, then the documents."""
        return (self.embedder.tokenize([query], query=True, instruction=instruction, truncate=truncate)
                + self.embedder.tokenize(documents, truncate=truncate))

    def score_tokens(self, token_lists: Sequence[Sequence[int]]) -> list[float]:
        vectors = matryoshka(self.embedder.run(token_lists), None, True)  # [1 + docs, hidden]
        return (vectors[1:] @ vectors[0]).tolist()

    def compile_now(self) -> bool:
        return False  # its embedder was warmed up with its own options


def _qwen3_scorer(resolved: ResolvedModel, options: ModelOptions, placement: Placement,
                  reuse_prefix: bool) -> Qwen3RerankScorer:
    if not is_qwen3_model(resolved.path):
        raise CheckpointError(f"{resolved.path} is not a Qwen3 reranker (config.json model_type must be qwen3)")
    loaded = load_qwen3(resolved.path, max_length=options.max_length or MAX_LENGTH_DEFAULT, dtype=placement.dtype,
                        device=placement.device, reranker=True)
    return Qwen3RerankScorer(resolved, loaded, placement, options.max_batch_tokens, reuse_prefix)


def _auto_scorer(options: ModelOptions, placement: Placement, reuse_prefix: bool) -> RerankScorer:
    try:
        resolved = resolve_model(QWEN3_RERANKER_DEFAULT)
    except ModelNotFoundError as exc:
        embedder = Embedder(options.with_model(AUTO))
        log.warning(
            "reranker auto -> cosine similarity with %s, because %s is not available (%s)",
            embedder.info.name, QWEN3_RERANKER_DEFAULT, str(exc).split(". ")[0],
        )
        return EmbeddingSimilarityScorer(embedder)
    log.warning("reranker auto -> %s (%s)", QWEN3_RERANKER_DEFAULT, resolved.reason)
    return _qwen3_scorer(resolved, options, placement, reuse_prefix)


class Reranker:
    """Scores documents against a query with Qwen3-Reranker.

    >>> rr = Reranker("Qwen/Qwen3-Reranker-0.6B")
    >>> rr.rerank("What is the capital of China?", ["Beijing is...", "Gravity is..."], top_n=1)
    [RerankResult(index=0, score=0.99...)]
    """

    def __init__(self, model: str | ModelOptions = "auto", *, reuse_prefix: bool = True, **options: Any) -> None:
        """`model` and `options` as for Embedder. reuse_prefix=False runs every pair in full (the
        plain computation, for comparison)."""
        self.options = model_options(model, options)
        placement = place(self.options)  # a bad device, dtype or compile mode fails before any loading
        if self.options.model == AUTO:
            self._scorer = _auto_scorer(self.options, placement, reuse_prefix)
        else:
            self._scorer = _qwen3_scorer(resolve_model(self.options.model), self.options, placement, reuse_prefix)
        self.info: ModelInfo = self._scorer.info

    def warm_up(self) -> None:
        """Compile the fused kernels now, where they are enabled, with one short scoring pass."""
        if self._scorer.compile_now():
            self.score("warm", ["up"])

    def score(self, query: str, documents: str | Sequence[str], *, instruction: str | None = None,
              truncate: bool = True) -> list[float]:
        """One relevance score per document, in the order given (P(yes) in [0, 1] for Qwen3)."""
        return self.score_tokens(self.tokenize(query, documents, instruction=instruction, truncate=truncate))

    def tokenize(self, query: str, documents: str | Sequence[str], *, instruction: str | None = None,
                 truncate: bool = True) -> list[list[int]]:
        """The exact token ids the scorer sees, for `score_tokens` (and for counting usage)."""
        check_text(query, "query")
        docs, _ = check_texts(documents, "document")
        if instruction is not None:
            check_text(instruction, "instruction")
        return self._scorer.tokenize(query, docs, instruction, truncate)

    def score_tokens(self, token_lists: Sequence[Sequence[int]]) -> list[float]:
        """Scores for the output of `tokenize`, in the same order."""
        return self._scorer.score_tokens(token_lists)

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
