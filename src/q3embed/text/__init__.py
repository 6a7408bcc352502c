"""Text in, token ids out: the Qwen3 tokenizer with its EOS rule, and the prompt templates."""

from .prompts import DEFAULT_TASK, RERANK_PREFIX, RERANK_SUFFIX, query_text, rerank_body
from .tokenizer import ENDOFTEXT, Qwen3Tokenizer

__all__ = [
    "DEFAULT_TASK",
    "ENDOFTEXT",
    "Qwen3Tokenizer",
    "RERANK_PREFIX",
    "RERANK_SUFFIX",
    "query_text",
    "rerank_body",
]
