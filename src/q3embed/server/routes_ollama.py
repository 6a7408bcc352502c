"""Ollama's API as its clients and UIs use it: embeddings (/api/embed, /api/embeddings), and the
listing calls a client makes first to pick a model (/api/tags, /api/show, /api/ps, /api/version)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from fastapi import APIRouter, Request

from .. import __version__
from ..errors import NotFoundError
from .schemas import OllamaEmbeddingsRequest, OllamaEmbedRequest, OllamaShowRequest
from .state import ServedModel, State, as_list

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


# ---------------------------------------------------------------- listing

_STARTED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _entry(served: ServedModel) -> dict:
    info, name = served.info, served.names[0]
    family = "qwen3" if info.kind.startswith("qwen3") else "bert"
    return {"name": name, "model": name, "modified_at": _STARTED, "size": 0,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {"parent_model": "", "format": "gguf" if Path(info.path).is_file() else "safetensors",
                        "family": family, "families": [family], "parameter_size": "",
                        "quantization_level": info.dtype}}


@router.get("/api/tags", tags=["Ollama"])
async def ollama_tags(state: State) -> dict:
    """The served models, as `ollama list` shows them."""
    return {"models": [_entry(served) for served in state.served_models()]}


@router.get("/api/ps", tags=["Ollama"])
async def ollama_ps(state: State) -> dict:
    """The loaded models (all of them, for as long as the server runs)."""
    return {"models": [{**_entry(served), "expires_at": "9999-12-31T23:59:59Z", "size_vram": 0,
                        "context_length": served.info.max_length} for served in state.served_models()]}


@router.post("/api/show", tags=["Ollama"])
async def ollama_show(body: OllamaShowRequest, state: State) -> dict:
    models = state.served_models()
    for served in models:
        if body.model in served.names or body.model == served.info.name:
            entry, info = _entry(served), served.info
            family = entry["details"]["family"]
            # Ollama's capability names: a reranker has none of them (it cannot chat or embed).
            capabilities = ["embedding"] if "embedding" in served.kinds else []
            return {"modelfile": "", "parameters": "", "template": "", "license": "", "modified_at": _STARTED,
                    "details": entry["details"], "capabilities": capabilities,
                    "model_info": {"general.architecture": family, f"{family}.embedding_length": info.dimensions,
                                   f"{family}.context_length": info.max_length}}
    names = [served.names[0] for served in models]
    raise NotFoundError(f"model {body.model!r} is not served here; the models are {', '.join(map(repr, names))}")


@router.get("/api/version", tags=["Ollama"])
async def ollama_version() -> dict:
    return {"version": __version__}
