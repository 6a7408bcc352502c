"""Request and response bodies of every endpoint, as the clients of each API family send them.

Unknown fields are ignored (clients add their own, e.g. OpenAI's `user`); wrong types are 422
with the field named. Token-id arrays are accepted by the schema only so that the handler can
answer them with a 400 that explains the fix, instead of a bare validation error.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..text.unicode import find_unencodable

__all__ = [
    "EmbeddingRequest",
    "EmbeddingResponse",
    "RerankRequest",
    "RerankResponse",
    "TEIEmbedRequest",
    "TEIRerankRequest",
    "TEITokenizeRequest",
    "TEISimilarityRequest",
    "TEIRootRequest",
    "OllamaEmbedRequest",
    "OllamaEmbeddingsRequest",
    "OllamaShowRequest",
    "WeaviateRerankRequest",
    "WeaviateVectorConfig",
    "WeaviateVectorsRequest",
]


def refuse_unencodable(data: Any) -> Any:
    """Every string of a body (keys too) must be valid Unicode, before any field is read: a lone
    surrogate is a 422 naming its place, not a 500 from a tokenizer, a database or the JSON encoder."""
    problem = find_unencodable(data)
    if problem:
        raise ValueError(problem)
    return data


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    _unicode = model_validator(mode="before")(refuse_unencodable)


# ---------------------------------------------------------------- OpenAI /v1/embeddings


class EmbeddingRequest(_Request):
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string or a list of strings. Token-id arrays are refused with a 400.")
    model: str | None = Field(None, description="The served model's name; omitted means the served model.")
    dimensions: int | None = Field(None, description="Matryoshka output size, from 32 to the model's hidden size.")
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    input_type: Literal["query", "document"] | None = Field(
        None, description="q3embed extension: 'query' wraps each input in the model's query instruction.")
    instruction: str | None = Field(
        None, description="q3embed extension: the task instruction of a query (implies input_type=query).")
    truncate: bool = Field(True, description="q3embed extension: cut over-long inputs (false: refuse them).")


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # base64 of little-endian float32 when encoding_format=base64


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


# ---------------------------------------------------------------- Cohere / Jina /v1/rerank


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str


class RerankRequest(_Request):
    query: str
    documents: list[str | RerankDocument] = Field(description="Strings, or objects with a `text` field.")
    model: str | None = None
    top_n: int | None = Field(None, description="Return only the best N results.")
    return_documents: bool = False
    instruction: str | None = Field(None, description="q3embed extension: the reranker's task instruction.")
    truncate: bool = Field(True, description="q3embed extension: cut over-long documents (false: refuse them).")


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage
    meta: dict = Field(default_factory=dict)


# ---------------------------------------------------------------- text-embeddings-inference


class TEIEmbedRequest(_Request):
    inputs: str | list[str]
    normalize: bool = True
    truncate: bool = False  # TEI's default: over-long inputs are an error unless truncate=true
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    prompt_name: str | None = Field(None, description="'query' embeds the inputs as queries.")
    dimensions: int | None = None


class TEISimilarityInputs(_Request):
    source_sentence: str
    sentences: list[str]


class TEISimilarityRequest(_Request):
    """TEI's /similarity (huggingface_hub's sentence_similarity): cosine of each sentence with the source."""

    inputs: TEISimilarityInputs
    truncate: bool = False
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    prompt_name: str | None = None


class TEIRootRequest(TEIEmbedRequest):
    """TEI's POST /, which clients call with the server's base URL: an embedding request, or a
    similarity one when `inputs` is {"source_sentence", "sentences"}."""

    inputs: str | list[str] | TEISimilarityInputs  # type: ignore[assignment]


class TEIRerankRequest(_Request):
    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"


class TEITokenizeRequest(_Request):
    inputs: str | list[str]
    add_special_tokens: bool = True
    prompt_name: str | None = None


# ---------------------------------------------------------------- Ollama


class OllamaEmbedRequest(_Request):
    model: str | None = None
    input: str | list[str]
    truncate: bool = True
    dimensions: int | None = None
    keep_alive: str | int | None = None
    options: dict | None = None


class OllamaEmbeddingsRequest(_Request):
    """The older /api/embeddings: one prompt, one unnormalised vector."""

    model: str | None = None
    prompt: str
    keep_alive: str | int | None = None
    options: dict | None = None


class OllamaShowRequest(_Request):
    model: str = Field(description="A served model's name, as /api/tags lists it.")


# ---------------------------------------------------------------- Weaviate inference containers


class WeaviateVectorConfig(_Request):
    # Weaviate sends its module's pooling setting ("masked_mean" by default); the model's own
    # pooling (the last token for Qwen3) is what its embeddings mean, so it is read and not applied.
    pooling_strategy: str | None = None
    task_type: Literal["query", "passage"] | None = Field(
        None, description="'query' embeds in the model's query instruction; 'passage' (or none) as a document.")
    dimensions: int | None = Field(None, description="Matryoshka output size.")


class WeaviateVectorsRequest(_Request):
    """text2vec-transformers' body: one `text`, or a batch of `texts` (newer Weaviate versions)."""

    text: str | None = None
    texts: list[str] | None = None
    config: WeaviateVectorConfig | None = None

    @model_validator(mode="after")
    def _one_of(self) -> WeaviateVectorsRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("send `text` (one string) or `texts` (a list of strings), not both or neither")
        return self


class WeaviateRerankRequest(_Request):
    """reranker-transformers' body: a query and the documents to score (`property` is unused there too)."""

    query: str
    documents: list[str] | None = None
    property: str | None = None
