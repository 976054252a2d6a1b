"""Readouts on top of the encoder latents: a POYO+ query readout, the movie U-Net, the grating head.

- :class:`QueryReadout`: one output query per target time cross-attends (rotary time) to the latents Z_L.
- :class:`MovieUNet`: the per-frame vector starts a 2 x 4 map (the frames' 1:2 aspect) that doubles per stage up to
  the frame size; at the first four stages the vector is projected again to that stage's C x h x w and fused with
  the upsampled map by a 1 x 1 convolution ("latent injection", instead of encoder skip connections); later stages
  only upsample. ``inject=False`` removes the injections (the "U-Net w/o skip" ablation). Output in [0, 1].
- :class:`GratingReadout`: a query at the trial -> 8 direction classes.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from .attention import FeedForward, RotaryCrossAttention, RotaryTime


#: memory layout of the movie U-Net's feature maps (:attr:`MovieUNet.layout`; speed only)
Layout = Literal["mixed", "channels_last", "contiguous"]


class QueryReadout(nn.Module):
    """Output queries at times ``query_t (B, Q)`` attend to latents ``z (B, L, D)`` at ``lat_t (B, L)`` -> (B, Q, D).

    With ``n_sessions > 0`` a learned session embedding is added to the query (POYO+'s output-query session
    embedding): the query, and through the residual the output vector, can remove each session's offset.
    """

    def __init__(self, dim: int, heads: int = 2, dropout: float = 0.0, n_sessions: int = 0, n_queries: int = 1
                 ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.query = nn.Parameter(torch.randn(n_queries, dim) * 0.02)
        self.session_emb = nn.Embedding(n_sessions, dim) if n_sessions else None
        if self.session_emb is not None:
            nn.init.trunc_normal_(self.session_emb.weight, 0, 0.02)
        self.attn = RotaryCrossAttention(dim, heads, rotate_values=False)
        self.ffn = FeedForward(dim, dropout)
        self.rot = RotaryTime(dim // heads)

    def forward(self, z: Tensor, lat_t: Tensor, query_t: Tensor, session: Tensor | None = None) -> Tensor:
        """Shape: z (B, L, D), lat_t (B, L), query_t (B, Q), session (B,) rows of the session table -> (B, Q, D);
        with ``n_queries = K > 1`` learned queries per output time -> (B, Q * K, D) (the K of each time together)."""
        b, n_q = query_t.shape
        k = self.query.shape[0]  # learned queries per output time
        query_t = query_t.repeat_interleave(k, dim=1)
        x = self.query.repeat(n_q, 1).expand(b, n_q * k, -1)
        if self.session_emb is not None:
            if session is None:
                raise ValueError("this readout has session embeddings: pass the batch's session_index")
            if int(session.max()) >= self.session_emb.num_embeddings:
                raise IndexError(f"session row {int(session.max())} not registered "
                                 f"({self.session_emb.num_embeddings} sessions in the readout)")
            x = x + self.session_emb(session)[:, None]
        x = x + self.attn(x, z, q_rot=self.rot(query_t), kv_rot=self.rot(lat_t))
        return x + self.ffn(x)


class SessionCentring(nn.Module):
    """Subtract each session's running mean latent: ``z (B, L, D)`` -> ``z - mean[session]`` (a demo deviation,
    ``finetune.session_centring``).

    At fine-tuning start a session's latents differ from another's mostly by a constant (its units' embeddings),
    and within a session trials differ by ~10 % of that: a shared readout sees the session, not the trial.
    Per-domain normalisation statistics (AdaBN, domain-specific batch norm) remove the constant. The means are
    buffers (saved, restored on resume), updated in training mode from the batch's detached per-session means
    with step ``max(1 / n_seen, momentum)`` (a running average that forgets slowly as the encoder changes) and
    used as they are in evaluation mode; a session never seen in training is not shifted.
    """

    def __init__(self, n_sessions: int, dim: int, momentum: float = 0.02) -> None:
        super().__init__()
        if n_sessions < 1:
            raise ValueError("SessionCentring needs at least one session")
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(n_sessions, dim))
        self.register_buffer("seen", torch.zeros(n_sessions))

    def forward(self, z: Tensor, session: Tensor) -> Tensor:
        """Shape: z (B, L, D), session (B,) rows of the session table -> (B, L, D)."""
        if self.training:
            with torch.no_grad():
                per_window = z.detach().float().mean(1)  # (B, D)
                n = torch.zeros_like(self.seen).index_add_(0, session, torch.ones_like(session, dtype=self.seen.dtype))
                sums = torch.zeros_like(self.mean).index_add_(0, session, per_window)
                hit = n > 0
                self.seen += n
                step = torch.maximum(n / self.seen.clamp_min(1), torch.full_like(n, self.momentum))
                batch_mean = sums[hit] / n[hit, None]
                self.mean[hit] += step[hit, None] * (batch_mean - self.mean[hit])
        return z - self.mean[session][:, None].to(z.dtype)


class MovieUNet(nn.Module):
    """Per-frame vector ``(B, D)`` -> frame ``(B, H, W)`` in [0, 1] (see module docstring).

    Args:
        frame_hw: output size; both must be 2 x 4 times a power of two (e.g. 32 x 64, 128 x 256).
        channels: channels of the 2 x 4 start map; halved every stage, at least 8.
        inject: latent injection at the first ``n_inject`` stages.
    """

    def __init__(self, dim: int, frame_hw: tuple[int, int] = (32, 64), channels: int = 128, inject: bool = True,
                 n_inject: int = 4) -> None:
        super().__init__()
        h, w = frame_hw
        n_stages = int(round(math.log2(h / 2)))
        if 2 * 2**n_stages != h or 4 * 2**n_stages != w:
            raise ValueError(f"frame_hw must be (2, 4) x 2^k, got {frame_hw}")
        self.frame_hw, self.inject = frame_hw, inject
        self.start = nn.Linear(dim, channels * 2 * 4)
        self.c0 = channels
        self.stages = nn.ModuleList()
        self.injections = nn.ModuleList()
        self.fuse = nn.ModuleList()
        c_in, size = channels, (2, 4)
        for s in range(n_stages):
            c_out = max(8, channels // 2 ** (s + 1))
            size = (size[0] * 2, size[1] * 2)
            self.stages.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.GELU(),
                nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.GELU(),
            ))
            if inject and s < n_inject:
                self.injections.append(nn.Linear(dim, c_out * size[0] * size[1]))
                self.fuse.append(nn.Conv2d(2 * c_out, c_out, 1))
            c_in = c_out
        self.head = nn.Conv2d(c_in, 1, 1)
        self.pixel_bias = nn.Parameter(torch.zeros(h, w))  # per-pixel logit offset (set_prior: the mean frame)
        self.layout: Layout = "mixed"  # memory layout of the feature maps (speed only; forward)

    @torch.no_grad()
    def set_prior(self, frame: Tensor) -> None:
        """Start from ``frame (H, W)`` in [0, 1] (the mean training frame): the output's per-pixel bias is its
        logit, so the untrained decoder predicts the mean frame and learns only the deviations from it."""
        self.pixel_bias.copy_(torch.logit(frame.clamp(1e-3, 1 - 1e-3)).to(self.pixel_bias))

    def forward(self, vec: Tensor) -> Tensor:
        """``vec (B, D)`` -> frames ``(B, H, W)``. Memory layout of the maps (``self.layout``, speed only, CPU):
        ``mixed`` (default) runs the convolutions channels-last - oneDNN's convolutions with few channels run ~2x
        (3x3) to 3x (1x1) faster that way - and GroupNorm / GELU contiguous, where oneDNN's GroupNorm is 3-10x
        slower channels-last; a demo movie training step 1.2x the all-channels-last layout's
        (``benchmarks/unet_layout.py``). ``channels_last`` / ``contiguous`` keep one layout throughout. The outputs
        equal each other's to ~1e-6 (tested)."""
        b = vec.shape[0]
        conv_fmt = torch.contiguous_format if self.layout == "contiguous" else torch.channels_last
        norm_fmt = torch.channels_last if self.layout == "channels_last" else torch.contiguous_format
        x = self.start(vec).view(b, self.c0, 2, 4)
        for s, stage in enumerate(self.stages):
            for layer in stage:  # upsample, conv, norm, GELU, conv, norm, GELU
                if isinstance(layer, (nn.Conv2d, nn.GroupNorm)):
                    x = x.contiguous(memory_format=conv_fmt if isinstance(layer, nn.Conv2d) else norm_fmt)
                x = layer(x)
            if s < len(self.injections):
                inj = self.injections[s](vec).view(b, x.shape[1], x.shape[2], x.shape[3])
                x = self.fuse[s](torch.cat([x.contiguous(memory_format=conv_fmt),
                                            inj.contiguous(memory_format=conv_fmt)], dim=1))
        return torch.sigmoid(self.head(x.contiguous(memory_format=conv_fmt))[:, 0] + self.pixel_bias)


class GratingReadout(nn.Module):
    """Query at the trial time -> 8 direction logits."""

    def __init__(self, dim: int, heads: int = 2, n_classes: int = 8, n_sessions: int = 0) -> None:
        super().__init__()
        self.query = QueryReadout(dim, heads, n_sessions=n_sessions)
        self.classify = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_classes))

    def features(self, z: Tensor, lat_t: Tensor, query_t: Tensor, session: Tensor | None = None) -> Tensor:
        """What the linear layer sees: the layer-normalised query output ``(B, D)`` (same shapes as ``forward``)."""
        return self.classify[0](self.query(z, lat_t, query_t[:, None], session)[:, 0])

    def forward(self, z: Tensor, lat_t: Tensor, query_t: Tensor, session: Tensor | None = None) -> Tensor:
        """Shape: z (B, L, D), lat_t (B, L), query_t (B,), session (B,) -> logits (B, n_classes)."""
        return self.classify[1](self.features(z, lat_t, query_t, session))
