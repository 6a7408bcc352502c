"""The Qwen3 decoder over packed token batches: pure torch, no I/O, no globals.

A batch is packed, never padded: the tokens of every sequence are laid end to end in one
[T] tensor, with `seq_lens` telling where each sequence ends. Every linear layer therefore runs
once over [T, hidden] and no work is spent on padding; only attention tells the sequences apart
(causal, within each sequence; model.attention: one SDPA call per sequence on a CPU, one
FlashAttention varlen call per layer on a GPU).

Numerics follow the reference implementation (transformers' Qwen3Model): RMSNorm in fp32 then
cast back before the weight multiply, per-head q_norm/k_norm before RoPE, rotate_half RoPE with
cos/sin computed in fp32, grouped-query attention, SwiGLU MLP.

The state-dict keys are those of the official embedding checkpoints (no `model.` prefix):
`embed_tokens.weight`, `layers.N.self_attn.q_proj.weight`, ..., `norm.weight`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention import AttentionBackend, Layout, SdpaLoop
from .block_linear import Q8Linear
from .kernels import EAGER, Kernels
from .linear import Linear

__all__ = ["Qwen3Config", "Qwen3Model", "KVPrefix", "rope_cos_sin"]


@dataclass(frozen=True)
class Qwen3Config:
    """The hyper-parameters the decoder needs; parsed from config.json by q3embed.weights."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    attention_bias: bool = False
    tie_word_embeddings: bool = False

    def activation_bytes_per_token(self, element_bytes: int) -> int:
        """Memory one token of a packed batch needs at the peak of a layer (inference keeps one
        layer's temporaries at a time): residual, normed input, MLP gate/up/silu/product, q/k/v
        with their expanded copies, and the fp32 norm + RoPE copies of q; x1.5 for the
        allocator's fragmentation. Sizes a GPU's token budget (engine.device.gpu_batch_tokens)."""
        q_width = self.num_attention_heads * self.head_dim
        kv_width = self.num_key_value_heads * self.head_dim
        elements = 4 * self.hidden_size + 4 * self.intermediate_size + 4 * q_width + 2 * kv_width
        return (elements * element_bytes + 2 * q_width * 4) * 3 // 2


class RMSNorm(nn.Module):
    """The weight of an RMSNorm; the computation is `Kernels.rms_norm` (eager or compiled)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.kernels = EAGER

    def forward(self, x: Tensor) -> Tensor:
        return self.kernels.rms_norm(x, self.weight, self.eps)

    def add_and_norm(self, x: Tensor, added: Tensor) -> tuple[Tensor, Tensor]:
        """The residual add before this norm, with it: x, added [T, dim] -> (x + added, its norm),
        in one pass where the kernels fuse them."""
        return self.kernels.add_rms_norm(x, added, self.weight, self.eps)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin of shape [T, head_dim] in fp32 for the given absolute positions [T]."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device)
    inv_freq = 1.0 / (theta ** (exponents.float() / head_dim))  # [head_dim / 2]
    freqs = positions.float()[:, None] * inv_freq[None, :]  # [T, head_dim / 2]
    angles = torch.cat((freqs, freqs), dim=-1)  # [T, head_dim]
    return angles.cos(), angles.sin()


@dataclass
class KVPrefix:
    """Keys and values (after RoPE) of a token prefix that every sequence of a batch continues.

    The reranker's sequences of one request all start with the same system prompt, instruction
    and query: computed once, they are reused for every document.
    """

    keys: list[Tensor]  # per layer: [P, kv_heads, head_dim]
    values: list[Tensor]  # per layer: [P, kv_heads, head_dim]

    @property
    def length(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0


class Attention(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        bias = cfg.attention_bias
        self.q_proj = Linear(cfg.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = Linear(self.heads * self.head_dim, cfg.hidden_size, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
        self.qkv_proj: Linear | None = None  # fuse_projections: q, k, v in one product
        self.register_buffer("qk_norm_weight", None, persistent=False)  # fuse_projections: [heads + kv_heads, d]
        self.kernels = EAGER
        self.attention: AttentionBackend = SdpaLoop()  # Qwen3Model.use_attention sets every layer's

    def fuse_projections(self) -> None:
        """q_proj, k_proj and v_proj become one Linear over their weights laid end to end, and
        q_norm / k_norm's weights one [heads + kv_heads, head_dim] table, so that a layer makes one
        product where it made three and norms and rotates q and k in one pass: the same values
        (each output column is the same dot product; RMSNorm and RoPE work per head)."""
        parts = (self.q_proj, self.k_proj, self.v_proj)
        self.qkv_proj = _concatenated(parts)
        del self.q_proj, self.k_proj, self.v_proj
        self.qk_norm_weight = torch.cat((self.q_norm.weight.detach().expand(self.heads, self.head_dim),
                                         self.k_norm.weight.detach().expand(self.kv_heads, self.head_dim)))

    def _project(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [T, hidden] -> q [T, heads, head_dim] and k, v [T, kv_heads, head_dim], q and k
        normed and rotated (views into one buffer once fused)."""
        tokens = x.shape[0]
        if self.qkv_proj is None:  # as loaded
            q = self.q_proj(x).view(tokens, self.heads, self.head_dim)
            k = self.k_proj(x).view(tokens, self.kv_heads, self.head_dim)
            v = self.v_proj(x).view(tokens, self.kv_heads, self.head_dim)
            q = self.kernels.norm_rope(q, self.q_norm.weight, cos, sin, self.q_norm.eps)
            k = self.kernels.norm_rope(k, self.k_norm.weight, cos, sin, self.k_norm.eps)
            return q, k, v
        qkv = self.qkv_proj(x)  # [T, (heads + 2 kv_heads) * head_dim]
        qk_heads = self.heads + self.kv_heads
        qk = qkv[:, :qk_heads * self.head_dim].view(tokens, qk_heads, self.head_dim)
        qk = self.kernels.norm_rope(qk, self.qk_norm_weight, cos, sin, self.q_norm.eps)  # one eps for both
        v = qkv[:, qk_heads * self.head_dim:].view(tokens, self.kv_heads, self.head_dim)
        return qk[:, :self.heads], qk[:, self.heads:], v

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, layout: Layout,
        prefix: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """-> (output [T, hidden], k and v [T, kv_heads, head_dim] for a prefix cache)."""
        tokens = x.shape[0]  # x: [T, hidden]
        q, k, v = self._project(x, cos, sin)
        out = self.attention.causal(q, k, v, layout, prefix)  # [T, heads, head_dim]
        return self.o_proj(out.reshape(tokens, self.heads * self.head_dim)), k, v

    def forward_rows(
        self, x: Tensor, cos: Tensor, sin: Tensor, layout: Layout, rows: Tensor,
        prefix: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """The output at `rows` [B] only (each sequence's last token): keys and values still
        cover every token, attention and the output projection only those rows. -> [B, hidden].
        (q is projected at every token too: in one product with k and v that costs ~0.5% of a
        forward pass, less than a separate product at B rows would.)"""
        q, k, v = self._project(x, cos, sin)
        out = self.attention.last_token(q[rows], k, v, layout, prefix)  # [B, heads, head_dim]
        return self.o_proj(out.reshape(rows.shape[0], self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.gate_up_proj: Linear | None = None  # fuse_projections: gate and up in one product
        self.kernels = EAGER

    def fuse_projections(self) -> None:
        """gate_proj and up_proj become one Linear (one product instead of two, the same values)."""
        self.gate_up_proj = _concatenated((self.gate_proj, self.up_proj))
        del self.gate_proj, self.up_proj

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_up_proj is None:  # as loaded
            activated = self.kernels.swiglu(self.gate_proj(x), self.up_proj(x))
        else:  # one product for gate and up, [T, 2 x intermediate], and SwiGLU of its halves
            activated = self.kernels.gate_up_swiglu(self.gate_up_proj, x)
        return self.down_proj(activated)  # [T, intermediate] -> [T, hidden]


def _concatenated(parts: tuple[nn.Module, ...]) -> nn.Module:
    """One layer computing what `parts` (same input) compute, their outputs laid end to end: Q8_0
    blocks stay blocks where all parts are (a GGUF file's), otherwise one Linear (a part in blocks
    dequantized to the others' dtype, as a file mixing types would be loaded)."""
    if all(isinstance(p, Q8Linear) for p in parts):
        return Q8Linear.concatenated(list(parts))
    plain = next(p for p in parts if not isinstance(p, Q8Linear))
    weights = [p.dequantized_weight(plain.weight.dtype) if isinstance(p, Q8Linear) else p.weight.detach()
               for p in parts]
    has_bias = getattr(parts[0], "bias", None) is not None  # Q8_0 blocks are kept for bias-free layers only
    fused = Linear(parts[0].in_features, sum(p.out_features for p in parts), bias=has_bias, device="meta")
    fused.weight = nn.Parameter(torch.cat(weights), requires_grad=False)
    if has_bias:
        fused.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]), requires_grad=False)
    return fused


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def _input_norm(self, hidden: Tensor, residual: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> (this layer's input x = residual + hidden, input_layernorm(x)): the previous layer's
        last residual add made here, in one pass with the norm (hidden alone for the first layer)."""
        if residual is None:
            return hidden, self.input_layernorm(hidden)
        return self.input_layernorm.add_and_norm(residual, hidden)

    def forward(
        self, hidden: Tensor, residual: Tensor | None, cos: Tensor, sin: Tensor, layout: Layout,
        prefix: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The layer's output as two terms, its MLP's output and the residual stream before it
        [T, hidden] each (their sum is the output, added by whatever reads it next: the next
        layer's or the final norm, in one pass with that norm), and its k, v for a prefix cache.
        The layer's input is given the same way (residual None: `hidden` itself)."""
        x, normed = self._input_norm(hidden, residual)
        attended, k, v = self.self_attn(normed, cos, sin, layout, prefix)
        x, normed = self.post_attention_layernorm.add_and_norm(x, attended)
        return self.mlp(normed), x, k, v

    def forward_rows(
        self, hidden: Tensor, residual: Tensor | None, cos: Tensor, sin: Tensor, layout: Layout, rows: Tensor,
        prefix: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The layer's output at `rows` only, as forward's two terms [B, hidden] each (the input
        [T, hidden] as forward's)."""
        x, normed = self._input_norm(hidden, residual)
        attended = self.self_attn.forward_rows(normed, cos, sin, layout, rows, prefix)
        x_rows, normed = self.post_attention_layernorm.add_and_norm(x[rows], attended)
        return self.mlp(normed), x_rows


class Qwen3Model(nn.Module):
    """Token ids in, final-normed hidden states out, for a packed batch."""

    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attention: AttentionBackend = SdpaLoop()

    def forward(
        self, input_ids: Tensor, positions: Tensor, seq_lens: list[int], prefix: KVPrefix | None = None,
        rows: Tensor | None = None,
    ) -> Tensor:
        """input_ids, positions: [T] -> final-normed hidden states [T, hidden], or [B, hidden] at
        `rows` [B] when only those are read: `rows` must be each sequence's last token
        (last_token_indices(seq_lens)), which attends to every key of its sequence; the last layer
        then computes its queries, MLP and norm at those rows alone (about 1/num_layers saved).

        Positions restart at 0 for each sequence, or at P when every sequence continues `prefix`.
        """
        hidden, residual = self._run_layers(input_ids, positions, seq_lens, prefix, rows=rows)
        if residual is None:  # a model without layers
            return self.norm(hidden)
        return self.norm.add_and_norm(residual, hidden)[1]  # the last layer's residual add, with the norm

    def use_attention(self, backend: AttentionBackend) -> None:
        """How every layer attends over a packed batch (see model.attention)."""
        self.attention = backend
        for module in self.modules():
            if isinstance(module, Attention):
                module.attention = backend

    def fuse_projections(self) -> None:
        """Each layer's q/k/v and gate/up projections as one product each, in place of the loaded
        modules (Attention/MLP.fuse_projections): for inference, after the weights are loaded."""
        for layer in self.layers:
            layer.self_attn.fuse_projections()
            layer.mlp.fuse_projections()

    def use_kernels(self, kernels: Kernels) -> None:
        """Run the elementwise kernels eagerly (the default) or compiled (see model.kernels)."""
        for module in self.modules():
            if isinstance(module, (RMSNorm, Attention, MLP)):
                module.kernels = kernels

    def prefill(self, input_ids: Tensor) -> KVPrefix:
        """Keys and values of one token sequence [P] at positions 0 .. P-1, for reuse."""
        positions = torch.arange(input_ids.shape[0], device=input_ids.device)
        cache = KVPrefix(keys=[], values=[])
        self._run_layers(input_ids, positions, [input_ids.shape[0]], None, collect=cache)
        return cache

    def _run_layers(
        self, input_ids: Tensor, positions: Tensor, seq_lens: list[int],
        prefix: KVPrefix | None, collect: KVPrefix | None = None, rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The last layer's output before the final norm as its two terms (DecoderLayer.forward),
        [T, hidden] each, or [B, hidden] at `rows` (residual None: no layers, the embeddings);
        appends each layer's k/v to `collect`."""
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
        layout = self.attention.layout(seq_lens, 0 if prefix is None else prefix.length, input_ids.device)
        hidden, residual = self.embed_tokens(input_ids), None  # [T, hidden]
        for index, layer in enumerate(self.layers):
            cached = None if prefix is None else (prefix.keys[index], prefix.values[index])
            if rows is not None and index == len(self.layers) - 1:
                return layer.forward_rows(hidden, residual, cos, sin, layout, rows, cached)  # [B, hidden] each
            hidden, residual, k, v = layer(hidden, residual, cos, sin, layout, cached)
            if collect is not None:
                collect.keys.append(k)
                collect.values.append(v)
        if rows is not None:  # (rows of a model without layers)
            return hidden[rows], None
        return hidden, residual
