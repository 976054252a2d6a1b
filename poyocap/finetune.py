"""Fine-tuning tasks: encoder + readout + loss, as ``forward(batch) -> (loss, metrics)`` for the shared loop.

- :class:`MovieDecoder`: encoder -> query readout at the decoded frame's time -> :class:`MovieUNet` -> frame;
  loss :class:`poyocap.losses.MovieLoss`.
- :class:`GratingDecoder`: encoder -> query readout at the window centre -> 8 directions; cross-entropy.

:func:`load_pretrained` builds either from a pretraining checkpoint the MAE way: the checkpoint holds encoder
weights only, the model is loaded with ``strict=False`` and we assert that exactly the readout's keys are missing
(nothing else, nothing unexpected); then the downstream units are registered with fresh embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .config import Config
from .data.windows import UnitVocab
from .losses import MovieLoss, grating_loss
from .model.baselines import MLPPixelDecoder
from .model.encoder import CalciumEncoder
from .model.readouts import GratingReadout, MovieUNet, QueryReadout, SessionCentring
from .train import ObjectiveBase, eval_batches


class _Decoder(ObjectiveBase):
    """Shared parts: the encoder, the learning-rate groups and the session rows of a batch."""

    encoder: CalciumEncoder
    centring: SessionCentring | None
    encoder_lr_scale: float
    head_lr_scale: float
    unit_lr_scale: float

    def latents(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Z_L ``(B, L, D)`` (session-centred when the decoder has :class:`SessionCentring`) and latent times."""
        _, z_l, lat_t = self.encoder(batch)
        if self.centring is not None:
            z_l = self.centring(z_l, batch["session_index"])
        return z_l, lat_t

    def param_groups(self, lr: float) -> list[dict]:
        """Three groups: [0] the encoder's trunk (``lr * encoder_lr_scale``; a frozen warm-up freezes this group
        only), [1] everything else learned from scratch downstream - readout, decoder, session embeddings
        (``lr * head_lr_scale``), [2] the unit embeddings (``lr * unit_lr_scale``). Unit embeddings are ~0.02 in
        size and each row gets a gradient only in the batches that hold its session; Adam moves every touched row
        by ~lr per step whatever the gradient's size, so at the trunk's LR their noise overwrites them within tens
        of steps (grating training loss stuck at ln 8; ``docs/decoders.md``)."""
        units = "encoder.unit_emb.weight"
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        trunk = [p for n, p in named if n.startswith("encoder.") and n != units]
        rest = [p for n, p in named if not n.startswith("encoder.")]
        unit = [p for n, p in named if n == units]
        return [{"params": trunk, "lr": lr * self.encoder_lr_scale}, {"params": rest, "lr": lr * self.head_lr_scale},
                {"params": unit, "lr": lr * self.unit_lr_scale}]


class MovieDecoder(_Decoder):
    """Neural window -> movie frame in [0, 1]."""

    def __init__(self, encoder: CalciumEncoder, frame_hw: tuple[int, int], loss: MovieLoss, channels: int = 64,
                 inject: bool = True, encoder_lr_scale: float = 1.0, head_lr_scale: float = 1.0,
                 n_sessions: int = 0, n_queries: int = 1, session_centring: int = 0, unit_lr_scale: float = 1.0,
                 pixel_decoder: str = "unet") -> None:
        super().__init__()
        self.encoder = encoder
        d = encoder.cfg.dim
        self.centring = SessionCentring(session_centring, d) if session_centring else None
        self.readout = QueryReadout(d, heads=encoder.cfg.cross_heads, n_sessions=n_sessions, n_queries=n_queries)
        if pixel_decoder not in ("unet", "mlp"):
            raise ValueError(f"pixel_decoder must be 'unet' or 'mlp', got {pixel_decoder!r}")
        # "unet" (latent injection unless inject=False) or "mlp" (the ablation table's MLP decoder); both `unet`
        self.unet = (MovieUNet(d * n_queries, frame_hw, channels=channels, inject=inject) if pixel_decoder == "unet"
                     else MLPPixelDecoder(d * n_queries, frame_hw))
        self.loss = loss
        self.encoder_lr_scale, self.head_lr_scale, self.unit_lr_scale = encoder_lr_scale, head_lr_scale, unit_lr_scale

    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        z_l, lat_t = self.latents(batch)
        vec = self.readout(z_l, lat_t, batch["frame_time"][:, None], batch.get("session_index"))  # (B, K, D)
        return self.unet(vec.flatten(1))

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        return self.loss(self.predict(batch), batch["image"])


class GratingDecoder(_Decoder):
    """Neural window at a grating trial -> 8 direction logits."""

    def __init__(self, encoder: CalciumEncoder, encoder_lr_scale: float = 1.0, head_lr_scale: float = 1.0,
                 n_sessions: int = 0, session_centring: int = 0, unit_lr_scale: float = 1.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.centring = SessionCentring(session_centring, encoder.cfg.dim) if session_centring else None
        self.readout = GratingReadout(encoder.cfg.dim, heads=encoder.cfg.cross_heads, n_sessions=n_sessions)
        self.encoder_lr_scale, self.head_lr_scale, self.unit_lr_scale = encoder_lr_scale, head_lr_scale, unit_lr_scale

    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        z_l, lat_t = self.latents(batch)
        return self.readout(z_l, lat_t, batch["window_s"] / 2, batch.get("session_index"))

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logits = self.predict(batch)
        loss = grating_loss(logits, batch["direction"])
        return loss, {"acc": float((logits.argmax(-1) == batch["direction"]).float().mean())}


@torch.no_grad()
def linear_probe_head(model: GratingDecoder, dataset: Dataset, batch_size: int = 128, c: float = 1.0) -> float:
    """Start ``model``'s linear head as a logistic regression on the model's own initial features (LP-FT, Kumar et
    al. 2022): the first fine-tuning steps then push the encoder in directions that already separate the classes,
    instead of waiting for a random head. ``dataset``: training windows (no augmentation).

    The session-centring statistics are first filled from ``dataset`` (a training-mode pass without gradients),
    then features ``LayerNorm(readout query output) (N, D)`` are taken in eval mode, a multinomial logistic
    regression (scikit-learn, L2 with inverse strength ``c``) is fitted to the directions, and its weights are copied
    into ``model.readout.classify``. Returns the probe's training accuracy.
    """
    from sklearn.linear_model import LogisticRegression  # imported here: scikit-learn is slow to import

    if not isinstance(model, GratingDecoder):
        raise TypeError(f"linear_probe_head needs a GratingDecoder, got {type(model).__name__}")
    device = next(model.parameters()).device
    batches = [{k: v.to(device) for k, v in b.items()} for b in eval_batches(dataset, batch_size)]
    if not batches:
        raise ValueError("linear_probe_head: no training windows")
    was_training = model.training
    if model.centring is not None:
        model.train()
        for b in batches:  # fills each session's running mean (SessionCentring updates in training mode)
            model.latents(b)
    model.eval()
    feats, labels = [], []
    for b in batches:
        z_l, lat_t = model.latents(b)
        feats.append(model.readout.features(z_l, lat_t, b["window_s"] / 2, b.get("session_index")).float().cpu())
        labels.append(b["direction"].cpu())
    x, y = torch.cat(feats).numpy(), torch.cat(labels).numpy()
    if len(np.unique(y)) < 2:
        raise ValueError("linear_probe_head: the training windows hold fewer than 2 directions")
    probe = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    linear = model.readout.classify[1]
    coef, intercept = probe.coef_, probe.intercept_
    if len(probe.classes_) == 2:  # scikit-learn's binary case: one row, for the second class
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
    # a direction absent from the training windows gets a zero row and a bias below every fitted one
    weight = np.zeros((linear.out_features, x.shape[1]), np.float32)
    bias = np.full(linear.out_features, float(intercept.min()) - 5.0, np.float32)
    weight[probe.classes_], bias[probe.classes_] = coef, intercept
    linear.weight.copy_(torch.from_numpy(weight))
    linear.bias.copy_(torch.from_numpy(bias))
    model.train(was_training)
    return float(probe.score(x, y))


def load_pretrained(path: str | Path, cfg: Config, new_unit_ids: Sequence[str],
                    build: type[nn.Module], **build_kwargs) -> tuple[nn.Module, UnitVocab, list[str]]:
    """Model ``build(encoder, **build_kwargs)`` initialised from a pretraining checkpoint.

    Returns ``(model, vocab, missing_keys)``; raises ``RuntimeError`` if any encoder weight is missing or any key is
    unexpected. ``new_unit_ids`` (downstream units) are appended to the vocabulary with fresh embeddings.
    """
    saved = torch.load(path, map_location="cpu", weights_only=False)
    vocab = UnitVocab(saved["vocab"])
    model = build(CalciumEncoder(cfg.encoder, len(vocab)), **build_kwargs)
    state = {f"encoder.{k}": v for k, v in saved["encoder"].items()}
    result = model.load_state_dict(state, strict=False)
    readout_keys = sorted(k for k in model.state_dict() if not k.startswith("encoder.") and not k.startswith("loss."))
    missing = sorted(k for k in result.missing_keys if not k.startswith("loss."))
    if result.unexpected_keys or missing != readout_keys:
        raise RuntimeError(f"pretrained checkpoint does not fit: unexpected {result.unexpected_keys}, missing "
                           f"{sorted(set(missing) - set(readout_keys))}")
    n_before = len(vocab)
    vocab.extend(list(new_unit_ids))
    if len(vocab) > n_before:
        model.encoder.register_units(len(vocab) - n_before)
    return model, vocab, missing


def mean_frame(images: np.ndarray) -> np.ndarray:
    """The mean-frame floor: the average training frame (H, W)."""
    return images.astype(np.float64).mean(axis=0)
