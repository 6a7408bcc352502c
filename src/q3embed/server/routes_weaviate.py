"""Weaviate's inference-container contracts, so Weaviate uses q3embed in place of its containers:
text2vec-transformers (GET /.well-known/live, /.well-known/ready, /meta; POST /vectors) and
reranker-transformers (POST /rerank), under /weaviate because TEI owns POST /rerank at the root.

    TRANSFORMERS_INFERENCE_API=http://q3embed:8000/weaviate   (Weaviate sends task_type query/passage)
    TRANSFORMERS_QUERY_INFERENCE_API=http://q3embed:8000/weaviate/query       (the path decides,
    TRANSFORMERS_PASSAGE_INFERENCE_API=http://q3embed:8000/weaviate/passage    for split set-ups)
    RERANKER_INFERENCE_API=http://q3embed:8000/weaviate
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from .schemas import WeaviateRerankRequest, WeaviateVectorsRequest
from .state import AppState, State

__all__ = ["router"]

router = APIRouter(tags=["Weaviate"])

PREFIX = "/weaviate"
# Each prefix a Weaviate module may be pointed at, and the task it fixes (None: the body's task_type).
_PREFIXES: dict[str, str | None] = {PREFIX: None, f"{PREFIX}/query": "query", f"{PREFIX}/passage": "passage"}


def _meta(state: AppState) -> dict:
    """What Weaviate shows as the module's model (its /v1/meta); no file system paths."""
    served = state.served_models()[0]
    return {"model": {"model_name": served.names[0], "model_type": served.info.kind, "aliases": served.names[1:],
                      "dimensions": served.info.dimensions, "max_length": served.info.max_length},
            "model_path": served.names[0]}


async def _vectors(body: WeaviateVectorsRequest, fixed_task: str | None, request: Request, state: State) -> dict:
    config = body.config
    task = fixed_task or (config.task_type if config else None)
    texts = [body.text] if body.text is not None else body.texts or []
    state.check_count(len(texts), state.config.max_items_per_request, "texts")
    if not texts:  # Weaviate's batch client sends none only by mistake; the answer is the empty batch
        return {"vectors": [], "dims": 0}
    result = await state.until_disconnected(request, state.engine.embed(
        texts, query=task == "query", dimensions=config.dimensions if config else None))
    dims = int(result.vectors.shape[1])
    if body.text is not None:  # the container's reply ("dim"), and the Go client's field name ("dims")
        return {"text": body.text, "vector": result.vectors[0].tolist(), "dim": dims, "dims": dims}
    return {"vectors": result.vectors.tolist(), "dims": dims}


def _add_vector_routes(prefix: str, fixed_task: str | None) -> None:
    @router.get(f"{prefix}/.well-known/live", status_code=204, response_class=Response)
    @router.get(f"{prefix}/.well-known/ready", status_code=204, response_class=Response)
    async def live_and_ready(state: State) -> Response:
        """204 while the engine runs (Weaviate waits for it at start-up); 503 once it has stopped."""
        return Response(status_code=204 if state.engine.alive else 503)

    @router.get(f"{prefix}/meta")
    async def meta(state: State) -> dict:
        return _meta(state)

    @router.post(f"{prefix}/vectors")
    @router.post(f"{prefix}/vectors/", include_in_schema=False)
    async def vectors(body: WeaviateVectorsRequest, request: Request, state: State) -> dict:
        """text2vec-transformers: `text` -> {text, vector, dim}; a batch of `texts` -> {vectors, dims}."""
        return await _vectors(body, fixed_task, request, state)


for _prefix, _task in _PREFIXES.items():
    _add_vector_routes(_prefix, _task)


@router.post(f"{PREFIX}/rerank")
async def weaviate_rerank(body: WeaviateRerankRequest, request: Request, state: State) -> dict:
    """reranker-transformers: {query, documents} -> {query, scores: [{document, score}]}, in the order sent."""
    model = state.reranker_model(None)  # a clear 404 when this server has no reranker
    documents = body.documents or []
    state.check_count(len(documents), state.config.max_documents_per_rerank, "documents")
    scored = await state.until_disconnected(request, state.engine.rerank(body.query, documents)) if documents else None
    scores = scored.scores if scored else []
    return {"query": body.query, "model": model,
            "scores": [{"document": d, "score": s} for d, s in zip(documents, scores, strict=True)]}
