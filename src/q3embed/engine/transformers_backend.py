"""BERT-family encoders (all-MiniLM, BGE, GTE, E5) through transformers, pooled as
sentence-transformers pools them (CLS / MEAN / LAST, from the model's own files)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..errors import InputError
from ..model.heads import pool_padded
from ..weights.resolve import ResolvedModel
from ..weights.sentence_transformers import LoadedEncoder
from .device import Placement, dtype_name
from .info import ModelInfo, TokenSpan

__all__ = ["TransformersBackend"]


class TransformersBackend:
    def __init__(self, resolved: ResolvedModel, loaded: LoadedEncoder, placement: Placement,
                 split_special_tokens: bool = False) -> None:
        """split_special_tokens: "[SEP]" and the like in user text are characters (special_tokens="plain")."""
        self.split = split_special_tokens
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        self.settings = loaded.settings
        self.device = placement.device
        config = self.model.config
        # hidden states, attention and MLP temporaries per (padded) token, x2 for the padding
        self.bytes_per_token = (6 * config.hidden_size + 2 * config.intermediate_size) * placement.dtype.itemsize * 2
        self.info = ModelInfo(
            name=resolved.name, path=str(resolved.path), kind="transformers", dimensions=loaded.dimensions,
            max_length=self.settings.max_length, device=str(placement.device), dtype=dtype_name(placement.dtype),
            supports_instructions="query" in self.settings.prompts, aliases=resolved.aliases,
            source=resolved.reason,
        )

    def query_text(self, text: str, instruction: str | None) -> str:
        # BERT-family models take a fixed query prompt (E5's "query: ") when their
        # sentence-transformers config names one; a free-form instruction is Qwen3's feature.
        prompt = self.settings.prompts.get("query", "")
        return f"{instruction}{text}" if instruction else f"{prompt}{text}"

    def _cased(self, text: str) -> str:
        return text.lower() if self.settings.lowercase else text

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[list[int]]:
        texts = [self._cased(t) for t in texts]
        limit = self.settings.max_length
        ids = self.tokenizer(texts, truncation=False, verbose=False, split_special_tokens=self.split)["input_ids"]
        out = []
        for index, seq in enumerate(ids):
            if len(seq) > limit:
                if not truncate:
                    raise InputError(
                        f"input {index} is {len(seq)} tokens long, over the maximum of {limit}; "
                        "shorten it or turn truncation on"
                    )
                # Same as the tokenizer's own truncation: keep the closing special token.
                seq = self.tokenizer(texts[index], truncation=True, max_length=limit,
                                     split_special_tokens=self.split)["input_ids"]
            out.append(seq)
        return out

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        spans = self.tokenizer(self._cased(text), add_special_tokens=False, return_offsets_mapping=True,
                               verbose=False, split_special_tokens=self.split)
        return [(int(start), int(end)) for start, end in spans["offset_mapping"]]

    def token_spans(self, text: str, add_special_tokens: bool) -> list[TokenSpan]:
        text = self._cased(text)
        encoded = self.tokenizer(text, truncation=True, max_length=self.settings.max_length,
                                 add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                                 return_special_tokens_mask=True, split_special_tokens=self.split)
        rows = zip(encoded["input_ids"], encoded["offset_mapping"], encoded["special_tokens_mask"], strict=True)
        return [TokenSpan(i, "" if special else text[a:b], bool(special), a, b) for i, (a, b), special in rows]

    def forward(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        """Token id lists -> pooled vectors [B, H] in fp32 (not normalised), right padded."""
        padded = self.tokenizer.pad({"input_ids": [list(s) for s in sequences]}, return_tensors="pt")
        input_ids = padded["input_ids"].to(self.device)
        mask = padded["attention_mask"].to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state  # [B, L, H]
        return pool_padded(hidden, mask, self.settings.pooling)

    def compile_now(self) -> bool:
        return False  # transformers' modules are run as they are
