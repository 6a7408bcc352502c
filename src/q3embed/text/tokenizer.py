"""The Qwen3 tokenizer with the rules the official models need.

Embedding inputs end in exactly one `<|endoftext|>`: texts are tokenized *without* the
tokenizer.json post-processor (some published tokenizer.json files append the token, older ones
do not), cut to max_length - 1, and the token is appended by us. The result is the same for both
tokenizer variants, and the same as the fixed official tokenizer.

Reranker inputs are prefix + body + suffix; truncation shortens the document, then the query,
and never touches the prefix, the suffix or the template around the query.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from ..errors import CheckpointError, ConfigurationError, InputError
from .prompts import NO_TOKEN, RERANK_PREFIX, RERANK_SUFFIX, YES_TOKEN, rerank_spans

__all__ = ["ENDOFTEXT", "Qwen3Tokenizer", "MAX_LENGTH_DEFAULT", "MAX_LENGTH_LIMIT"]

ENDOFTEXT = "<|endoftext|>"
MAX_LENGTH_DEFAULT = 8192
MAX_LENGTH_LIMIT = 32768
_MIN_LENGTH = 16


def _check_max_length(max_length: int) -> int:
    if not isinstance(max_length, int) or not _MIN_LENGTH <= max_length <= MAX_LENGTH_LIMIT:
        raise ConfigurationError(
            f"max_length must be an integer from {_MIN_LENGTH} to {MAX_LENGTH_LIMIT}, got {max_length!r}"
        )
    return max_length


def _first_token_ending_after(encoding: Encoding, char: int) -> int:
    """Index of the first token holding any character at or after `char` (len if none)."""
    for index, (_, end) in enumerate(encoding.offsets):
        if end > char:
            return index
    return len(encoding.ids)


class Qwen3Tokenizer:
    """Wraps a `tokenizers.Tokenizer`; thread-safe, and batch encoding runs in Rust threads."""

    def __init__(self, tokenizer: Tokenizer, max_length: int = MAX_LENGTH_DEFAULT) -> None:
        self.max_length = _check_max_length(max_length)
        self._tok = tokenizer
        self._tok.no_truncation()
        self._tok.no_padding()
        eos = tokenizer.token_to_id(ENDOFTEXT)
        if eos is None:
            raise CheckpointError(f"the tokenizer has no {ENDOFTEXT} token: not a Qwen3 tokenizer")
        self.eos_id: int = eos
        self._text_tok = tokenizer  # what user text goes through (see treat_special_tokens_as_text)

    def treat_special_tokens_as_text(self) -> None:
        """From now on "<|im_end|>" and the like inside user text are characters, not control
        tokens; the reranker's template and the appended <|endoftext|> stay the real tokens."""
        plain = Tokenizer.from_str(self._tok.to_str())
        plain.encode_special_tokens = True
        self._text_tok = plain

    @classmethod
    def from_dir(cls, model_dir: Path, max_length: int = MAX_LENGTH_DEFAULT) -> "Qwen3Tokenizer":
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{model_dir} has no tokenizer.json")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise CheckpointError(f"{path} is not a valid tokenizer.json: {exc}") from None
        return cls(tokenizer, max_length)

    def token_id(self, token: str) -> int:
        ids = self._tok.encode(token, add_special_tokens=False).ids
        if len(ids) != 1:
            raise CheckpointError(f"{token!r} is not a single token in this tokenizer: {ids}")
        return ids[0]

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of the special added tokens (<|endoftext|>, <|im_start|>, ...)."""
        return frozenset(i for i, token in self._tok.get_added_tokens_decoder().items() if token.special)

    def encode_raw(self, texts: Sequence[str]) -> list[Encoding]:
        """User text: no post-processor, no truncation."""
        return self._text_tok.encode_batch(list(texts), add_special_tokens=False)

    def encode_embedding_inputs(self, texts: Sequence[str], *, truncate: bool = True) -> list[list[int]]:
        """Token ids per text, each ending in exactly one `<|endoftext|>`, at most max_length."""
        limit = self.max_length - 1
        out = []
        for index, encoding in enumerate(self.encode_raw(texts)):
            ids = encoding.ids
            if len(ids) > limit:
                if not truncate:
                    raise InputError(
                        f"input {index} is {len(ids) + 1} tokens long (with {ENDOFTEXT}), over "
                        f"the maximum of {self.max_length}; shorten it or turn truncation on"
                    )
                ids = ids[:limit]
            out.append(ids + [self.eos_id])
        return out

    # --- reranker -------------------------------------------------------------------------

    @property
    def rerank_prefix_ids(self) -> list[int]:
        return self._tok.encode(RERANK_PREFIX, add_special_tokens=False).ids

    @property
    def rerank_suffix_ids(self) -> list[int]:
        return self._tok.encode(RERANK_SUFFIX, add_special_tokens=False).ids

    @property
    def yes_no_ids(self) -> tuple[int, int]:
        """(no, yes): the order of the rows in the reranker head."""
        return self.token_id(NO_TOKEN), self.token_id(YES_TOKEN)

    def encode_rerank_inputs(
        self,
        query: str,
        documents: Sequence[str],
        instruction: str | None = None,
        *,
        truncate: bool = True,
    ) -> list[list[int]]:
        """prefix + body + suffix token ids for each (query, document) pair."""
        prefix, suffix = self.rerank_prefix_ids, self.rerank_suffix_ids
        budget = self.max_length - len(prefix) - len(suffix)
        spans = [rerank_spans(query, doc, instruction) for doc in documents]
        encodings = self.encode_raw([body for body, *_ in spans])
        out = []
        for index, (encoding, (_, q_start, q_end, d_start)) in enumerate(zip(encodings, spans)):
            ids = encoding.ids
            if len(ids) > budget:
                if not truncate:
                    raise InputError(
                        f"document {index}: the reranker prompt is {len(ids) + len(prefix) + len(suffix)} "
                        f"tokens long, over the maximum of {self.max_length}; shorten it or turn truncation on"
                    )
                ids = self._truncate_pair(encoding, q_start, q_end, d_start, budget)
            out.append(prefix + ids + suffix)
        return out

    def _truncate_pair(self, encoding: Encoding, q_start: int, q_end: int, d_start: int, budget: int) -> list[int]:
        ids = encoding.ids
        head = _first_token_ending_after(encoding, d_start)  # tokens before the document
        if head <= budget:
            # The document is last: cutting from the right shortens only the document, exactly
            # as the reference's right-side truncation does.
            return ids[:budget]
        # Even without its document the pair is too long: shorten the query, keep the template.
        q_first = _first_token_ending_after(encoding, q_start)
        q_stop = _first_token_ending_after(encoding, q_end)
        separator = ids[q_stop:head]
        keep = budget - q_first - len(separator)
        if keep < 1:
            raise InputError(
                f"the reranker instruction alone is over the maximum length of {self.max_length} tokens"
            )
        return ids[:q_first] + ids[q_first:q_stop][:keep] + separator
