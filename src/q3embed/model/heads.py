"""What turns hidden states into outputs: last-token pooling, MRL, the yes/no reranker head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["last_token_indices", "matryoshka", "YesNoHead"]


def last_token_indices(seq_lens: list[int], device: torch.device | None = None) -> Tensor:
    """Row of each sequence's last token in a packed batch: cu_seqlens[1:] - 1, shape [B].

    Located by length, never by token id: the pad token and `<|endoftext|>` are the same id.
    """
    return torch.tensor(seq_lens, device=device).cumsum(0) - 1


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
