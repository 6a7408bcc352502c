"""Reranker: (query, documents) -> relevance scores, with Qwen3-Reranker's yes/no head."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch

from ..errors import CheckpointError, ModelNotFoundError
from ..model.heads import YesNoHead, last_token_indices, matryoshka
from ..model.kernels import KernelSchedule
from ..text.tokenizer import MAX_LENGTH_DEFAULT, Qwen3Tokenizer
from ..weights.checkpoint import load_qwen3
from ..weights.config import is_qwen3, read_config_json
from ..weights.gguf import is_gguf_file, load_gguf_qwen3
from ..weights.resolve import AUTO, QWEN3_RERANKER_DEFAULT, ResolvedModel, resolve_model
from .backends import ModelInfo
from .batch import pack, plan_batches, shared_prefix_length
from .device import dtype_name, resolve_compile, resolve_device, resolve_dtype
from .embedder import DEFAULT_MAX_BATCH_TOKENS, Embedder
from .inputs import check_text, check_texts, check_top_n

__all__ = ["Reranker", "RerankResult"]

log = logging.getLogger("q3embed")


class RerankResult(NamedTuple):
    index: int  # position of the document in the request
    score: float


class RerankScorer(Protocol):
    """Tokenizing and scoring are separate steps so that a server can tokenize the next request
    on another thread while the model scores this one."""

    info: ModelInfo

    def tokenize(self, query: str, documents: Sequence[str], instruction: str | None,
                 truncate: bool) -> list[list[int]]: ...

    def score_tokens(self, token_lists: Sequence[Sequence[int]]) -> list[float]: ...


# Below this many shared tokens a separate prefill pass costs more than it saves.
MIN_SHARED_PREFIX = 16


class Qwen3RerankScorer:
    """P(yes) for each pair: the packed decoder, then two rows of lm_head at the last token.

    All pairs of a request share prefix + instruction + query: those tokens are run once
    (prefill) and their keys/values reused by every document, which then costs only its own
    tokens plus the suffix.
    """

    def __init__(self, resolved: ResolvedModel, *, device: torch.device, dtype: torch.dtype,
                 max_length: int, max_batch_tokens: int, reuse_prefix: bool = True,
                 compile_after: int | None = None) -> None:
        if is_gguf_file(resolved.path):
            self.tokenizer, loaded = load_gguf_qwen3(resolved.path, max_length=max_length, dtype=dtype,
                                                     device=device, reranker=True)
        else:
            self.tokenizer = Qwen3Tokenizer.from_dir(resolved.path, max_length)
            loaded = load_qwen3(resolved.path, dtype=dtype, device=device, head_rows=self.tokenizer.yes_no_ids)
        self.model = loaded.model
        self.kernels = KernelSchedule(self.model, compile_after)
        self.head = YesNoHead(loaded.head_rows)
        self.device = device
        self.max_batch_tokens = max_batch_tokens
        self.reuse_prefix = reuse_prefix
        self.info = ModelInfo(
            name=resolved.name, path=str(resolved.path), kind="qwen3-reranker",
            dimensions=loaded.config.hidden_size, max_length=max_length, device=str(device),
            dtype=dtype_name(dtype), supports_instructions=True,
        )

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


class EmbeddingSimilarityScorer:
    """The offline fallback of `auto`: cosine similarity of query and document embeddings."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.info = embedder.info

    def tokenize(self, query: str, documents: Sequence[str], instruction: str | None,
                 truncate: bool) -> list[list[int]]:
        """The query (in its query prompt) first, then the documents."""
        query_text = self.embedder.backend.query_text(query, instruction)
        return self.embedder.backend.tokenize([query_text, *documents], truncate=truncate)

    def score_tokens(self, token_lists: Sequence[Sequence[int]]) -> list[float]:
        vectors = matryoshka(self.embedder.embed_tokens(token_lists), None, True)  # [1 + docs, hidden]
        return (vectors[1:] @ vectors[0]).tolist()


def _auto_scorer(device: torch.device, dtype: torch.dtype, max_length: int, max_batch_tokens: int,
                 compile: str | None, compile_after: int | None) -> RerankScorer:
    try:
        resolved = resolve_model(QWEN3_RERANKER_DEFAULT)
    except ModelNotFoundError as exc:
        embedder = Embedder(AUTO, device=device, dtype=dtype, max_batch_tokens=max_batch_tokens,
                            compile=compile)
        log.warning(
            "reranker auto -> cosine similarity with %s, because %s is not available (%s)",
            embedder.info.name, QWEN3_RERANKER_DEFAULT, str(exc).split(". ")[0],
        )
        return EmbeddingSimilarityScorer(embedder)
    log.warning("reranker auto -> %s (%s)", QWEN3_RERANKER_DEFAULT, resolved.reason)
    return Qwen3RerankScorer(resolved, device=device, dtype=dtype, max_length=max_length,
                             max_batch_tokens=max_batch_tokens, compile_after=compile_after)


class Reranker:
    """Scores documents against a query with Qwen3-Reranker.

    >>> rr = Reranker("Qwen/Qwen3-Reranker-0.6B")
    >>> rr.rerank("What is the capital of China?", ["Beijing is...", "Gravity is..."], top_n=1)
    [RerankResult(index=0, score=0.99...)]
    """

    def __init__(
        self,
        model: str = "auto",
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        max_length: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        reuse_prefix: bool = True,
        compile: str | None = None,
    ) -> None:
        """reuse_prefix=False runs every pair in full (the plain computation, for comparison).
        compile: auto, on or off for the decoder's fused kernels (None: Q3EMBED_COMPILE, else auto;
        see engine.device.resolve_compile)."""
        resolved_device = resolve_device(device)
        resolved_dtype = resolve_dtype(dtype, resolved_device)
        compile_after = resolve_compile(compile, resolved_device)  # a bad mode fails before any loading
        length = max_length or MAX_LENGTH_DEFAULT
        if model == AUTO:
            self.scorer = _auto_scorer(resolved_device, resolved_dtype, length, max_batch_tokens, compile,
                                       compile_after)
            return
        resolved = resolve_model(model)
        if not is_gguf_file(resolved.path) and (
                resolved.path.is_file() or not is_qwen3(read_config_json(resolved.path))):
            raise CheckpointError(f"{resolved.path} is not a Qwen3 reranker (config.json model_type must be qwen3)")
        self.scorer = Qwen3RerankScorer(resolved, device=resolved_device, dtype=resolved_dtype,
                                        max_length=length, max_batch_tokens=max_batch_tokens,
                                        reuse_prefix=reuse_prefix, compile_after=compile_after)

    @property
    def info(self) -> ModelInfo:
        return self.scorer.info

    def warm_up(self) -> None:
        """Compile the fused kernels now, where they are enabled, with one short scoring pass."""
        kernels = getattr(self.scorer, "kernels", None)
        if kernels is not None and kernels.compile_now():
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
        return self.scorer.tokenize(query, docs, instruction, truncate)

    def score_tokens(self, token_lists: Sequence[Sequence[int]]) -> list[float]:
        """Scores for the output of `tokenize`, in the same order."""
        return self.scorer.score_tokens(token_lists)

    def rerank(self, query: str, documents: str | Sequence[str], *, top_n: int | None = None,
               instruction: str | None = None, truncate: bool = True) -> list[RerankResult]:
        """(index, score) pairs, best first; ties keep the input order."""
        scores = self.score(query, documents, instruction=instruction, truncate=truncate)
        keep = check_top_n(top_n, len(scores))
        ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [RerankResult(i, scores[i]) for i in ranked[:keep]]
