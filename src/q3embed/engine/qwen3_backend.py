"""Qwen3-Embedding on the packed decoder: tokenize with the EOS rule, pool the last token."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..model.attention import choose_attention
from ..model.block_linear import cpu_kernels_run
from ..model.graphs import BucketedGraphs, CudaGraphs, InductorGraphs
from ..model.heads import last_token_indices
from ..model.kernels import KernelSchedule
from ..model.linear import pack_decoder_linears
from ..model.quantized import quantize_decoder
from ..text.prompts import query_text
from ..weights.checkpoint import LoadedQwen3
from ..weights.resolve import ResolvedModel
from .batch import pack
from .device import Placement, dtype_name
from .info import ModelInfo, TokenSpan
from .memory import release_freed_memory, weights_in_huge_pages

__all__ = ["Qwen3EmbeddingBackend", "qwen3_model_info", "prepare_qwen3_model", "compile_for_any_length"]


def qwen3_model_info(resolved: ResolvedModel, loaded: LoadedQwen3, placement: Placement, kind: str) -> ModelInfo:
    return ModelInfo(name=resolved.name, path=str(resolved.path), kind=kind, dimensions=loaded.config.hidden_size,
                     max_length=loaded.tokenizer.max_length, device=str(placement.device),
                     dtype=dtype_name(placement.dtype), supports_instructions=True,
                     aliases=resolved.aliases, source=resolved.reason, attention=placement.attention,
                     quantize=placement.quantize)


def prepare_qwen3_model(loaded: LoadedQwen3, placement: Placement) -> int:
    """Give the decoder its attention backend, its projections fused (q/k/v and gate/up: one
    product each), its CPU kernels' weights (int8 layers where asked: Q8_0 blocks times Q8_0 inputs
    where the Q8_0 kernels run, else fbgemm's; otherwise bf16 weights packed for oneDNN), the layers' weights
    in huge pages where the placement asks (a CPU; engine/memory.py), and hand the memory that
    loading freed back to the system; -> the activation bytes one token of a batch needs."""
    loaded.model.use_attention(choose_attention(placement.attention, placement.device, placement.dtype))
    loaded.model.fuse_projections()
    if placement.quantize == "int8":
        quantize_decoder(loaded.model, blocks=cpu_kernels_run(placement.dtype, placement.device))
    elif placement.graphs != "inductor":  # Inductor's frozen graphs pack the weights themselves
        pack_decoder_linears(loaded.model)  # bf16 on a CPU only
    if placement.huge_pages:
        weights_in_huge_pages(loaded.model.layers)
    release_freed_memory()
    return loaded.config.activation_bytes_per_token(placement.dtype.itemsize)


def compile_for_any_length(kernels: KernelSchedule, model: torch.nn.Module, device: torch.device) -> bool:
    """Switch `model` to its compiled kernels now where they are enabled, and compile them: one
    eager forward pass of a single sequence at each of two token counts (token id 0 for text), as
    the kernels (model/kernels.py) compile static for the first count and with the count symbolic
    for the second, so that no request waits for a compile. Eager, not through the short-sequence
    graphs: the graphs are whole models of their own, the kernels serve the rest. -> whether they
    compile (the backends' compile_now)."""
    if not kernels.compile_now():
        return False
    with torch.inference_mode():
        for length in (3, 7):
            input_ids, positions, seq_lens = pack([[0] * length], device)
            model(input_ids, positions, seq_lens, rows=last_token_indices(seq_lens, device))
    return True


def _graphs(model: object, placement: Placement) -> BucketedGraphs | None:
    if placement.graphs == "inductor":
        return InductorGraphs(model)  # type: ignore[arg-type]
    if placement.graphs == "cuda":
        return CudaGraphs(model)  # type: ignore[arg-type]
    return None


class Qwen3EmbeddingBackend:
    def __init__(self, resolved: ResolvedModel, loaded: LoadedQwen3, placement: Placement) -> None:
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        self.bytes_per_token = prepare_qwen3_model(loaded, placement)
        self.kernels = KernelSchedule.for_model(self.model, placement.compile_after, placement.dtype, placement.device)
        self.graphs = _graphs(self.model, placement)
        self.device = placement.device
        self.info = qwen3_model_info(resolved, loaded, placement, "qwen3")

    def query_text(self, text: str, instruction: str | None) -> str:
        return query_text(text, instruction)

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[list[int]]:
        return self.tokenizer.encode_embedding_inputs(texts, truncate=truncate)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self.tokenizer.encode_raw([text])[0].offsets)

    def token_spans(self, text: str, add_special_tokens: bool) -> list[TokenSpan]:
        encoding = self.tokenizer.encode_raw([text])[0]
        special_ids = self.tokenizer.special_ids
        limit = self.tokenizer.max_length - 1  # room for the <|endoftext|> the model always gets
        spans = [TokenSpan(i, text[a:b], i in special_ids, a, b)
                 for i, (a, b) in list(zip(encoding.ids, encoding.offsets, strict=True))[:limit]]
        if add_special_tokens:
            spans.append(TokenSpan(self.tokenizer.eos_id, "", True, len(text), len(text)))
        return spans

    def forward(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        if self.graphs is not None and len(sequences) == 1:  # one short query: its bucket's graph
            hidden = self.graphs.last_hidden(sequences[0], self.device)  # [1, hidden] or None
            if hidden is not None:
                return hidden.float()
        input_ids, positions, seq_lens = pack(sequences, self.device)
        self.kernels.count(len(input_ids))
        rows = last_token_indices(seq_lens, self.device)  # [B]: pooling reads only these
        return self.model(input_ids, positions, seq_lens, rows=rows).float()  # [B, hidden]

    def compile_now(self) -> bool:
        compiles = compile_for_any_length(self.kernels, self.model, self.device)
        if self.graphs is not None:  # after the kernels switch: a graph captures what will run
            self.graphs.warm_up(self.device)
        return compiles
