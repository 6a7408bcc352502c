"""The Qwen3 tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.

A GGUF carries no tokenizer.json, only what llama.cpp needs: the byte-level BPE vocabulary and
merges, a token type per id, the special token ids and the *name* of the pre-tokenizer ("qwen2").
From these we build exactly the `tokenizers.Tokenizer` that Qwen3's tokenizer.json describes: NFC
normalizer, the Qwen2 split regex, byte-level BPE without unknown token or byte fallback, and the
added tokens matched whole (CONTROL ids as special, USER_DEFINED ids such as `<think>` as plain
added tokens). The NFC step matters: llama.cpp does not normalize, the reference does, so
decomposed accents would otherwise get other ids.

Why not transformers' GGUF tokenizer conversion: it moved modules between the 4.x and 5.x lines that
`transformers>=4.56` allows, and the 4.x converter adds only three special tokens, so `<think>`
in the reranker's suffix is cut into pieces; the rebuild below is the same few `tokenizers` calls
and is tested against tokenizer.json id for id and offset for offset.

No post-processor: Qwen3Tokenizer appends `<|endoftext|>` itself, so files converted before the
upstream EOS fix (`tokenizer.ggml.add_eos_token` false or absent) embed correctly too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from ..errors import CheckpointError

__all__ = ["QWEN2_SPLIT", "tokenizer_from_gguf"]

# The split regex of Qwen2/Qwen3's tokenizer.json, which llama.cpp calls pre-tokenizer "qwen2".
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZERS = {"qwen2": QWEN2_SPLIT}

# llama.cpp's token types (gguf.TokenType)
_CONTROL, _USER_DEFINED, _UNUSED = 3, 4, 5


def _require(metadata: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = metadata.get(key)
    if not isinstance(value, kind) or (kind is list and not value):
        raise CheckpointError(f"{where}: GGUF metadata {key} is missing or malformed: no usable tokenizer")
    return value


def _bpe(tokens: list[str], types: list[int], merges: list[str], where: str) -> models.BPE:
    vocab = {token: index for index, (token, kind) in enumerate(zip(tokens, types, strict=True)) if kind != _UNUSED}
    pairs = []
    for merge in merges:
        left, sep, right = merge.partition(" ")
        if not sep or not left or not right:
            raise CheckpointError(f"{where}: GGUF merge {merge!r} is not two tokens separated by a space")
        pairs.append((left, right))
    try:
        return models.BPE(vocab=vocab, merges=pairs, dropout=None, unk_token=None, fuse_unk=False,
                          byte_fallback=False, continuing_subword_prefix="", end_of_word_suffix="")
    except Exception as exc:  # tokenizers raises a bare Exception for merges outside the vocabulary
        raise CheckpointError(f"{where}: the GGUF vocabulary and merges do not form a BPE model: {exc}") from None


def tokenizer_from_gguf(metadata: Mapping[str, Any], where: str) -> Tokenizer:
    """The `tokenizers.Tokenizer` a Qwen3 GGUF describes, identical to the repos' tokenizer.json."""
    model = metadata.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise CheckpointError(f"{where}: tokenizer.ggml.model is {model!r}; Qwen3 uses byte-level BPE ('gpt2')")
    pre = metadata.get("tokenizer.ggml.pre")
    if pre not in _PRE_TOKENIZERS:
        raise CheckpointError(
            f"{where}: tokenizer.ggml.pre is {pre!r}; the Qwen3 tokenizer is {', '.join(_PRE_TOKENIZERS)!r}"
        )
    tokens = _require(metadata, "tokenizer.ggml.tokens", list, where)
    types = _require(metadata, "tokenizer.ggml.token_type", list, where)
    merges = _require(metadata, "tokenizer.ggml.merges", list, where)
    if len(types) != len(tokens):
        raise CheckpointError(f"{where}: {len(tokens)} tokens but {len(types)} token types in the GGUF metadata")

    tokenizer = Tokenizer(_bpe(tokens, types, merges, where))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PRE_TOKENIZERS[pre]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    # Added tokens are matched whole before normalization, as tokenizer.json's added_tokens are;
    # their ids already sit in the vocabulary, so adding them keeps the ids.
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                  for token, kind in zip(tokens, types, strict=True) if kind == _CONTROL])
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False)
                          for token, kind in zip(tokens, types, strict=True) if kind == _USER_DEFINED])
    return tokenizer
