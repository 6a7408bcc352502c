"""Packed (unpadded) tensors, and the prefix a batch of sequences shares (batches themselves are
chosen by jobs.Scheduler)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..model.transfer import to_device

__all__ = ["pack", "shared_prefix_length"]


def pack(
    sequences: Sequence[Sequence[int]], device: torch.device, start: int = 0
) -> tuple[Tensor, Tensor, list[int]]:
    """Lay sequences end to end: input_ids [T], positions [T] (each restarting at `start`,
    which is the length of a shared prefix the sequences continue), seq_lens [B]."""
    seq_lens = [len(seq) for seq in sequences]
    input_ids = torch.tensor([tok for seq in sequences for tok in seq], dtype=torch.long)
    positions = torch.cat([torch.arange(start, start + n, dtype=torch.long) for n in seq_lens])
    return to_device(input_ids, device), to_device(positions, device), seq_lens


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all sequences share, leaving each at least one token of its own
    (its last token is where the score is read)."""
    if not sequences:
        return 0
    limit = min(len(seq) for seq in sequences) - 1
    first = sequences[0]
    for position in range(max(limit, 0)):
        token = first[position]
        if any(seq[position] != token for seq in sequences):
            return position
    return max(limit, 0)
