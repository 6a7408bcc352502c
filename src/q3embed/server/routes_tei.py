"""text-embeddings-inference compatible routes (/embed, /rerank, /tokenize, /similarity, /info, and
POST / at the base URL), for the clients and integrations written against TEI (huggingface_hub's
InferenceClient, LangChain, Haystack)."""

from __future__ import annotations

import asyncio
import math

from fastapi import APIRouter, Request

from .. import __version__
from ..engine import rank_scores, similarity
from ..errors import InputError
from .schemas import (
    TEIEmbedRequest,
    TEIRerankRequest,
    TEIRootRequest,
    TEISimilarityInputs,
    TEISimilarityRequest,
    TEITokenizeRequest,
)
from .state import State, as_list

__all__ = ["router"]

router = APIRouter()


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
    texts = as_list(body.inputs)
    state.check_count(len(texts), state.config.max_items_per_request, "inputs")
    result = await state.until_disconnected(request, state.engine.embed(
        texts, query=_query_prompt(body.prompt_name), dimensions=body.dimensions,
        normalize=body.normalize, truncate=body.truncate))
    return result.vectors.tolist()


@router.post("/similarity", tags=["TEI"])
async def tei_similarity(body: TEISimilarityRequest, request: Request, state: State) -> list[float]:
    _right_only(body.truncation_direction)
    return await _similarity(body.inputs, body.truncate, body.prompt_name, request, state)


async def _similarity(inputs: TEISimilarityInputs, truncate: bool, prompt_name: str | None, request: Request,
                      state: State) -> list[float]:
    """Cosine of each sentence with the source, all embedded alike (symmetric, as sentence-transformers)."""
    texts = [inputs.source_sentence, *inputs.sentences]
    state.check_count(len(texts), state.config.max_items_per_request, "sentences")
    result = await state.until_disconnected(request, state.engine.embed(
        texts, query=_query_prompt(prompt_name), truncate=truncate))
    return similarity(result.vectors[:1], result.vectors[1:])[0].tolist()


@router.post("/", tags=["TEI"])
async def tei_root(body: TEIRootRequest, request: Request, state: State) -> list:
    """What TEI answers at its base URL, which huggingface_hub's InferenceClient(model=URL) calls."""
    _right_only(body.truncation_direction)
    if isinstance(body.inputs, TEISimilarityInputs):
        return await _similarity(body.inputs, body.truncate, body.prompt_name, request, state)
    return await tei_embed(TEIEmbedRequest(**body.model_dump(exclude={"inputs"}), inputs=body.inputs), request, state)


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
    rows = []
    for i, score in rank_scores(scored.scores):
        shown = _log_odds(score) if body.raw_scores else score
        rows.append({"index": i, "score": shown, **({"text": body.texts[i]} if body.return_text else {})})
    return rows


@router.post("/tokenize", tags=["TEI"])
async def tei_tokenize(body: TEITokenizeRequest, state: State) -> list[list[dict]]:
    texts = as_list(body.inputs)
    state.check_count(len(texts), state.config.max_items_per_request, "inputs")
    spans = await asyncio.to_thread(state.engine.token_spans, texts, query=_query_prompt(body.prompt_name),
                                    add_special_tokens=body.add_special_tokens)
    return [[vars(span) for span in tokens] for tokens in spans]


@router.get("/info", tags=["TEI"])
async def tei_info(state: State) -> dict:
    info = state.engine.embedding_info
    return {"model_id": state.model_names(info)[0], "model_dtype": info.dtype,
            "model_type": {"embedding": {"pooling": "last_token" if info.kind == "qwen3" else "model"}},
            "max_input_length": info.max_length, "max_batch_tokens": state.engine.limits.max_batch_tokens,
            "max_client_batch_size": state.config.max_items_per_request, "version": __version__}
