"""Tokens with their character spans, for showing users what the model sees (TEI's /tokenize)."""

from __future__ import annotations

from dataclasses import dataclass

from .backends import EmbeddingBackend, Qwen3EmbeddingBackend, TransformersBackend

__all__ = ["TokenSpan", "token_spans"]


@dataclass(frozen=True)
class TokenSpan:
    id: int
    text: str  # the characters of the input this token covers ("" for added special tokens)
    special: bool
    start: int  # character offsets into the input
    stop: int


def token_spans(backend: EmbeddingBackend, text: str, add_special_tokens: bool = True) -> list[TokenSpan]:
    """The tokens of one input after truncation, in order; the same ids the model is given."""
    if isinstance(backend, Qwen3EmbeddingBackend):
        return _qwen3_spans(backend, text, add_special_tokens)
    if isinstance(backend, TransformersBackend):
        return _transformers_spans(backend, text, add_special_tokens)
    raise TypeError(f"no token spans for {type(backend).__name__}")


def _qwen3_spans(backend: Qwen3EmbeddingBackend, text: str, add_special_tokens: bool) -> list[TokenSpan]:
    tokenizer = backend.tokenizer
    encoding = tokenizer.encode_raw([text])[0]
    special_ids = tokenizer.special_ids
    limit = tokenizer.max_length - 1  # room for the <|endoftext|> the model always gets
    spans = [TokenSpan(i, text[a:b], i in special_ids, a, b)
             for i, (a, b) in list(zip(encoding.ids, encoding.offsets, strict=True))[:limit]]
    if add_special_tokens:
        spans.append(TokenSpan(tokenizer.eos_id, "", True, len(text), len(text)))
    return spans


def _transformers_spans(backend: TransformersBackend, text: str, add_special_tokens: bool) -> list[TokenSpan]:
    encoder = backend.encoder
    if encoder.settings.lowercase:
        text = text.lower()
    encoded = encoder.tokenizer(text, truncation=True, max_length=encoder.settings.max_length,
                                add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                                return_special_tokens_mask=True)
    rows = zip(encoded["input_ids"], encoded["offset_mapping"], encoded["special_tokens_mask"], strict=True)
    return [TokenSpan(i, "" if special else text[a:b], bool(special), a, b) for i, (a, b), special in rows]
