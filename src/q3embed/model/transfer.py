"""Host-to-device copies that never make the host wait.

A plain `tensor.to("cuda")` from pageable memory synchronises the stream: the host would sit until
the batch still running on the GPU has finished, and the next batch could not be queued behind
it (engine/jobs.py overlaps them). Pinned memory and non_blocking queue the copy instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["to_device"]


def to_device(tensor: Tensor, device: torch.device | str) -> Tensor:
    """A host tensor on `device`: as it is for a CPU; for a GPU a copy queued on the current
    stream, ahead of the kernels that read it."""
    if torch.device(device).type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
