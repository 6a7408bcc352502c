"""Ollama's embedding API (/api/embed, /api/embeddings), for the ollama client and the tools built on it."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from .schemas import OllamaEmbeddingsRequest, OllamaEmbedRequest
from .state import State, as_list

__all__ = ["router"]

router = APIRouter()


@router.post("/api/embed", tags=["Ollama"])
async def ollama_embed(body: OllamaEmbedRequest, request: Request, state: State) -> dict:
    started = time.perf_counter_ns()
    model = state.embedding_model(body.model)
    texts = as_list(body.input)
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
