"""Whole-decoder graphs for one short sequence: the interactive-query path.

A single query of a few dozen tokens is dominated by fixed costs: on a CPU, torch's eager bf16
kernels stream the weights at about half of what memory allows; on a GPU, the ~600 kernel
launches of an eager forward pass take longer than the work they launch. A graph fixed at one
shape removes both, so a few token-count buckets get one graph each, and a sequence is padded
at its end up to its bucket: attention is causal, so no real token sees the padding, and the
hidden state is read at the real last token. Longer sequences and batches of several run
eagerly (on a GPU a batch is already one FlashAttention call per layer: model.attention).

    InductorGraphs  CPU, compile="max": Inductor freezing (weights folded in and pre-packed for
                    its matrix-product micro-kernels) + max-autotune; 1.4-1.8x faster at 8-27
                    tokens on 2 cores, minutes to compile, a packed weight copy per bucket.
    CudaGraphs      CUDA, on unless compile="off": the eager forward captured once per bucket
                    (torch.cuda.CUDAGraph, one shared memory pool, largest bucket first, as vLLM
                    does); a query then costs one graph launch. Capture takes a forward pass.

A graph that fails (no compiler, a capture error) turns the graphs off for good, with a warning:
every call is then answered by the eager decoder.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BucketedGraphs", "InductorGraphs", "CudaGraphs", "CPU_BUCKETS", "CUDA_BUCKETS", "padded_ids"]

log = logging.getLogger("q3embed")

# Measured on 2 cores, 0.6B bf16 (docs/benchmarks.md): a 16-token graph runs in ~70 ms (eager:
# 90-120 ms), a 32-token one ~104 ms for a 27-token query (eager ~153 ms); an 8-token bucket was
# no faster than 16. A query in Qwen3's instruction template is 20-40 tokens.
CPU_BUCKETS = (16, 32)
# A graph costs one forward pass to capture and shares its memory pool with the others: cover
# queries and short documents; past 512 tokens the launches are a small part of a forward pass.
CUDA_BUCKETS = (16, 32, 64, 128, 256, 512)
# freezing: weights as constants, packed once; the autotuner's tables stay out of the user's terminal
_INDUCTOR = {"freezing": True, "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}


def padded_ids(ids: Sequence[int], size: int) -> Tensor:
    """ids [n] padded at the end to [size] by repeating the last token (never seen by a real one)."""
    return torch.tensor([*ids, *[ids[-1]] * (size - len(ids))], dtype=torch.long)


class BucketedGraphs:
    """Bucket choice, padding, reading the real last row, and the fall-back on failure; a
    subclass runs one padded sequence of a bucket's size."""

    kind = "graphs"

    def __init__(self, model: torch.nn.Module, buckets: Sequence[int]) -> None:
        self.model = model
        self.buckets = tuple(sorted(buckets))
        self.failed = False
        self.runs = 0  # forward passes answered by a graph (tests and benchmarks read it)
        self.lock = threading.Lock()  # a graph's buffers serve one call at a time

    def bucket(self, length: int) -> int | None:
        """The smallest bucket that holds `length` tokens; None when the graphs do not apply."""
        if self.failed or length < 1:
            return None
        return next((b for b in self.buckets if length <= b), None)

    def last_hidden(self, ids: Sequence[int], device: torch.device) -> Tensor | None:
        """Final-normed hidden state [1, hidden] at the last token of `ids`; None when no graph
        applies or it failed (the caller then runs the eager decoder)."""
        size = self.bucket(len(ids))
        if size is None:
            return None
        with self.lock:
            try:
                hidden = self._run(padded_ids(ids, size), device)  # [size, hidden]
            except Exception as exc:  # noqa: BLE001 - any graph failure means: run eagerly from now on
                if not self.failed:
                    log.warning("the %s for short sequences failed, running eagerly from now on: %s", self.kind,
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self.failed = True
                return None
            self.runs += 1
            # A copy: the graph's output buffer is overwritten by its next run.
            return hidden[len(ids) - 1: len(ids)].clone()

    def warm_up(self, device: torch.device) -> None:
        """Build every bucket's graph now, largest first (a server does this at start-up)."""
        with torch.inference_mode():
            for size in sorted(self.buckets, reverse=True):
                self.last_hidden([0] * size, device)

    def _run(self, padded: Tensor, device: torch.device) -> Tensor:
        """padded [size] (on the CPU) -> final-normed hidden states [size, hidden]."""
        raise NotImplementedError


class InductorGraphs(BucketedGraphs):
    kind = "compiled graphs"

    def __init__(self, model: torch.nn.Module, buckets: Sequence[int] = CPU_BUCKETS) -> None:
        super().__init__(model, buckets)
        self.compiled = torch.compile(model, mode="max-autotune", dynamic=False)

    def _run(self, padded: Tensor, device: torch.device) -> Tensor:
        size = padded.shape[0]
        with torch._inductor.config.patch(_INDUCTOR):
            # All rows: the real last token is not the padded sequence's last, and Qwen3Model's
            # rows= reads each sequence's own last token (it attends to every key of it).
            return self.compiled(padded.to(device), torch.arange(size, device=device), [size])


class _Captured:
    """One bucket's CUDA graph and the static buffers it reads and writes."""

    def __init__(self, graph: torch.cuda.CUDAGraph, ids: Tensor, output: Tensor) -> None:
        self.graph, self.ids, self.output = graph, ids, output


class CudaGraphs(BucketedGraphs):
    kind = "CUDA graphs"

    def __init__(self, model: torch.nn.Module, buckets: Sequence[int] = CUDA_BUCKETS) -> None:
        super().__init__(model, buckets)
        self.captured: dict[int, _Captured] = {}
        self.pool: tuple[int, int] | None = None  # the memory pool every graph shares

    def _run(self, padded: Tensor, device: torch.device) -> Tensor:
        size = padded.shape[0]
        captured = self.captured.get(size) or self._capture(size, device)
        captured.ids.copy_(padded, non_blocking=True)  # ordered before the replay on the same stream
        captured.graph.replay()
        return captured.output

    def _capture(self, size: int, device: torch.device) -> _Captured:
        ids = torch.zeros(size, dtype=torch.long, device=device)  # static: every replay reads it
        positions = torch.arange(size, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the capture: cuBLAS handles, lazy initialisation
            for _ in range(2):
                self.model(ids, positions, [size])
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            output = self.model(ids, positions, [size])  # [size, hidden], in the pool
        self.pool = graph.pool()
        self.captured[size] = _Captured(graph, ids, output)
        return self.captured[size]
