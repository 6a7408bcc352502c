"""What turns hidden states into outputs, in one place: pooling (last token for Qwen3 over packed
batches; CLS / MEAN / LAST for padded BERT-family batches), the Matryoshka slice + normalisation
every embedding request ends with, and the yes/no reranker head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .transfer import to_device

__all__ = ["POOLING_MODES", "last_token_indices", "pool_padded", "matryoshka", "YesNoHead"]

POOLING_MODES = ("mean", "cls", "lasttoken")


def last_token_indices(seq_lens: list[int], device: torch.device | None = None) -> Tensor:
    """Row of each sequence's last token in a packed batch: cu_seqlens[1:] - 1, shape [B].

    Located by length, never by token id: the pad token and `<|endoftext|>` are the same id.
    """
    rows = torch.tensor(seq_lens).cumsum(0) - 1
    return rows if device is None else to_device(rows, device)


def pool_padded(hidden: Tensor, mask: Tensor, mode: str) -> Tensor:
    """hidden [B, L, H], mask [B, L] (1 = real token, right padded) -> [B, H] in fp32."""
    hidden = hidden.float()
    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        last = mask.sum(dim=1) - 1  # right padding: the last real token sits at length - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def matryoshka(vectors: Tensor, dimensions: int | None, normalize: bool = True) -> Tensor:
    """MRL: keep the first `dimensions` components, then L2-normalise (in fp32). [B, H] -> [B, d]."""
    out = vectors.float()
    if dimensions is not None:
        out = out[:, :dimensions]
    return F.normalize(out, p=2, dim=-1) if normalize else out


class YesNoHead(torch.nn.Module):
    """The reranker's score: P(yes) from the `no` and `yes` rows of lm_head only.

    softmax([logit_no, logit_yes])[1] == sigmoid(logit_yes - logit_no); computing two rows
    instead of the full 151,669-wide vocabulary projection saves ~150k x hidden MACs per pair.
    """

    def __init__(self, rows: Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(rows, requires_grad=False)  # [2, hidden]: (no, yes)

    def forward(self, last_hidden: Tensor) -> Tensor:
        """last_hidden [B, hidden] -> scores [B] in fp32, each in (0, 1)."""
        logits = (last_hidden @ self.weight.T).float()  # [B, 2]
        return torch.sigmoid(logits[:, 1] - logits[:, 0])
