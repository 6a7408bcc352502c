"""The exact prompt formats of Qwen3-Embedding and Qwen3-Reranker (from the model cards)."""

from __future__ import annotations

__all__ = [
    "DEFAULT_TASK",
    "query_text",
    "RERANK_PREFIX",
    "RERANK_SUFFIX",
    "rerank_body",
    "YES_TOKEN",
    "NO_TOKEN",
]

# Default task of both model cards; the reranker card uses the same sentence.
DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"


def query_text(query: str, task: str | None = None) -> str:
    """An embedding query: a real newline and no space after `Query:`; documents get nothing."""
    return f"Instruct: {task or DEFAULT_TASK}\nQuery:{query}"


RERANK_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
YES_TOKEN = "yes"
NO_TOKEN = "no"


def rerank_body(query: str, document: str, instruction: str | None = None) -> str:
    return f"<Instruct>: {instruction or DEFAULT_TASK}\n<Query>: {query}\n<Document>: {document}"


def rerank_spans(query: str, document: str, instruction: str | None = None) -> tuple[str, int, int, int]:
    """The body and the character spans of its parts: (body, query_start, query_end, doc_start)."""
    head = f"<Instruct>: {instruction or DEFAULT_TASK}\n<Query>: "
    query_start = len(head)
    query_end = query_start + len(query)
    doc_start = query_end + len("\n<Document>: ")
    return rerank_body(query, document, instruction), query_start, query_end, doc_start
