"""The transformers reference computations, written the way the official model cards do them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from q3embed.text.prompts import RERANK_PREFIX, RERANK_SUFFIX, rerank_body


@torch.no_grad()
def reference_embeddings(model_dir: Path, texts: list[str], max_length: int = 8192) -> np.ndarray:
    """Qwen3-Embedding card: left padding, last-token pooling, L2 normalisation (fp32)."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    # With left padding the last real token of every row is the last column.
    assert bool(batch["attention_mask"][:, -1].all())
    return F.normalize(hidden[:, -1], p=2, dim=1).numpy()


@torch.no_grad()
def reference_rerank(model_dir: Path, query: str, documents: list[str], instruction: str | None = None,
                     max_length: int = 8192) -> list[float]:
    """Qwen3-Reranker card: prefix + body + suffix, P(yes) from the last position's logits."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    yes = tokenizer.convert_tokens_to_ids("yes")
    no = tokenizer.convert_tokens_to_ids("no")
    prefix = tokenizer.encode(RERANK_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(RERANK_SUFFIX, add_special_tokens=False)
    pairs = [rerank_body(query, doc, instruction) for doc in documents]
    inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                       max_length=max_length - len(prefix) - len(suffix))
    inputs["input_ids"] = [prefix + ids + suffix for ids in inputs["input_ids"]]
    batch = tokenizer.pad(inputs, padding=True, return_tensors="pt")
    logits = model(**batch).logits[:, -1, :]
    pair = torch.stack([logits[:, no], logits[:, yes]], dim=1)
    return torch.log_softmax(pair, dim=1)[:, 1].exp().tolist()
