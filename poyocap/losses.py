"""Movie reconstruction losses with the paper's weights.

    L_movie = 50 focal + 50 L1 + 50 FFT + perceptual + 0.1 (1 - SSIM)

All terms take ``pred, target: (B, H, W)`` in [0, 1] and return a scalar (mean over the batch):

- ``l1``: mean |pred - target|.
- ``focal``: an error-weighted L1 that focuses on hard pixels: w = (|e| / mean|e|)^gamma (gamma = 1, weights
  detached so they only re-weight), loss = mean(w |e|). Equals L1 when all errors are equal.
- ``fft``: L1 between the 2-D FFT magnitudes (orthonormal FFT, so it is on the pixels' scale).
- ``ssim``: 1 - SSIM (Gaussian window 11, sigma 1.5, data_range 1; ``pytorch_msssim``'s SSIM, computed as two
  matrix products by :func:`ssim_frames`).
- ``perceptual``: LPIPS (``lpips`` package, AlexNet) when it and its weights are available (the optional
  ``requirements-perceptual.txt``); otherwise the term is off, with one warning, and :func:`movie_loss_spec`
  records it so every results table can say which loss was used. :class:`Perceptual` also accepts any backbone
  returning a list of feature maps (the tests use a small stub).
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS = {"focal": 50.0, "l1": 50.0, "fft": 50.0, "perceptual": 1.0, "ssim": 0.1}

#: named weight sets (``FinetuneConfig.movie_loss``); "paper" is the paper's, the others are measured alternatives
LOSS_PRESETS: dict[str, dict[str, float]] = {
    "paper": WEIGHTS,
    "l1_ssim": {"focal": 0.0, "l1": 1.0, "fft": 0.0, "perceptual": 1.0, "ssim": 1.0},
    "mse_ssim": {"focal": 0.0, "l1": 0.0, "mse": 1.0, "fft": 0.0, "perceptual": 1.0, "ssim": 1.0},
    "mse": {"focal": 0.0, "l1": 0.0, "mse": 1.0, "fft": 0.0, "perceptual": 0.0, "ssim": 0.0},
    "ssim": {"focal": 0.0, "l1": 0.0, "fft": 0.0, "perceptual": 1.0, "ssim": 1.0},
}


def l1(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean()


def focal(pred: Tensor, target: Tensor, gamma: float = 1.0) -> Tensor:
    err = (pred - target).abs()
    w = (err / (err.mean() + 1e-8)).detach() ** gamma
    return (w * err).mean()


def fft(pred: Tensor, target: Tensor) -> Tensor:
    return (torch.fft.fft2(pred.float(), norm="ortho").abs() - torch.fft.fft2(target.float(), norm="ortho").abs()
            ).abs().mean()


@functools.lru_cache(maxsize=16)
def _gaussian_band(n: int, device: torch.device, size: int = 11, sigma: float = 1.5) -> Tensor:
    """``(n - size + 1, n)``: row i holds the 1-D Gaussian window (pytorch_msssim's ``_fspecial_gauss_1d``) at
    columns i..i+size-1, so ``band @ x`` is the 'valid' Gaussian filter along x's first axis. Axes shorter than the
    window are left unfiltered (identity), as pytorch_msssim does."""
    if n < size:
        return torch.eye(n, device=device)
    coords = torch.arange(size, dtype=torch.float) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    band = torch.zeros(n - size + 1, n)
    for i in range(n - size + 1):
        band[i, i:i + size] = g
    return band.to(device)


def ssim_frames(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """SSIM per frame ``(B, H, W) -> (B,)``: Gaussian window 11, sigma 1.5, K = (0.01, 0.03), 'valid' filtering -
    pytorch_msssim's ``ssim`` (equal to ~1e-6, tested), with the separable Gaussian filter as two small matrix
    products over the five maps at once instead of ten grouped 1-channel convolutions (the loss's SSIM was ~13 % of
    a demo movie training step on CPU; ``benchmarks/ssim_loss.py``)."""
    x, y = pred.float(), target.float()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    gh = _gaussian_band(x.shape[-2], x.device)
    gw = _gaussian_band(x.shape[-1], x.device)
    mu1, mu2, xx, yy, xy = gh @ torch.stack([x, y, x * x, y * y, x * y]) @ gw.T  # 5 x (B, H', W')
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    cs = (2 * (xy - mu12) + c2) / ((xx - mu1_sq) + (yy - mu2_sq) + c2)
    return (((2 * mu12 + c1) / (mu1_sq + mu2_sq + c1)) * cs).flatten(1).mean(1)


def ssim_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - SSIM (:func:`ssim_frames`, batch mean), always in float32: under bf16 autocast the Gaussian filters
    would run in bf16 and the variance E[x^2] - E[x]^2 cancels to <= 0 (SSIM -inf, NaN gradients: measured on CPU
    and on an H100)."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        return 1.0 - ssim_frames(pred, target).mean()


class Perceptual(nn.Module):
    """LPIPS-style distance: unit-normalise each feature map over channels, squared difference, spatial and
    channel mean, summed over layers. ``backbone(x (B, 3, H, W) in [-1, 1]) -> list[(B, C, h, w)]``."""

    def __init__(self, backbone: Callable[[Tensor], list[Tensor]]) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        x = torch.cat([pred, target])[:, None].expand(-1, 3, -1, -1) * 2 - 1
        feats = self.backbone(x)
        total = pred.new_zeros(())
        for f in feats:
            f = f / (f.norm(dim=1, keepdim=True) + 1e-10)
            a, b = f.chunk(2)
            total = total + ((a - b) ** 2).sum(1).mean()
        return total


_WARNED = False


def load_lpips() -> nn.Module | None:
    """``lpips.LPIPS(net="alex")`` if the package and its weights load, else None with one clear warning."""
    global _WARNED
    try:
        import lpips  # noqa: F401  (optional: requirements-perceptual.txt)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = lpips.LPIPS(net="alex", verbose=False)
        return model.eval().requires_grad_(False)
    except Exception as err:  # noqa: BLE001 - ImportError, missing torchvision, no weights offline
        if not _WARNED:
            warnings.warn(f"perceptual (LPIPS) term is OFF: {type(err).__name__}: {err}. Install "
                          "requirements-perceptual.txt on a machine whose torchvision matches torch.", stacklevel=2)
            _WARNED = True
        return None


def mse(pred: Tensor, target: Tensor) -> Tensor:
    return ((pred - target) ** 2).mean()


TERMS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"focal": focal, "l1": l1, "mse": mse, "fft": fft,
                                                         "ssim": ssim_loss}
_LABELS = {"focal": "focal", "l1": "L1", "mse": "MSE", "fft": "FFT", "perceptual": "LPIPS", "ssim": "(1-SSIM)"}


class MovieLoss(nn.Module):
    """The weighted movie loss. ``forward`` returns ``(loss, {term: value})``; terms with weight 0 are skipped.

    Args:
        preset: a name of :data:`LOSS_PRESETS` (ignored when ``weights`` is given).
    """

    def __init__(self, perceptual: nn.Module | None = None, weights: dict[str, float] | None = None,
                 preset: str = "paper") -> None:
        super().__init__()
        if weights is None:
            if preset not in LOSS_PRESETS:
                raise ValueError(f"unknown movie loss preset {preset!r}; choose one of {', '.join(LOSS_PRESETS)}")
            weights = LOSS_PRESETS[preset]
        self.weights = {k: float(v) for k, v in weights.items()}
        self.perceptual = perceptual
        if perceptual is None:
            self.weights["perceptual"] = 0.0

    @property
    def spec(self) -> str:
        """Which terms are on, e.g. ``50 focal + 50 L1 + 50 FFT + 0.1 (1-SSIM) [no perceptual: lpips unavailable]``."""
        if self.weights == {**WEIGHTS, "perceptual": self.weights.get("perceptual", 0.0)}:
            return movie_loss_spec(self.perceptual is not None)
        on = [f"{w:g} {_LABELS[k]}" for k, w in self.weights.items() if w]
        return " + ".join(on) + ("" if self.perceptual is not None else " [perceptual off: lpips unavailable]")

    def _perceptual(self, pred: Tensor, target: Tensor) -> Tensor:
        if isinstance(self.perceptual, Perceptual):
            return self.perceptual(pred, target)
        rgb = lambda x: x[:, None].expand(-1, 3, -1, -1) * 2 - 1  # noqa: E731  (lpips.LPIPS: 3 channels in [-1, 1])
        return self.perceptual(rgb(pred), rgb(target)).mean()

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        terms = {k: f(pred, target) for k, f in TERMS.items() if self.weights.get(k, 0.0)}
        if self.weights.get("perceptual", 0.0):  # 0 when there is no backbone (__init__)
            terms["perceptual"] = self._perceptual(pred, target)
        loss = sum(self.weights.get(k, 0.0) * v for k, v in terms.items())
        return loss, {k: float(v.detach()) for k, v in terms.items()}


def movie_loss_spec(with_perceptual: bool) -> str:
    base = "50 focal + 50 L1 + 50 FFT + 0.1 (1-SSIM)"
    return base.replace(" + 0.1", " + LPIPS + 0.1") if with_perceptual else base + " [perceptual off: lpips unavailable]"


def grating_loss(logits: Tensor, direction: Tensor) -> Tensor:
    """Standard cross-entropy over the 8 directions."""
    return F.cross_entropy(logits.float(), direction)
