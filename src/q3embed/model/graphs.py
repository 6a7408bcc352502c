"""Whole-decoder graphs for one short sequence: the interactive-query path (compile="max").

One query of a few dozen tokens spends nearly all its time in matrix products of a few rows,
where torch's eager bf16 kernels stream the weights at about half of what memory allows
(bench/single_query.py). Inductor with freezing (weights folded in as constants, pre-packed for
its matrix-product micro-kernels) and max-autotune runs the same decoder 1.4-1.8x faster at
8-27 tokens on a 2-core CPU, but only for shapes fixed at compile time, and compiling one
takes minutes. So a few token-count buckets are compiled once, and a sequence is padded at its
end up to its bucket: attention is causal, so no real token sees the padding, and the hidden
state is read at the real last token. Longer sequences and batches of several run eagerly.
Each bucket holds its own packed copy of the weights (about the model's size in memory).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["ShortSequenceGraphs", "DEFAULT_BUCKETS"]

log = logging.getLogger("q3embed")

# Measured on 2 cores, 0.6B bf16 (docs/benchmarks.md): a 16-token graph runs in ~70 ms (eager:
# 90-120 ms), a 32-token one ~104 ms for a 27-token query (eager ~153 ms); an 8-token bucket was
# no faster than 16. A query in Qwen3's instruction template is 20-40 tokens.
DEFAULT_BUCKETS = (16, 32)
# freezing: weights as constants, packed once; the autotuner's tables stay out of the user's terminal
_INDUCTOR = {"freezing": True, "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}


class ShortSequenceGraphs:
    def __init__(self, model: torch.nn.Module, buckets: Sequence[int] = DEFAULT_BUCKETS) -> None:
        self.model = model
        self.buckets = tuple(sorted(buckets))
        self.compiled = torch.compile(model, mode="max-autotune", dynamic=False)
        self.failed = False
        self.runs = 0  # forward passes answered by a compiled graph (tests and benchmarks read it)
        self.lock = threading.Lock()

    def bucket(self, length: int) -> int | None:
        """The smallest bucket that holds `length` tokens; None when the graphs do not apply."""
        if self.failed:
            return None
        return next((b for b in self.buckets if length <= b), None)

    def last_hidden(self, ids: Sequence[int], device: torch.device) -> Tensor | None:
        """Final-normed hidden state [1, hidden] at the last token of `ids`; None when no graph
        applies or compiling failed (the caller then runs the eager decoder)."""
        size = self.bucket(len(ids))
        if size is None:
            return None
        padded = torch.tensor([*ids, *[ids[-1]] * (size - len(ids))], device=device)  # [size]
        positions = torch.arange(size, device=device)
        try:
            with torch._inductor.config.patch(_INDUCTOR):
                # All rows: the real last token is not the padded sequence's last, and Qwen3Model's
                # rows= reads each sequence's own last token (it attends to every key of it).
                hidden = self.compiled(padded, positions, [size])  # [size, hidden]
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly from now on
            with self.lock:
                if not self.failed:
                    log.warning("compiling the short-sequence graphs failed, running eagerly: %s",
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self.failed = True
            return None
        self.runs += 1
        return hidden[len(ids) - 1: len(ids)]

    def warm_up(self, device: torch.device) -> None:
        """Compile every bucket now (a server does this at start-up, before any request)."""
        with torch.inference_mode():
            for size in self.buckets:
                self.last_hidden([0] * size, device)
