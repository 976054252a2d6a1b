"""POYO+ calcium encoder: (frame, ROI) tokens -> rotary cross-attention -> latents -> rotary self-attention.

Tokens are as in torch_brain's ``CalciumPOYOPlus``: ``x = concat(Linear(1, D/2)(dF/F), unit_embedding (D/2))``,
layer-normalised, projected to keys and values. A window of T frames x N ROIs has K = T*N tokens, so a naive
implementation costs O(K D^2) just to project them. We never build the (B, K, D) token matrix:

    x        = v * p + q_u                 p = [w, 0], q_u = [b, e_u]          (linear in the scalar v)
    LN(x)    = g * (v * p' + q'_u) / s(v, u) + beta     p', q'_u: p, q_u minus their means
    s^2      = v^2 * mean(p'^2) + 2 v * mean(p' q'_u) + mean(q'_u^2) + eps
    K = W LN(x) = (v * W(g p') + W(g q'_u)) / s + W beta

so per token we only combine two precomputed D-vectors (per unit, computed once per batch for the *unique*
units) with two scalars: O(K D) instead of O(K D^2), exactly equal to the naive result (tested against
:meth:`TokenCrossAttention.forward_reference`). Padding tokens are excluded by the attention mask.

Latents: ``latents_per_step`` learned vectors repeated at every latent step; their timestamps are spread
evenly over the window (step centres). Rotary time embeddings (on half of each head's dims, log-spaced
periods, as torch_brain) encode token and latent times in the cross-attention and latent times in the
self-attention stack. ``forward`` returns the latents before (Z_1) and after (Z_L) the stack.

Population path (``EncoderConfig.population_path``, beyond POYO+, a demo default): in the tokens above a unit's
dF/F enters each value linearly and *which* unit is active reaches a latent only through the softmax weights, so
a multi-session model needs many steps before its latents say more than "this session is active" (docs/decoders.md).
The path adds to every latent query the population vector of its latent step projected on the unit embeddings,
``sum_u v_tu e_u`` (a linear readout whose weights are the unit embeddings), so the latents carry the population
pattern from the first step and the cross-attention builds on it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import EncoderConfig
from .attention import FeedForward, RotaryCrossAttention, RotarySelfAttention, RotaryTime, rotary_attention, rotate


# ------------------------------------------------------------------------------------------------ blocks
class SelfAttentionBlock(nn.Module):
    """Pre-norm rotary self-attention + MLP over latents.

    Shape:
        x (B, L, D), cos / sin (B, 1, L, r) -> (B, L, D).
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = RotarySelfAttention(dim, heads)
        self.ffn = FeedForward(dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.drop(self.attn(x, rotary=(cos, sin)))
        return x + self.drop(self.ffn(x))


class TokenCrossAttention(nn.Module):
    """Latents ``(B, L, D)`` attend to calcium tokens without materialising them (see module docstring)."""

    def __init__(self, dim: int, heads: int, dropout: float, eps: float = 1e-5, head_dim: int | None = None) -> None:
        super().__init__()
        if dim % 2 or (head_dim is None and dim % heads):
            raise ValueError(f"dim {dim} must be even and divisible by cross_heads {heads}")
        self.dim, self.heads, self.head_dim, self.eps = dim, heads, head_dim or dim // heads, eps
        self.value_map = nn.Linear(1, dim // 2)
        nn.init.trunc_normal_(self.value_map.weight, 0, 0.02)
        nn.init.zeros_(self.value_map.bias)
        self.attn = RotaryCrossAttention(dim, heads, rotate_values=True, kv_norm_eps=eps,
                                         head_dim=self.head_dim)  # norm_kv = LN of tokens
        self.ffn = FeedForward(dim, dropout)
        self.drop = nn.Dropout(dropout)

    def _token_parts(self, unit_table: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per-unit projections of the centred token parts: ``kvp (2D,)``, ``kvq (U, 2D)``, ``kvb (2D,)``, and
        the LayerNorm variance coefficients ``a`` (scalar), ``bq (U,)``, ``cq (U,)``."""
        d2 = self.dim // 2
        w = self.value_map.weight[:, 0]  # (D/2,)
        p = torch.cat([w, w.new_zeros(d2)])  # (D,)
        q = torch.cat([self.value_map.bias.expand(unit_table.shape[0], d2), unit_table], dim=-1)  # (U, D)
        p_c = p - p.mean()
        q_c = q - q.mean(dim=-1, keepdim=True)
        g, beta = self.attn.norm_kv.weight, self.attn.norm_kv.bias
        to_kv = self.attn.to_kv
        kvp = to_kv(g * p_c)  # (2D,)
        kvq = to_kv(g * q_c)  # (U, 2D)
        kvb = to_kv(beta)  # (2D,)
        var = (p_c * p_c).mean(), (q_c * p_c).mean(-1), (q_c * q_c).mean(-1)
        return kvp, kvq, kvb, var[0], torch.stack(var[1:], dim=-1)

    def _inverse_scale(self, v: Tensor, a: Tensor, bc: Tensor, unit_pos: Tensor) -> Tensor:
        """``1 / s(v, u)`` of every token ``(B, T, U)``: the LayerNorm scale (module docstring) from the values ``v``
        and the per-unit coefficients of :meth:`_token_parts`."""
        bu, cu = bc[unit_pos].unbind(-1)  # (B, U)
        return torch.rsqrt(v * v * a + 2 * v * bu[:, None] + cu[:, None] + self.eps)

    def forward(self, latents: Tensor, lat_t: Tensor, values: Tensor, unit_pos: Tensor, unit_table: Tensor,
                frame_t: Tensor, mask: Tensor, rot: RotaryTime) -> Tensor:
        """Grid form: tokens are every (frame t, unit u) of a window.

        Args:
            latents (B, L, D), lat_t (B, L) latent times; values (B, T, U) dF/F; unit_pos (B, U) rows of
            ``unit_table (n, D/2)``; frame_t (B, T) frame times; mask (B, T, U) True = real token.
        Returns latents (B, L, D) after attention and MLP. Equal to :meth:`forward_reference` on the
        flattened tokens, at O(B H L T U e) cost and without any (B, T*U, D) tensor.
        """
        b, n_lat, d = latents.shape
        h, e = self.heads, self.head_dim
        kvp, kvq, kvb, a, bc = self._token_parts(unit_table)
        kp, vp = kvp.view(2, h, e)
        kb, vb = kvb.view(2, h, e)
        kq, vq = kvq[unit_pos].view(b, -1, 2, h, e).permute(2, 0, 3, 1, 4)  # each (B, H, U, e)
        v = values.to(kvq.dtype)  # (B, T, U)
        inv = self._inverse_scale(v, a, bc, unit_pos)  # (B, T, U)
        q = self.attn.project_queries(latents)  # (B, H, L, e)
        # Rotary acts on the first r dims of each head only. For those: q_l . rot(s_t) k == rot(tau_l - s_t) q_l . k,
        # which depends on the frame t; the other e - r dims do not, so they are computed once per (l, u).
        r = rot.rotate_dim
        rel = lat_t[:, :, None] - frame_t[:, None, :]  # (B, L, T)
        if b > 1 and not rel.is_cuda and bool((rel == rel[:1]).all()):  # equal-length windows: one set of angles
            rel = rel[:1]
        ang = rel.to(rot.omega.dtype)[..., None] * rot.omega  # (B or 1, L, T, r/2)
        ang = torch.cat([ang, ang], dim=-1)[:, None]  # (B or 1, 1, L, T, r)
        cos, sin = ang.cos(), ang.sin()
        qt = rotate(q[..., None, :r].expand(b, h, n_lat, v.shape[1], r), cos, sin)  # (B, H, L, T, r)
        qp = q[..., r:]  # (B, H, L, e - r)
        scale = e ** -0.5
        q_kp = (qt @ kp[None, :, None, :r, None])[..., 0] + (qp @ kp[None, :, r:, None])  # (B, H, L, T)
        q_kb = (qt @ kb[None, :, None, :r, None])[..., 0] + (qp @ kb[None, :, r:, None])  # (B, H, L, T)
        q_kq = torch.einsum("bhltr,bhur->bhltu", qt, kq[..., :r]) + torch.einsum(
            "bhlp,bhup->bhlu", qp, kq[..., r:])[:, :, :, None]  # (B, H, L, T, U)
        logits = (inv[:, None, None] * (v[:, None, None] * q_kp[..., None] + q_kq) + q_kb[..., None]) * scale
        logits.masked_fill_(~mask[:, None, None], float("-inf"))  # in place: no second (B, H, L, T, U) tensor
        n_t, n_u = v.shape[1], v.shape[2]
        p = logits.view(b, h, n_lat, n_t * n_u).softmax(-1).view(b, h, n_lat, n_t, n_u)
        pi = p * inv[:, None, None]
        a_lt = (pi * v[:, None, None]).sum(-1)  # (B, H, L, T): weight of the value direction vp
        c_lt = p.sum(-1)  # (B, H, L, T): weight of the bias vb
        # values are rotated by their frame time and the output un-rotated at the latent time (POYO+):
        # sum_t rot(-tau_l) rot(s_t) x_lt = sum_t rot(s_t - tau_l) x_lt  (rotated dims only)
        inner_r = (a_lt[..., None] * vp[None, :, None, None, :r] + torch.einsum("bhltu,bhur->bhltr", pi, vq[..., :r])
                   + c_lt[..., None] * vb[None, :, None, None, :r])  # (B, H, L, T, r)
        out_r = rotate(inner_r, cos, sin, inverse=True).sum(3)  # (B, H, L, r)
        out_p = (a_lt.sum(-1, keepdim=True) * vp[None, :, None, r:]
                 + torch.einsum("bhltu,bhup->bhlp", pi, vq[..., r:])
                 + c_lt.sum(-1, keepdim=True) * vb[None, :, None, r:])  # (B, H, L, e - r)
        out = torch.cat([out_r, out_p], dim=-1)  # (B, H, L, e)
        out = out.transpose(1, 2).reshape(b, n_lat, h * e)
        return self._residual(latents, self.attn.out(out))

    def forward_kv(self, latents: Tensor, lat_t: Tensor, values: Tensor, unit_pos: Tensor, unit_table: Tensor,
                   frame_t: Tensor, mask: Tensor, rot: RotaryTime) -> Tensor:
        """Per-token keys and values from the per-unit factorisation, then fused SDPA (GPUs).

        Same arguments and result as :meth:`forward`. Builds K and V ``(B, H, T*U, e)`` directly,
        ``inv * (v * W(g p') + W(g q'_u)) + W beta``: no (B, T*U, D) token matrix, LayerNorm or token projection
        (the naive path's cost), only ``2 * heads * head_dim`` numbers per token, then one fused attention kernel.
        """
        b, n_t, n_u = values.shape
        h, e = self.heads, self.head_dim
        kvp, kvq, kvb, a, bc = self._token_parts(unit_table)
        v = values.to(kvq.dtype)
        inv = self._inverse_scale(v, a, bc, unit_pos)  # (B, T, U)
        kv = inv[..., None] * (v[..., None] * kvp + kvq[unit_pos][:, None]) + kvb  # (B, T, U, 2 H e)
        k, val = kv.view(b, n_t * n_u, 2, h, e).permute(2, 0, 3, 1, 4)  # each (B, H, T*U, e)
        q = self.attn.project_queries(latents)
        k, val = k.to(q.dtype), val.to(q.dtype)
        flat_t = frame_t[:, :, None].expand(b, n_t, n_u).reshape(b, -1)
        flat_mask = None if bool(mask.all()) else mask.reshape(b, 1, 1, -1)  # no mask: SDPA's flash kernel
        attended = rotary_attention(q, k, val, q_rot=rot(lat_t), kv_rot=rot(flat_t), rotate_values=True,
                                    mask=flat_mask)
        return self._residual(latents, self.attn.out(attended))

    def _residual(self, latents: Tensor, attended: Tensor) -> Tensor:
        x = latents + self.drop(attended)
        return x + self.drop(self.ffn(x))

    def forward_reference(self, latents: Tensor, lat_t: Tensor, values: Tensor, unit_pos: Tensor,
                          unit_table: Tensor, frame_t: Tensor, mask: Tensor, rot: RotaryTime) -> Tensor:
        """The naive path (tests, benchmark): flatten to K = T*U tokens, materialise
        ``LN(concat(Linear(v), e_u))`` (B, K, D), project, rotary attention."""
        b, n_t, n_u = values.shape
        flat_v = values.reshape(b, n_t * n_u)
        flat_u = unit_pos[:, None, :].expand(b, n_t, n_u).reshape(b, -1)
        flat_t = frame_t[:, :, None].expand(b, n_t, n_u).reshape(b, -1)
        tokens = torch.cat([self.value_map(flat_v[..., None].to(unit_table.dtype)), unit_table[flat_u]], dim=-1)
        flat_mask = None if bool(mask.all()) else mask.reshape(b, -1)  # no mask: SDPA may use its flash kernel
        attended = self.attn(latents, tokens, q_rot=rot(lat_t), kv_rot=rot(flat_t), mask=flat_mask)
        return self._residual(latents, attended)


class PopulationPath(nn.Module):
    """Per latent step, the window's population vector projected on the unit embeddings, mapped to latent width.

    ``p_s = mean_{t in step s} sum_u v_tu e_u / (sqrt(n_units) * rms(e))`` over the window's real tokens, then
    ``Linear(D/2, D)``. The normalisation uses only the window's own units, so a prediction never depends on the
    other windows of a batch.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim // 2, dim)

    def forward(self, values: Tensor, unit_emb: Tensor, frame_t: Tensor, mask: Tensor, n_steps: int,
                window_s: float) -> Tensor:
        """values (B, T, U), unit_emb (B, U, D/2), frame_t (B, T), mask (B, T, U) -> (B, n_steps, D)."""
        v = values.to(unit_emb.dtype) * mask
        unit_real = mask.any(1).to(unit_emb.dtype)  # (B, U)
        n = unit_real.sum(-1).clamp(min=1)  # (B,)
        rms = ((unit_emb.pow(2).mean(-1) * unit_real).sum(-1) / n).sqrt() + 1e-6  # (B,)
        pop = torch.einsum("btu,bud->btd", v, unit_emb) / (n.sqrt() * rms)[:, None, None]  # (B, T, D/2)
        step = (frame_t / (window_s / n_steps)).long().clamp(0, n_steps - 1)  # (B, T)
        frame_real = mask.any(-1).to(pop.dtype)  # (B, T)
        member = nn.functional.one_hot(step, n_steps).to(pop.dtype) * frame_real[..., None]  # (B, T, S)
        pooled = torch.einsum("bts,btd->bsd", member, pop) / member.sum(1).clamp(min=1)[..., None]
        return self.proj(pooled)


# ------------------------------------------------------------------------------------------------ encoder
def grown_embedding(emb: nn.Embedding, n_new: int) -> nn.Embedding:
    """``emb`` with ``n_new`` rows appended (truncated normal, SD 0.02, as the initial table); old rows kept."""
    old = emb.weight.data
    new = torch.empty(n_new, old.shape[1], device=old.device, dtype=old.dtype)
    nn.init.trunc_normal_(new, 0, 0.02)
    grown = nn.Embedding(old.shape[0] + n_new, old.shape[1]).to(old.device, old.dtype)
    grown.weight.data = torch.cat([old, new])
    return grown


class CalciumEncoder(nn.Module):
    """POYO+ calcium encoder.

    Args:
        cfg: sizes (dim, depth, heads, latents per step, latent step, dropout).
        n_units: rows of the unit-embedding table (grow later with :meth:`register_units`).
    """

    def __init__(self, cfg: EncoderConfig, n_units: int) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.unit_emb = nn.Embedding(max(1, n_units), d // 2)
        nn.init.trunc_normal_(self.unit_emb.weight, 0, 0.02)
        self.latent_emb = nn.Parameter(torch.randn(cfg.latents_per_step, d) * 0.02)
        cross_head_dim = getattr(cfg, "cross_dim_head", 0) or d // cfg.cross_heads
        self.cross = TokenCrossAttention(d, cfg.cross_heads, cfg.dropout, head_dim=cross_head_dim)
        self.blocks = nn.ModuleList(SelfAttentionBlock(d, cfg.self_heads, cfg.dropout) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d)  # final norm of the pre-norm stack: Z_L has a fixed scale
        self.population = PopulationPath(d) if getattr(cfg, "population_path", False) else None
        self.cross_rot = RotaryTime(cross_head_dim)
        self.self_rot = RotaryTime(d // cfg.self_heads)

    @property
    def n_units(self) -> int:
        return int(self.unit_emb.num_embeddings)

    def register_units(self, n_new: int) -> range:
        """Append ``n_new`` freshly initialised unit embeddings (fine-tuning); existing rows are kept as is."""
        n_old = self.n_units
        self.unit_emb = grown_embedding(self.unit_emb, n_new)
        return range(n_old, n_old + n_new)

    def latent_times(self, window_s: float, batch: int, device: torch.device) -> Tensor:
        """Latent timestamps ``(B, L)``: step centres spread evenly over the window, ``latents_per_step`` each."""
        n_steps = max(1, int(round(window_s / self.cfg.latent_step_s)))
        centres = (torch.arange(n_steps, device=device, dtype=torch.float32) + 0.5) * (window_s / n_steps)
        return centres.repeat_interleave(self.cfg.latents_per_step)[None].expand(batch, -1)

    def cross_path(self, device: torch.device) -> str:
        """Which cross-attention path runs (``EncoderConfig.cross_attention``; all are exact)."""
        mode = getattr(self.cfg, "cross_attention", "auto")
        if mode == "auto":  # measured on an H200 (benchmarks/encoder_throughput.py, config comment)
            width = self.cross.heads * self.cross.head_dim
            return "grid" if device.type != "cuda" or width > 256 else "kv"
        return mode

    def use_grid(self, device: torch.device) -> bool:
        return self.cross_path(device) == "grid"

    def encode(self, batch: dict[str, Tensor], reference: bool | None = None) -> tuple[Tensor, Tensor]:
        """Token grid -> Z_1 ``(B, L, D)`` and latent times ``(B, L)``. ``reference=True`` forces the
        materialised-token path, ``False`` the grid path, ``None`` follows the config.

        ``batch``: values (B, T, U), unit_index (B, U), times (B, T) frame times from the window start,
        mask (B, T, U), window_s (B,) - as :func:`poyocap.data.windows.collate` makes them.
        """
        values, units, times, mask = batch["values"], batch["unit_index"], batch["times"], batch["mask"]
        b = values.shape[0]
        window_s = float(batch["window_s"][0]) if "window_s" in batch else float(times.max()) + 1 / 30
        lat_t = self.latent_times(window_s, b, values.device)
        n_steps = lat_t.shape[1] // self.cfg.latents_per_step
        latents = self.latent_emb.repeat(n_steps, 1)[None].expand(b, -1, -1)
        uniq, pos = torch.unique(units, return_inverse=True)  # embed each unit once per batch
        table = self.unit_emb(uniq)
        if self.population is not None:
            pop = self.population(values, table[pos], times, mask, n_steps, window_s)  # (B, steps, D)
            latents = latents + pop.repeat_interleave(self.cfg.latents_per_step, dim=1)
        if reference is None:
            path = self.cross_path(values.device)
            f = {"grid": self.cross.forward, "tokens": self.cross.forward_reference, "kv": self.cross.forward_kv}[path]
        else:
            f = self.cross.forward_reference if reference else self.cross.forward
        z1 = f(latents, lat_t, values, pos, table, times, mask, self.cross_rot)
        return z1, lat_t

    def process(self, z: Tensor, lat_t: Tensor) -> Tensor:
        """The self-attention stack: Z_1 ``(B, L, D)`` -> Z_L."""
        cos, sin = self.self_rot(lat_t)
        for block in self.blocks:
            z = block(z, cos, sin)
        return self.norm_out(z)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Returns ``(Z_1, Z_L, latent_times)``."""
        z1, lat_t = self.encode(batch)
        return z1, self.process(z1, lat_t), lat_t
