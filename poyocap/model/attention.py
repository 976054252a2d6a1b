"""Rotary-time attention modules shared by the encoder and the readouts (after torch_brain's
``nn/rotary_attention.py``).

- :class:`RotaryTime`, :func:`rotate`: rotary embedding of continuous time on the first half of each head's dims
  (log-spaced periods, rotate-half convention).
- :class:`RotarySelfAttention`: pre-norm self-attention over one sequence (the latent stack).
- :class:`RotaryCrossAttention`: pre-norm queries attend to a context (calcium tokens, or latents for a readout).
  With ``rotate_values=True`` values are rotated at their own time and the output un-rotated at the query's time
  (POYO+'s encoder); the readouts rotate queries and keys only.

Both return the out-projected attention output *without* the residual, so each block decides its own residual,
dropout and MLP. Parameters are created in the order the blocks used before this module existed (norms, then
projections), so seeded initialisations are unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Rotary = tuple[Tensor, Tensor]  # (cos, sin), each (B, 1, N, rotate_dim)


class RotaryTime(nn.Module):
    """Rotary embedding of continuous time: angles (…, N, rotate_dim/2) for log-spaced periods."""

    def __init__(self, head_dim: int, t_min: float = 1e-4, t_max: float = 4.0) -> None:
        super().__init__()
        self.rotate_dim = max(2, (head_dim // 2) // 2 * 2)
        n = self.rotate_dim // 2
        periods = torch.exp(torch.linspace(math.log(t_min), math.log(t_max), n))
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)

    def forward(self, t: Tensor) -> Rotary:
        """``t (B, N)`` seconds -> ``(cos, sin)`` each ``(B, 1, N, rotate_dim)`` (broadcast over heads)."""
        ang = t.to(self.omega.dtype)[..., None] * self.omega  # (B, N, r/2)
        ang = torch.cat([ang, ang], dim=-1)[:, None]
        return ang.cos(), ang.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor, inverse: bool = False) -> Tensor:
    """Rotate the first ``rotate_dim`` dims of ``x (B, H, N, hd)`` (rotate-half convention)."""
    r = cos.shape[-1]
    xr, xp = x[..., :r], x[..., r:]
    x1, x2 = xr.chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    s = -sin if inverse else sin
    out = xr * cos + rot * s
    return torch.cat([out, xp.expand(*out.shape[:-1], xp.shape[-1])], dim=-1)


class FeedForward(nn.Module):
    """Pre-norm MLP (GELU, x4)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``(B, N, H*e)`` -> ``(B, H, N, e)``."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def rotary_attention(q: Tensor, k: Tensor, v: Tensor, *, q_rot: Rotary, kv_rot: Rotary, rotate_values: bool,
                     mask: Tensor | None = None, dropout_p: float = 0.0) -> Tensor:
    """Scaled dot-product attention with rotary time.

    Shape:
        q (B, H, Q, e), k and v (B, H, K, e); ``mask`` (B, 1, 1, K) bool, True = attend -> (B, Q, H*e).
    """
    q, k = rotate(q, *q_rot), rotate(k, *kv_rot)
    if rotate_values:
        v = rotate(v, *kv_rot)
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if rotate_values:
        a = rotate(a, *q_rot, inverse=True)
    b, h, n, e = a.shape
    return a.transpose(1, 2).reshape(b, n, h * e)


class RotarySelfAttention(nn.Module):
    """Pre-norm rotary self-attention (values rotated, output un-rotated).

    Shape:
        x (B, N, D), rotary (cos, sin) each (B, 1, N, r) -> (B, N, D) (no residual).
    """

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by self_heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.attn_dropout = attn_dropout

    def forward(self, x: Tensor, *, rotary: Rotary) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        a = rotary_attention(q, k, v, q_rot=rotary, kv_rot=rotary, rotate_values=True,
                             dropout_p=self.attn_dropout if self.training else 0.0)
        return self.out(a)


class RotaryCrossAttention(nn.Module):
    """Pre-norm queries attend to a context with rotary time.

    Shape:
        queries (B, Q, D) at times with rotary ``q_rot``; context (B, K, D) with ``kv_rot``;
        ``mask`` (B, K) bool, True = real context item -> (B, Q, D) (no residual). Heads have ``head_dim`` dims
        (default ``D / heads``); rotary tables must be built for that head size.
    The parts (:meth:`project_queries`, :meth:`project_context`, ``out``) are public so the encoder's grid path,
    which never builds the context matrix, uses the same weights.
    """

    def __init__(self, dim: int, heads: int, rotate_values: bool, kv_norm_eps: float = 1e-5,
                 head_dim: int | None = None) -> None:
        super().__init__()
        if head_dim is None and dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        # head_dim None: heads split the model width (inner width = dim); else inner width = heads * head_dim
        # (torch_brain's convention: a narrow cross-attention at every model size).
        self.heads, self.head_dim, self.rotate_values = heads, head_dim or dim // heads, rotate_values
        inner = heads * self.head_dim
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim, eps=kv_norm_eps)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.out = nn.Linear(inner, dim)

    def project_queries(self, queries: Tensor) -> Tensor:
        """``(B, Q, D)`` -> ``(B, H, Q, e)``."""
        return split_heads(self.to_q(self.norm_q(queries)), self.heads)

    def project_context(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, K, D)`` -> keys and values, each ``(B, H, K, e)``."""
        b, n, _ = context.shape
        k, v = self.to_kv(self.norm_kv(context)).view(b, n, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, queries: Tensor, context: Tensor, *, q_rot: Rotary, kv_rot: Rotary,
                mask: Tensor | None = None) -> Tensor:
        k, v = self.project_context(context)
        a = rotary_attention(self.project_queries(queries), k, v, q_rot=q_rot, kv_rot=kv_rot,
                             rotate_values=self.rotate_values, mask=None if mask is None else mask[:, None, None, :])
        return self.out(a)
