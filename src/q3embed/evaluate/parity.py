"""`q3embed parity`: our engine against the transformers reference, on built-in and given texts.

The reference is computed the way the official model cards do it (a copy of tests/reference.py,
which is not installed): Qwen3-Embedding with left padding, the hidden state of the last column,
L2 normalisation; Qwen3-Reranker with prefix + body + suffix and P(yes) from the last position's
yes/no logits; BERT-family models through sentence-transformers, when it is installed. Both sides
run on the same texts; the report gives each text's cosine (or score difference) and the worst.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..engine import Embedder, ModelOptions, Reranker
from ..errors import ConfigurationError
from ..text.prompts import RERANK_PREFIX, RERANK_SUFFIX, query_text, rerank_body
from ..weights.config_json import is_qwen3, read_config_json
from ..weights.gguf import is_gguf_file
from ..weights.resolve import resolve_model

__all__ = ["ParityRow", "ParityReport", "ParityConfig", "model_kind", "check_parity",
           "CARD_QUERIES", "CARD_DOCUMENTS", "CARD_TASK", "EXTRA_TEXTS"]

Kind = Literal["qwen3-embedding", "qwen3-reranker", "transformers"]

# The example of the Qwen3-Embedding and Qwen3-Reranker model cards.
CARD_TASK = "Given a web search query, retrieve relevant passages that answer the query"
CARD_QUERIES = ["What is the capital of China?", "Explain gravity"]
CARD_DOCUMENTS = [
    "The capital of China is Beijing.",
    ("Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects "
     "and is responsible for the movement of planets around the sun."),
]
# More shapes of input: one word, other scripts, code, emoji, whitespace runs, a long paragraph.
EXTRA_TEXTS = [
    "Hi",
    "北京是中华人民共和国的首都。",
    "Die Hauptstadt von Deutschland ist Berlin.",
    "def add(a: int, b: int) -> int:\n    return a + b",
    "Cats 🐱 purr when they are content, and sometimes when they are stressed.",
    "  leading and trailing spaces,\ttabs\tand\n\nblank lines  ",
    " ".join([("Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen "
               "as a by-product; it takes place in the chloroplasts of plant cells.")] * 6),
]


@dataclass(frozen=True)
class ParityRow:
    side: str  # "query", "document" or "pair"
    text: str  # the text (for a pair: "query || document")
    value: float  # cosine with the reference, or |our score - reference score|


# The reference runs in float32 on the CPU; ours does too unless asked otherwise.
EXACT = ModelOptions(device="cpu", dtype="float32")


@dataclass(frozen=True)
class ParityConfig:
    options: ModelOptions = EXACT  # how our engine runs (its `model` is the one compared)
    kind: Literal["auto", "embedding", "reranker"] = "auto"
    instruction: str | None = None  # query / reranker instruction (default: the model card's)
    min_cosine: float | None = None  # None: 0.99999 in float32, 0.99 in half precision
    max_difference: float | None = None  # None: 1e-4 in float32, 0.02 in half precision


@dataclass
class ParityReport:
    model: str
    kind: Kind
    metric: str  # "cosine" (higher is better) or "abs_difference" (lower is better)
    rows: list[ParityRow]
    worst: float
    threshold: float
    passed: bool
    dtype: str
    device: str
    seconds: dict[str, float] = field(default_factory=dict)


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    keys: list[str] = []
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            keys.extend(handle.keys())
    return keys


def model_kind(path: Path, requested: str = "auto") -> Kind:
    """What a model directory holds: the reranker repos have `model.`-prefixed keys and/or lm_head."""
    if is_gguf_file(path):
        raise ConfigurationError(f"{path} is a GGUF file; parity compares with transformers, which reads the "
                                 "original safetensors directory: pass that directory")
    if not is_qwen3(read_config_json(path)):
        if requested == "reranker":
            raise ConfigurationError(f"{path} is not a Qwen3 model (config.json model_type), so not a Qwen3 reranker")
        return "transformers"
    if requested != "auto":
        return "qwen3-reranker" if requested == "reranker" else "qwen3-embedding"
    keys = _safetensors_keys(path)
    reranker = any(k.startswith(("model.", "lm_head.")) for k in keys)
    return "qwen3-reranker" if reranker else "qwen3-embedding"


def _qwen3_embedding_batch(tokenizer: Any, texts: list[str], max_length: int, eos: int,
                           appends_eos: bool) -> Any:
    if appends_eos:  # the fixed repos' tokenizer.json appends <|endoftext|> itself, also after truncation
        return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    # Older snapshots: the first model card truncated to max_length - 1 and appended the id by hand.
    encoded = tokenizer(texts, padding=False, truncation=True, max_length=max_length - 1)
    encoded["input_ids"] = [ids + [eos] for ids in encoded["input_ids"]]
    encoded["attention_mask"] = [mask + [1] for mask in encoded["attention_mask"]]
    return tokenizer.pad(encoded, padding=True, return_tensors="pt")


@torch.no_grad()
def reference_qwen3_embeddings(model_dir: Path, texts: Sequence[str], max_length: int = 8192,
                               batch: int = 8) -> np.ndarray:
    """Qwen3-Embedding card: left padding, last-token pooling, L2 normalisation (fp32, CPU)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    appends_eos = tokenizer("a")["input_ids"][-1] == eos
    out = []
    for start in range(0, len(texts), batch):
        inputs = _qwen3_embedding_batch(tokenizer, list(texts[start:start + batch]), max_length, eos, appends_eos)
        hidden = model(**inputs).last_hidden_state  # [b, L, hidden]; left padding: last column is last token
        out.append(F.normalize(hidden[:, -1], p=2, dim=1).numpy())
    return np.concatenate(out)


def reference_qwen3_rerank(model_dir: Path, pairs: Sequence[tuple[str, str]], instruction: str | None,
                           max_length: int = 8192, batch: int = 8) -> list[float]:
    """Qwen3-Reranker card: prefix + body + suffix, P(yes) from the last position's yes/no logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    return reference_rerank_scores(model, tokenizer, pairs, instruction, max_length, batch)


@torch.no_grad()
def reference_rerank_scores(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], instruction: str | None,
                            max_length: int = 8192, batch: int = 8) -> list[float]:
    """The card's scoring with a loaded AutoModelForCausalLM and its left-padding tokenizer
    (benchmarks time this part alone): left-padded batches, full-vocabulary logits."""
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    prefix = tokenizer.encode(RERANK_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(RERANK_SUFFIX, add_special_tokens=False)
    scores: list[float] = []
    for start in range(0, len(pairs), batch):
        bodies = [rerank_body(q, d, instruction) for q, d in pairs[start:start + batch]]
        inputs = tokenizer(bodies, padding=False, truncation="longest_first", return_attention_mask=False,
                           max_length=max_length - len(prefix) - len(suffix))
        inputs["input_ids"] = [prefix + ids + suffix for ids in inputs["input_ids"]]
        padded = tokenizer.pad(inputs, padding=True, return_tensors="pt")
        logits = model(**padded).logits[:, -1, :]
        pair = torch.stack([logits[:, no], logits[:, yes]], dim=1)
        scores += torch.log_softmax(pair.float(), dim=1)[:, 1].exp().tolist()
    return scores


def reference_sentence_transformers(model_dir: Path, texts: Sequence[str], query: bool,
                                    max_length: int | None = None) -> np.ndarray:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigurationError("the reference for BERT-family models is sentence-transformers: "
                                 "pip install sentence-transformers") from None
    model = SentenceTransformer(str(model_dir), device="cpu")
    if max_length is not None:
        model.max_seq_length = min(max_length, model.max_seq_length)
    prompt = "query" if query and model.prompts.get("query") else None
    return model.encode(list(texts), prompt_name=prompt, normalize_embeddings=True, convert_to_numpy=True,
                        batch_size=8)


def _thresholds(config: ParityConfig) -> tuple[float, float]:
    exact = str(config.options.dtype).removeprefix("torch.") in ("float32", "fp32")
    cosine = config.min_cosine if config.min_cosine is not None else (0.99999 if exact else 0.99)
    difference = config.max_difference if config.max_difference is not None else (1e-4 if exact else 0.02)
    return cosine, difference


def _embedding_rows(path: Path, kind: Kind, config: ParityConfig, documents: list[str], queries: list[str],
                    seconds: dict[str, float]) -> list[ParityRow]:
    start = time.perf_counter()
    embedder = Embedder(config.options.with_model(str(path)))
    ours = np.concatenate([embedder.encode(documents), embedder.encode(queries, query=True,
                                                                       instruction=config.instruction)])
    seconds["ours"] = time.perf_counter() - start
    start = time.perf_counter()
    if kind == "qwen3-embedding":
        prompts = documents + [query_text(q, config.instruction) for q in queries]
        reference = reference_qwen3_embeddings(path, prompts, embedder.info.max_length)
    else:
        length = config.options.max_length
        reference = np.concatenate([reference_sentence_transformers(path, documents, False, length),
                                    reference_sentence_transformers(path, queries, True, length)])
    seconds["reference"] = time.perf_counter() - start
    cosines = (ours.astype(np.float64) * reference.astype(np.float64)).sum(axis=1)
    sides = ["document"] * len(documents) + ["query"] * len(queries)
    return [ParityRow(side, text, float(c)) for side, text, c in zip(sides, documents + queries, cosines, strict=True)]


def _reranker_rows(path: Path, config: ParityConfig, pairs: list[tuple[str, str]],
                   seconds: dict[str, float]) -> list[ParityRow]:
    start = time.perf_counter()
    reranker = Reranker(config.options.with_model(str(path)))
    # Each query's documents in one call, as the engine serves them (shared-prefix reuse included).
    by_query: dict[str, list[int]] = {}
    for index, (query, _) in enumerate(pairs):
        by_query.setdefault(query, []).append(index)
    ours = [0.0] * len(pairs)
    for query, indices in by_query.items():
        scores = reranker.score(query, [pairs[i][1] for i in indices], instruction=config.instruction)
        for index, score in zip(indices, scores, strict=True):
            ours[index] = score
    seconds["ours"] = time.perf_counter() - start
    start = time.perf_counter()
    reference = reference_qwen3_rerank(path, pairs, config.instruction, reranker.info.max_length)
    seconds["reference"] = time.perf_counter() - start
    return [ParityRow("pair", f"{q} || {d}", abs(a - b)) for (q, d), a, b in zip(pairs, ours, reference, strict=True)]


def check_parity(model: str | Path, config: ParityConfig = ParityConfig(), *, texts: Sequence[str] = (),
                 queries: Sequence[str] = (), pairs: Sequence[tuple[str, str]] = ()) -> ParityReport:
    """Compare on the model cards' examples and EXTRA_TEXTS plus the given texts, queries or pairs.

    Embedding models use `texts` (as documents) and `queries`; rerankers use `pairs`.
    """
    path = resolve_model(str(model)).path
    kind = model_kind(path, config.kind)
    min_cosine, max_difference = _thresholds(config)
    seconds: dict[str, float] = {}
    if kind == "qwen3-reranker":
        builtin = list(zip(CARD_QUERIES, CARD_DOCUMENTS, strict=True))
        builtin += [(q, d) for q in CARD_QUERIES for d in CARD_DOCUMENTS[::-1] + EXTRA_TEXTS]
        rows = _reranker_rows(path, config, builtin + list(pairs), seconds)
        worst = max(row.value for row in rows)
        return ParityReport(str(model), kind, "abs_difference", rows, worst, max_difference,
                            worst <= max_difference, str(config.options.dtype), str(config.options.device), seconds)
    documents = CARD_DOCUMENTS + EXTRA_TEXTS + list(texts)
    rows = _embedding_rows(path, kind, config, documents, CARD_QUERIES + list(queries), seconds)
    worst = min(row.value for row in rows)
    return ParityReport(str(model), kind, "cosine", rows, worst, min_cosine, worst >= min_cosine,
                        str(config.options.dtype), str(config.options.device), seconds)
