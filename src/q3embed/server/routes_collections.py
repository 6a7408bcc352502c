"""Collections over HTTP: create / list / describe / drop, upsert and delete documents, search.

The Collections API blocks (store I/O, model calls), so every call runs on a worker thread; its
model work goes through the engine's queue (server/engine_adapters.py), batched with all other
requests and bounded by the same limits (429 when full).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import UnsupportedError
from .schemas import refuse_unencodable
from .state import AppState, State

__all__ = ["router"]

router = APIRouter(prefix="/v1/collections", tags=["Collections"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not silently ignored

    _unicode = model_validator(mode="before")(refuse_unencodable)


class CreateCollection(_Body):
    name: str
    chunk_size: int | None = Field(None, description="Tokens per chunk (default 512).")
    chunk_overlap: int | None = Field(None, description="Tokens shared by neighbouring chunks (default 64).")
    index: Literal["flat", "hnsw"] = "flat"
    dimensions: int | None = Field(None, description="Matryoshka size of the stored vectors (default: full).")
    exist_ok: bool = False


class DocumentIn(_Body):
    id: str
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class UpsertDocuments(_Body):
    documents: list[DocumentIn]


class DeleteDocuments(_Body):
    ids: list[str]


class SearchCollection(_Body):
    query: str
    top_k: int = 10
    filter: dict[str, Any] | None = Field(None, description='Metadata filter, e.g. {"lang": "en"}.')
    rerank: bool = False
    candidates: int | None = Field(None, description="Candidates the reranker sees (default: 4 x top_k).")
    instruction: str | None = None


async def _call(state: AppState, method: str, *args: Any, **kwargs: Any) -> Any:
    collections = state.collections
    if collections is None:
        raise UnsupportedError("collections are not available on this server")
    return await asyncio.to_thread(getattr(collections, method), *args, **kwargs)


@router.get("")
async def list_collections(state: State) -> dict:
    return {"collections": [c.as_dict() for c in await _call(state, "list")]}


@router.post("", status_code=201)
async def create_collection(body: CreateCollection, state: State) -> dict:
    options = body.model_dump(exclude={"name"})
    return (await _call(state, "create", body.name, **options)).as_dict()


@router.get("/{name}")
async def describe_collection(name: str, state: State) -> dict:
    return (await _call(state, "describe", name)).as_dict()


@router.delete("/{name}")
async def drop_collection(name: str, state: State) -> dict:
    await _call(state, "drop", name)
    return {"dropped": name}


@router.post("/{name}/documents")
async def upsert_documents(name: str, body: UpsertDocuments, state: State) -> dict:
    state.check_count(len(body.documents), state.config.max_items_per_request, "documents")
    documents = [d.model_dump() for d in body.documents]
    return (await _call(state, "upsert", name, documents)).as_dict()


@router.post("/{name}/documents/delete")
async def delete_documents(name: str, body: DeleteDocuments, state: State) -> dict:
    return asdict(await _call(state, "delete", name, body.ids))


@router.get("/{name}/documents/{doc_id}")
async def get_document(name: str, doc_id: str, state: State) -> dict:
    return asdict(await _call(state, "get", name, doc_id))


@router.post("/{name}/search")
async def search_collection(name: str, body: SearchCollection, request: Request, state: State) -> dict:
    work = _call(state, "search", name, body.query, top_k=body.top_k, filter=body.filter, rerank=body.rerank,
                 candidates=body.candidates, instruction=body.instruction)
    return (await state.until_disconnected(request, work)).as_dict()
