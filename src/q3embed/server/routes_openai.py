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
    infos = [state.engine.embedding_info, state.engine.reranker_info]
    data = [{"id": state.model_names(info)[0], "object": "model", "created": 0, "owned_by": "q3embed",
             "kind": "reranker" if info is state.engine.reranker_info else "embedding",
             "dimensions": info.dimensions, "max_length": info.max_length, "aliases": state.model_names(info)[1:]}
            for info in infos if info is not None]
    return {"object": "list", "data": data}
