"""OpenAI-compatible embeddings (/v1/embeddings) and model list (/v1/models)."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Request

from .schemas import EmbeddingData, EmbeddingRequest, EmbeddingResponse, Usage
from .state import State, as_list, texts_of

__all__ = ["router"]

router = APIRouter()


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # what the official openai client asks for by default
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post("/v1/embeddings", response_model=EmbeddingResponse, tags=["OpenAI"])
async def create_embeddings(body: EmbeddingRequest, request: Request,
                            state: State) -> EmbeddingResponse:
    model = state.embedding_model(body.model)
    texts = texts_of(body.input)
    if isinstance(texts, list):
        state.check_count(len(texts), state.config.max_items_per_request, "inputs")
    result = await state.until_disconnected(request, state.engine.embed(
        as_list(texts), query=body.input_type == "query", instruction=body.instruction,
        dimensions=body.dimensions, truncate=body.truncate))
    data = [EmbeddingData(index=i, embedding=_encode(v, body.encoding_format)) for i, v in enumerate(result.vectors)]
    tokens = sum(result.token_counts)
    return EmbeddingResponse(data=data, model=model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


@router.get("/v1/models", tags=["OpenAI"])
async def list_models(state: State) -> dict:
    """Each served model once, with what it does and every name it answers to."""
    data = []
    for served in state.served_models():
        entry = {"id": served.names[0], "object": "model", "created": 0, "owned_by": "q3embed",
                 "kind": served.kinds[0], "kinds": list(served.kinds), "aliases": served.names[1:],
                 "dimensions": served.info.dimensions, "max_length": served.info.max_length}
        if served.rerank_by:
            entry["rerank_by"] = served.rerank_by
        data.append(entry)
    return {"object": "list", "data": data}
