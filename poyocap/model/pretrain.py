"""Latent causal temporal masked modelling with a twin network (the paper's pretraining objective).

    Z_1, lat_t = encoder.encode(tokens)                       (B, L, D)
    mask       = lat_t >= (1 - ratio) * window                 last 50 % of latents by time ("causal")
    Z_1^m      = where(mask, MASK, Z_1)                        learned MASK token; its time is kept (rotary)
    Z_L, Z_L^m = encoder.process(Z_1), encoder.process(Z_1^m)  the same self-attention stack (twin)
    loss       = L1(Z_L^m[mask], stopgrad(Z_L)[mask]) + lambda * CE(head(Z_L), direction)   lambda = 0.01

The CE term counts only windows that contain a grating trial (direction >= 0).

Options (the ablations need them): ``mask_mode="random"`` (same ratio, random positions), ``ce_weight=0``
("masking only"), ``target="ema"`` (an exponential-moving-average copy of the encoder makes the target),
``target="shared_eval"`` (the shared stop-grad twin without dropout: the target is the eval-mode Z_L),
``mask_level="token"`` (the online branch's tokens of the masked half are removed before the cross-attention),
``predictor`` (an MLP on the online branch), ``normalize_target`` (layer-normalised prediction and target),
``centre_per_window`` (prediction and target compared after removing their mean over the window's masked latents),
``unit_mask_ratio`` (token masking only; the demo's default 0.5: in training the online branch also loses a random
share of each window's units, so the masked future must be predicted from the other units' past - a neuron mask
beside the temporal one; held-out evaluation keeps every unit), ``recon_loss="infonce"`` (a contrastive, CPC-style
form of the masked prediction: :func:`info_nce`; an experiment, docs/pretraining.md), ``ema_decay=1`` (a frozen
random target, never updated).
The authors' released code differs from the paper's text; ``mask_mode="channel"`` with ``recon_loss="mse"``
and ``ce_weight=1`` reproduces it: one random latent *channel* is zeroed in every latent and all latents are
regressed with MSE, with an unweighted CE.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import PretrainConfig
from ..data.recording import GRATING_DIRECTIONS
from ..train import ObjectiveBase
from .encoder import CalciumEncoder

N_DIRECTIONS = len(GRATING_DIRECTIONS)
INFONCE_TEMPERATURE = 0.1  # recon_loss="infonce" (SimCLR / CPC's usual range 0.07-0.2)


def causal_mask(lat_t: Tensor, window_s: float, ratio: float) -> Tensor:
    """True for latents whose time lies in the last ``ratio`` of the window. ``lat_t (B, L)`` -> bool (B, L)."""
    return lat_t >= (1.0 - ratio) * window_s - 1e-6


def random_mask(lat_t: Tensor, ratio: float) -> Tensor:
    """The same number of masked latents as :func:`causal_mask`, at random positions (uses torch's RNG)."""
    b, n = lat_t.shape
    k = int(round(ratio * n))
    order = torch.rand(b, n, device=lat_t.device).argsort(dim=1)
    mask = torch.zeros(b, n, dtype=torch.bool, device=lat_t.device)
    mask.scatter_(1, order[:, :k], True)
    return mask


def effective_rank(z: Tensor) -> float:
    """Scale-free collapse measure: exp(entropy) of the normalised singular values of the centred latents
    ``z (..., D)`` flattened to (N, D) (Roy & Vetterli 2007); D for isotropic latents, 1 for a single direction."""
    x = z.detach().double().reshape(-1, z.shape[-1])
    s = torch.linalg.svdvals(x - x.mean(0))
    p = s / s.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


def latent_std(z: Tensor) -> Tensor:
    """Collapse monitor: per-dimension std of latents over batch and positions, averaged over dims."""
    return z.detach().float().reshape(-1, z.shape[-1]).std(dim=0).mean()


def info_nce(pred: Tensor, target: Tensor, temperature: float = INFONCE_TEMPERATURE) -> Tensor:
    """Contrastive (CPC-style) form of the masked prediction: each predicted latent must pick its own target among
    every masked latent of the batch (the other positions of its window and every other window's).
    ``pred, target (N, D)``, compared by cosine similarity / ``temperature`` -> scalar cross-entropy."""
    logits = F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T / temperature  # (N, N)
    return F.cross_entropy(logits, torch.arange(len(pred), device=pred.device))


#: ``PretrainConfig.recon_loss`` -> the loss between predicted and target masked latents ``(N, D)`` each
RECON_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss, "infonce": info_nce}


def past_tokens(batch: dict[str, Tensor], window_s: float, ratio: float) -> dict[str, Tensor]:
    """``batch`` with the tokens of the last ``ratio`` of the window removed (token mask False): frames at
    ``times >= (1 - ratio) * window_s``, the same cut :func:`causal_mask` applies to latents."""
    keep = batch["times"] < (1.0 - ratio) * window_s - 1e-6  # (B, T)
    return {**batch, "mask": batch["mask"] & keep[..., None]}


def drop_units(batch: dict[str, Tensor], ratio: float) -> dict[str, Tensor]:
    """``batch`` with each window's units removed (token mask False over all frames) independently with
    probability ``ratio`` (torch's RNG; ``ratio`` 0 returns ``batch`` unchanged); a window never loses all of its
    units (the one with the highest draw stays: attention over no token is undefined). ``mask (B, T, U)``."""
    if ratio <= 0:
        return batch
    mask = batch["mask"]
    draw = torch.rand(mask.shape[0], 1, mask.shape[2], device=mask.device)  # (B, 1, U)
    present = mask.any(1, keepdim=True)  # (B, 1, U): units with a token in the window
    keep = (draw >= ratio) & present
    best = torch.where(present, draw, -1.0).argmax(-1, keepdim=True)  # (B, 1, 1)
    last_one = torch.zeros_like(keep).scatter_(-1, best, True) & ~keep.any(-1, keepdim=True)
    return {**batch, "mask": mask & (keep | last_one)}


class TwinMaskedPretrainer(ObjectiveBase):
    """Pretraining objective (``forward(batch) -> (loss, metrics)`` for :func:`poyocap.train.train`)."""

    def __init__(self, encoder: CalciumEncoder, cfg: PretrainConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg
        d = encoder.cfg.dim
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, N_DIRECTIONS))  # small orientation readout
        self.predictor = (nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
                          if cfg.predictor else None)
        self.target_encoder: CalciumEncoder | None = None
        if cfg.target == "ema":
            self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)

    def train(self, mode: bool = True) -> "TwinMaskedPretrainer":
        """The EMA target encoder always runs in eval mode (no dropout in the target branch)."""
        super().train(mode)
        if self.target_encoder is not None:
            self.target_encoder.eval()
        return self

    def make_mask(self, lat_t: Tensor, window_s: float) -> Tensor:
        if self.cfg.mask_mode == "causal":
            return causal_mask(lat_t, window_s, self.cfg.mask_ratio)
        if self.cfg.mask_mode == "random":
            return random_mask(lat_t, self.cfg.mask_ratio)
        if self.cfg.mask_mode == "channel":
            return torch.ones_like(lat_t, dtype=torch.bool)
        raise ValueError(f"unknown mask_mode {self.cfg.mask_mode!r}")

    def views(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Both twin views: z1, zL (unmasked), zL_masked, target, mask (B, L)."""
        z1, lat_t = self.encoder.encode(batch)
        window_s = float(batch["window_s"][0])
        mask = self.make_mask(lat_t, window_s)
        if self.cfg.mask_level == "token":  # the online branch never sees the masked half's tokens
            z1_past, _ = self.encoder.encode(self.online_batch(batch, window_s))
            z1_masked = torch.where(mask[..., None], self.mask_token.to(z1.dtype), z1_past)
        elif self.cfg.mask_mode == "channel":
            channel = int(torch.randint(z1.shape[-1], (1,)))
            z1_masked = z1.clone()
            z1_masked[..., channel] = 0.0
        else:
            z1_masked = torch.where(mask[..., None], self.mask_token.to(z1.dtype), z1)
        z_l = self.encoder.process(z1, lat_t)
        z_l_masked = self.encoder.process(z1_masked, lat_t)
        if self.target_encoder is not None:
            with torch.no_grad():
                target = self.target_encoder(batch)[1]
        elif self.cfg.target == "shared_eval" and self.training:
            target = self._clean_target(batch)
        else:
            target = z_l.detach()
        return {"z1": z1, "z_l": z_l, "z_l_masked": z_l_masked, "target": target, "mask": mask, "lat_t": lat_t}

    def online_batch(self, batch: dict[str, Tensor], window_s: float) -> dict[str, Tensor]:
        """What the online branch encodes with token masking: the past tokens, and in training (an augmentation,
        like dropout) only a random ``1 - unit_mask_ratio`` of each window's units."""
        past = past_tokens(batch, window_s, self.cfg.mask_ratio)
        return drop_units(past, self.cfg.unit_mask_ratio) if self.training else past

    @torch.no_grad()
    def _clean_target(self, batch: dict[str, Tensor]) -> Tensor:
        """Z_L of the same encoder without dropout (``target="shared_eval"``): two train-mode passes over one input
        differ by their dropout masks, a target the model can only match by ignoring its input."""
        self.encoder.eval()
        try:
            return self.encoder(batch)[1]
        finally:
            self.encoder.train()

    def prediction_and_target(self, v: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """What the loss compares, ``(B, L, D)`` each (float32): the masked view (through the predictor when there
        is one) and the target (both layer-normalised without gain when ``normalize_target``)."""
        pred, tgt = v["z_l_masked"].float(), v["target"].float()
        if self.predictor is not None:
            pred = self.predictor(pred)
        if self.cfg.centre_per_window:
            w = v["mask"][..., None].float()  # (B, L, 1): the mean over each window's masked latents
            n = w.sum(1, keepdim=True).clamp(min=1.0)
            pred = pred - (pred * w).sum(1, keepdim=True) / n
            tgt = tgt - (tgt * w).sum(1, keepdim=True) / n
        if self.cfg.normalize_target:
            pred, tgt = F.layer_norm(pred, pred.shape[-1:]), F.layer_norm(tgt, tgt.shape[-1:])
        return pred, tgt

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        v = self.views(batch)
        m = v["mask"]
        pred, tgt = self.prediction_and_target(v)
        pred, tgt = pred[m], tgt[m]
        rec = RECON_LOSSES[self.cfg.recon_loss](pred, tgt)
        labelled = batch["direction"] >= 0
        metrics = {"recon": float(rec.detach()), "std_zl": float(latent_std(v["z_l"]))}
        loss = rec
        if labelled.any():
            logits = self.head(v["z_l"][labelled].mean(dim=1)).float()
            ce = F.cross_entropy(logits, batch["direction"][labelled])
            metrics["ce"] = float(ce.detach())
            metrics["aux_acc"] = float((logits.argmax(-1) == batch["direction"][labelled]).float().mean())
            if self.cfg.ce_weight > 0:
                loss = loss + self.cfg.ce_weight * ce
        return loss, metrics

    @torch.no_grad()
    def after_step(self) -> None:
        """EMA update of the target encoder (no-op for the shared stop-grad twin)."""
        if self.target_encoder is None:
            return
        decay = self.cfg.ema_decay
        for p_t, p in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            p_t.mul_(decay).add_(p.detach(), alpha=1 - decay)


def copy_last_baseline(z_l: Tensor, mask: Tensor, latents_per_step: int) -> Tensor:
    """Copy-last-latent baseline for causal masking: each masked latent is predicted by the latent with the
    same within-step index at the last unmasked step. ``z_l (B, L, D)``, ``mask (B, L)`` -> prediction (B, L, D)."""
    b, n, d = z_l.shape
    steps = z_l.view(b, n // latents_per_step, latents_per_step, d)
    step_mask = mask.view(b, -1, latents_per_step)[..., 0]  # (B, S)
    last_visible = (~step_mask).long().cumsum(1).argmax(1)  # index of the last unmasked step
    src = steps[torch.arange(b), last_visible]  # (B, P, D)
    return src[:, None].expand_as(steps).reshape(b, n, d)
