"""text-embeddings-inference compatible routes (/embed, /rerank, /tokenize, /info) and Ollama's
/api/embed and /api/embeddings, for the clients and integrations written against those servers."""

from __future__ import annotations

import asyncio
import math
import time

from fastapi import APIRouter, Request

from .. import __version__
from ..engine.tokens import token_spans
from ..errors import InputError
from .schemas import OllamaEmbeddingsRequest, OllamaEmbedRequest, TEIEmbedRequest, TEIRerankRequest, TEITokenizeRequest
from .state import State

__all__ = ["router"]

router = APIRouter()


def _as_list(inputs: str | list[str]) -> list[str]:
    return [inputs] if isinstance(inputs, str) else inputs


def _query_prompt(prompt_name: str | None) -> bool:
    """TEI names prompts from the sentence-transformers config; Qwen3's only one is 'query'."""
    if prompt_name in (None, "document", "passage"):
        return False
    if prompt_name == "query":
        return True
    raise InputError(f"prompt_name {prompt_name!r} is unknown: use 'query' (or omit it for documents)")


def _right_only(direction: str) -> None:
    if direction.lower() != "right":
        raise InputError("truncation_direction Left is not supported: Qwen3 inputs keep their start and "
                         "end with <|endoftext|>, so they are cut on the right")


@router.post("/embed", tags=["TEI"])
async def tei_embed(body: TEIEmbedRequest, request: Request, state: State) -> list[list[float]]:
    _right_only(body.truncation_direction)
    texts = _as_list(body.inputs)
    state.check_count(len(texts), state.config.max_items_per_request, "inputs")
    result = await state.until_disconnected(request, state.engine.embed(
        texts, query=_query_prompt(body.prompt_name), dimensions=body.dimensions,
        normalize=body.normalize, truncate=body.truncate))
    return result.vectors.tolist()


def _log_odds(probability: float) -> float:
    """TEI's raw_scores: the logit behind a probability (Qwen3: logit_yes - logit_no)."""
    p = min(max(probability, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


@router.post("/rerank", tags=["TEI"])
async def tei_rerank(body: TEIRerankRequest, request: Request, state: State) -> list[dict]:
    _right_only(body.truncation_direction)
    state.reranker_model(None)
    state.check_count(len(body.texts), state.config.max_documents_per_rerank, "texts")
    scored = await state.until_disconnected(request, state.engine.rerank(body.query, body.texts,
                                                                         truncate=body.truncate))
    order = sorted(range(len(body.texts)), key=lambda i: -scored.scores[i])
    rows = []
    for i in order:
        score = _log_odds(scored.scores[i]) if body.raw_scores else scored.scores[i]
        rows.append({"index": i, "score": score, **({"text": body.texts[i]} if body.return_text else {})})
    return rows


@router.post("/tokenize", tags=["TEI"])
async def tei_tokenize(body: TEITokenizeRequest, state: State) -> list[list[dict]]:
    texts = _as_list(body.inputs)
    state.check_count(len(texts), state.config.max_items_per_request, "inputs")
    backend = state.engine.embedder.backend
    prompts = [backend.query_text(t, None) for t in texts] if _query_prompt(body.prompt_name) else texts

    def spans() -> list[list[dict]]:
        return [[vars(s) for s in token_spans(backend, text, body.add_special_tokens)] for text in prompts]

    return await asyncio.to_thread(spans)


@router.get("/info", tags=["TEI"])
async def tei_info(state: State) -> dict:
    info = state.engine.embedding_info
    return {"model_id": state.model_names(info)[0], "model_dtype": info.dtype,
            "model_type": {"embedding": {"pooling": "last_token" if info.kind == "qwen3" else "model"}},
            "max_input_length": info.max_length, "max_batch_tokens": state.engine.worker.limits.max_batch_tokens,
            "max_client_batch_size": state.config.max_items_per_request, "version": __version__}


@router.post("/api/embed", tags=["Ollama"])
async def ollama_embed(body: OllamaEmbedRequest, request: Request, state: State) -> dict:
    started = time.perf_counter_ns()
    model = state.embedding_model(body.model)
    texts = _as_list(body.input)
    state.check_count(len(texts), state.config.max_items_per_request, "inputs")
    result = await state.until_disconnected(request, state.engine.embed(
        texts, dimensions=body.dimensions, truncate=body.truncate))
    return {"model": model, "embeddings": result.vectors.tolist(), "total_duration": time.perf_counter_ns() - started,
            "load_duration": 0, "prompt_eval_count": sum(result.token_counts)}


@router.post("/api/embeddings", tags=["Ollama"])
async def ollama_embeddings(body: OllamaEmbeddingsRequest, request: Request,
                            state: State) -> dict:
    state.embedding_model(body.model)
    result = await state.until_disconnected(request, state.engine.embed([body.prompt], normalize=False))
    return {"embedding": result.vectors[0].tolist()}
