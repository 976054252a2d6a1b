"""Baseline encoders and decoders of the ablation table (notebook 06), drop-in for the POYO+ parts.

- :class:`MLPEncoder`: the window's dF/F binned at the latent steps, each bin's population vector through a linear
  input layer (one weight vector per unit: per session, that is the session's own input layer ``W_s (N_s, D)``,
  stored in ``unit_emb`` so the fine-tuning code - parameter groups, response-profile init, new units - treats it
  like the POYO+ unit embeddings) and a shared MLP trunk. Same interface as
  :class:`poyocap.model.encoder.CalciumEncoder`: ``forward(batch) -> (Z_1, Z_L, latent_times)``, ``(B, L, D)``.
  With ``trunk_layers=0`` it is a linear map per bin (how the CEBRA embeddings enter the shared decoders).
- :class:`MLPPixelDecoder`: per-frame vector ``(B, D)`` -> hidden -> ``H x W`` pixels, the MLP decoder of the
  paper's "MLP encoder -> MLP decoder" and "POYO+ encoder -> MLP decoder" rows; same interface as
  :class:`poyocap.model.readouts.MovieUNet` (``set_prior``, ``forward``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import EncoderConfig
from .encoder import CalciumEncoder, grown_embedding


@dataclass(frozen=True)
class MLPEncoderConfig:
    """What the decoders read from ``encoder.cfg`` (dim, heads of the readout) plus the binning."""

    dim: int = 64
    cross_heads: int = 2
    latent_step_s: float = 0.25
    latents_per_step: int = 1
    trunk_layers: int = 2
    dropout: float = 0.1


class MLPEncoder(nn.Module):
    """Binned population vector -> per-unit linear input layer -> shared MLP trunk (see module docstring).

    Args:
        cfg: width, bin size and trunk depth.
        n_units: rows of the per-unit input weights (grow with :meth:`register_units`).
    """

    def __init__(self, cfg: MLPEncoderConfig, n_units: int) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.unit_emb = nn.Embedding(max(1, n_units), d)  # unit u's input weights w_u: h = sum_u v_u w_u
        nn.init.trunc_normal_(self.unit_emb.weight, 0, 0.02)
        self.bias = nn.Parameter(torch.zeros(d))
        self.trunk = nn.ModuleList(  # residual pre-norm MLP blocks, shared by every session and bin
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(2 * d, d))
            for _ in range(cfg.trunk_layers))
        self.norm_out = nn.LayerNorm(d)

    @property
    def n_units(self) -> int:
        return int(self.unit_emb.num_embeddings)

    def register_units(self, n_new: int) -> range:
        """Append ``n_new`` freshly initialised unit rows; existing rows are kept."""
        n_old = self.n_units
        self.unit_emb = grown_embedding(self.unit_emb, n_new)
        return range(n_old, n_old + n_new)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """``batch``: values (B, T, U), unit_index (B, U), mask (B, T, U), times (B, T) -> Z_1, Z_L (B, L, D) and
        the bin centres (B, L); L = window / latent_step_s bins."""
        values, mask, times = batch["values"], batch["mask"], batch["times"]
        b, n_t, _ = values.shape
        window_s = float(batch["window_s"][0]) if "window_s" in batch else float(times.max()) + 1 / 30
        n_bins = max(1, int(round(window_s / self.cfg.latent_step_s)))
        bin_of = torch.clamp((times / window_s * n_bins).long(), 0, n_bins - 1)  # (B, T)
        onehot = torch.nn.functional.one_hot(bin_of, n_bins).to(values.dtype)  # (B, T, L)
        m = mask.to(values.dtype)
        counts = torch.einsum("btl,btu->blu", onehot, m).clamp_min(1)  # real frames per (bin, unit)
        binned = torch.einsum("btl,btu->blu", onehot, values * m) / counts  # (B, L, U) mean dF/F of real frames
        z = torch.einsum("blu,bud->bld", binned, self.unit_emb(batch["unit_index"])) + self.bias
        z1 = z
        for block in self.trunk:
            z = z + block(z)
        lat_t = (torch.arange(n_bins, device=values.device, dtype=torch.float32) + 0.5) * (window_s / n_bins)
        return z1, self.norm_out(z), lat_t[None].expand(b, -1)


class MLPPixelDecoder(nn.Module):
    """Per-frame vector ``(B, D)`` -> frame ``(B, H, W)`` in [0, 1] through one hidden layer (no convolutions)."""

    def __init__(self, dim: int, frame_hw: tuple[int, int] = (32, 64), hidden: int = 512) -> None:
        super().__init__()
        self.frame_hw = frame_hw
        h, w = frame_hw
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, h * w))
        self.pixel_bias = nn.Parameter(torch.zeros(h, w))

    @torch.no_grad()
    def set_prior(self, frame: Tensor) -> None:
        """Start from ``frame (H, W)`` (the mean training frame), as :meth:`MovieUNet.set_prior`."""
        self.pixel_bias.copy_(torch.logit(frame.clamp(1e-3, 1 - 1e-3)).to(self.pixel_bias))

    def forward(self, vec: Tensor) -> Tensor:
        h, w = self.frame_hw
        return torch.sigmoid(self.net(vec).view(-1, h, w) + self.pixel_bias)


def build_encoder(kind: str, cfg: EncoderConfig, n_units: int) -> nn.Module:
    """A fresh encoder: ``poyo`` (:class:`CalciumEncoder`), ``mlp`` (:class:`MLPEncoder`, 2 trunk blocks) or
    ``linear`` (:class:`MLPEncoder` without trunk), the MLP ones at the POYO+ encoder's width and latent step."""
    if kind == "poyo":
        return CalciumEncoder(cfg, n_units)
    if kind in ("mlp", "linear"):
        return MLPEncoder(MLPEncoderConfig(dim=cfg.dim, cross_heads=cfg.cross_heads, latent_step_s=cfg.latent_step_s,
                                           trunk_layers=2 if kind == "mlp" else 0, dropout=cfg.dropout), n_units)
    raise ValueError(f"encoder must be 'poyo', 'mlp' or 'linear', got {kind!r}")
