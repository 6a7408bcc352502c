"""OpenAI-compatible embeddings and model list, and the Cohere/Jina rerank API (/v1/rerank, /v2/rerank)."""

from __future__ import annotations

import base64
import time
import uuid

import numpy as np
from fastapi import APIRouter, Request

from ..engine.inputs import check_top_n

from .schemas import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    Usage,
)
from .state import State, texts_of

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
    query = body.input_type == "query" or body.instruction is not None
    result = await state.until_disconnected(request, state.engine.embed(
        [texts] if isinstance(texts, str) else texts, query=query, instruction=body.instruction,
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


def _document_text(document: str | RerankDocument) -> str:
    return document if isinstance(document, str) else document.text


@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True, tags=["Cohere/Jina"])
@router.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True, tags=["Cohere/Jina"])
async def rerank(body: RerankRequest, request: Request, state: State) -> RerankResponse:
    model = state.reranker_model(body.model)
    documents = [_document_text(d) for d in body.documents]
    state.check_count(len(documents), state.config.max_documents_per_rerank, "documents")
    top_n = check_top_n(body.top_n, len(documents))
    scored = await state.until_disconnected(request, state.engine.rerank(
        body.query, documents, instruction=body.instruction, truncate=body.truncate))
    order = sorted(range(len(documents)), key=lambda i: -scored.scores[i])[:top_n]
    results = [RerankResult(index=i, relevance_score=scored.scores[i],
                            document=RerankDocument(text=documents[i]) if body.return_documents else None)
               for i in order]
    return RerankResponse(id=str(uuid.uuid4()), model=model, results=results,
                          usage=RerankUsage(total_tokens=scored.tokens),
                          meta={"billed_units": {"search_units": 1}, "created": int(time.time())})
