"""A q3embed model as an encoder for the `mteb` package (2.x), so any MTEB task runs on our engine.

    import mteb
    from q3embed.evaluate.mteb import MTEBEncoder

    model = MTEBEncoder("Qwen/Qwen3-Embedding-0.6B")
    results = mteb.evaluate(model, mteb.get_tasks(tasks=["NFCorpus", "STSBenchmark"]))

mteb is not a dependency of q3embed (`pip install q3embed[mteb]`); this module imports it only
inside `mteb_model_meta`, which only mteb itself calls.

mteb calls `encode(inputs, task_metadata=..., hf_split=..., hf_subset=..., prompt_type=...)` with a
DataLoader whose batches carry a "text" list (retrieval documents arrive as title + " " + text).
Qwen3 models are used the way mteb's own Qwen3 entry uses them: documents get no instruction;
queries, and the texts of symmetric tasks (prompt_type None: STS, clustering, classification),
are wrapped as "Instruct: {task}\\nQuery:{text}". The task comes from, in order: `instructions`
given here (by task name), the task's own prompt in its metadata, q3embed's table of the published
BEIR instructions, and mteb's generic prompt for the task type. BERT-family models get their own
fixed query prompt (E5's "query: ") for queries and symmetric tasks, and nothing for documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..engine import Embedder, similarity
from .beir import dataset_defaults
from .encoding import encode_texts

__all__ = ["MTEBEncoder"]


def _texts(inputs: Iterable[Any]) -> list[str]:
    """All texts of an mteb DataLoader (batches with a "text" list), or of a plain list of strings."""
    texts: list[str] = []
    for item in inputs:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, Mapping) and "text" in item:
            texts.extend(str(t) for t in item["text"])
        else:
            raise TypeError(f"expected batches with a 'text' field or strings, got {type(item).__name__}")
    return texts


def _prompt_kind(prompt_type: Any) -> str | None:
    """"query", "document" or None, from mteb's PromptType (a str enum) or a plain string."""
    if prompt_type is None:
        return None
    value = str(getattr(prompt_type, "value", prompt_type))
    if value not in ("query", "document"):
        raise ValueError(f"unknown prompt_type {prompt_type!r}; expected query, document or None")
    return value


def _as_numpy(vectors: Any) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        return vectors.detach().float().cpu().numpy()
    return np.atleast_2d(np.asarray(vectors, dtype=np.float32))


class MTEBEncoder:
    """mteb's EncoderProtocol over a q3embed `Embedder` (vectors are unit length; similarity is cosine)."""

    def __init__(self, model_name: str | Embedder = "auto", revision: str | None = None, *,
                 device: str | None = None, dtype: str = "auto", dimensions: int | None = None,
                 instructions: Mapping[str, str] | None = None, **embedder_kwargs: Any) -> None:
        """`model_name` is anything `Embedder` takes (or a loaded Embedder); `revision` is only recorded."""
        if isinstance(model_name, Embedder):
            self.embedder = model_name
        else:
            self.embedder = Embedder(model_name, device=device or "auto", dtype=dtype, **embedder_kwargs)
        self.revision = revision
        self.dimensions = dimensions
        self.instructions = dict(instructions or {})

    @property
    def is_qwen3(self) -> bool:
        return self.embedder.info.kind == "qwen3"

    def task_instruction(self, task_metadata: Any, prompt_type: Any = None) -> str | None:
        """The Qwen3 task instruction for this task and side; None where none applies."""
        kind = _prompt_kind(prompt_type)
        if not self.is_qwen3 or kind == "document":
            return None
        name = str(getattr(task_metadata, "name", "") or "")
        if name in self.instructions:
            return self.instructions[name]
        prompt = getattr(task_metadata, "prompt", None)
        if isinstance(prompt, Mapping):
            prompt = prompt.get(kind or "query")
        if prompt:
            return str(prompt)
        known = dataset_defaults(name).instruction
        return known or _mteb_generic_prompt(name)

    def encode(self, inputs: Iterable[Any], *, task_metadata: Any, hf_split: str, hf_subset: str,
               prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        """float32 [N, d], one unit vector per input text, in order."""
        texts = _texts(inputs)
        if not texts:
            return np.zeros((0, self.dimensions or self.embedder.dimensions), dtype=np.float32)
        query = _prompt_kind(prompt_type) != "document"
        progress = None
        if kwargs.get("show_progress_bar"):
            from tqdm import tqdm

            bar = tqdm(total=len(texts), desc=str(getattr(task_metadata, "name", "encode")), unit="text")
            progress = bar.update
        try:
            return encode_texts(self.embedder, texts, query=query,
                                instruction=self.task_instruction(task_metadata, prompt_type),
                                dimensions=self.dimensions, progress=progress)
        finally:
            if progress is not None:
                bar.close()

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        return similarity(_as_numpy(embeddings1), _as_numpy(embeddings2))

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        a, b = _as_numpy(embeddings1), _as_numpy(embeddings2)
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return np.sum(a * b, axis=1)

    @property
    def mteb_model_meta(self) -> Any:
        """mteb's ModelMeta for the results folder: the model's name, our version as the revision."""
        from mteb.models.model_meta import ModelMeta

        info = self.embedder.info
        name = info.name if "/" in info.name else f"q3embed/{info.name.rstrip('/').split('/')[-1]}"
        return ModelMeta.create_empty(overwrites={
            "name": name, "revision": self.revision or f"q3embed-{__version__}",
            "embed_dim": self.dimensions or info.dimensions, "max_tokens": info.max_length,
            "similarity_fn_name": "cosine", "use_instructions": self.is_qwen3, "framework": ["PyTorch"],
        })


def _mteb_generic_prompt(task_name: str) -> str | None:
    """mteb's fallback prompt for a task type ("Retrieve text based on user query." ...), if mteb is here."""
    try:
        from mteb.abstasks.abstask import get_abstask_prompt
    except ImportError:
        return None
    return get_abstask_prompt(task_name) or None  # "" for a task mteb does not know: Qwen3's default
