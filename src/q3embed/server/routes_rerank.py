"""The Cohere / Jina rerank API (/v1/rerank, /v2/rerank), for their clients and the RAG frameworks that use them."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request

from ..engine import check_top_n, rank_scores
from .schemas import RerankDocument, RerankRequest, RerankResponse, RerankResult, RerankUsage
from .state import State

__all__ = ["router"]

router = APIRouter()


def _document_text(document: str | RerankDocument) -> str:
    return document if isinstance(document, str) else document.text


@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True, tags=["Cohere/Jina"])
@router.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True, tags=["Cohere/Jina"])
async def rerank(body: RerankRequest, request: Request, state: State) -> RerankResponse:
    model = state.reranker_model(body.model)
    documents = [_document_text(d) for d in body.documents]
    state.check_count(len(documents), state.config.max_documents_per_rerank, "documents")
    check_top_n(body.top_n, len(documents))  # before any model work
    scored = await state.until_disconnected(request, state.engine.rerank(
        body.query, documents, instruction=body.instruction, truncate=body.truncate))
    results = [RerankResult(index=i, relevance_score=score,
                            document=RerankDocument(text=documents[i]) if body.return_documents else None)
               for i, score in rank_scores(scored.scores, body.top_n)]
    return RerankResponse(id=str(uuid.uuid4()), model=model, results=results,
                          usage=RerankUsage(total_tokens=scored.tokens),
                          meta={"billed_units": {"search_units": 1}, "created": int(time.time())})
