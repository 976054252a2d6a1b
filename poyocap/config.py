"""One frozen configuration tree with three presets: ``smoke``, ``demo`` and ``paper``.

Every artifact stores ``Config.to_dict()`` next to itself, so a figure or a checkpoint can always be traced back
to the exact settings (and seed) that made it. Presets are built with :func:`dataclasses.replace` from the defaults,
so the difference between two scales is visible in one place.

Example::

    cfg = Config.for_scale("demo")
    cfg2 = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert cfg == cfg2
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

#: The 13 Cre lines of the Allen Brain Observatory Visual Coding 2-photon data set, in ABO order.
ALL_CRE_LINES: tuple[str, ...] = (
    "Emx1-IRES-Cre",
    "Slc17a7-IRES2-Cre",
    "Cux2-CreERT2",
    "Rorb-IRES2-Cre",
    "Scnn1a-Tg3-Cre",
    "Nr5a1-Cre",
    "Rbp4-Cre_KL100",
    "Fezf2-CreER",
    "Tlx3-Cre_PL56",
    "Ntsr1-Cre_GN220",
    "Sst-IRES-Cre",
    "Vip-IRES-Cre",
    "Pvalb-IRES-Cre",
)

#: The authors' hard-coded predictable lines (used only by ``--partition paper``).
PAPER_PREDICTABLE_LINES: tuple[str, ...] = (
    "Sst-IRES-Cre",
    "Vip-IRES-Cre",
    "Pvalb-IRES-Cre",
    "Ntsr1-Cre_GN220",
)

SCALES: tuple[str, ...] = ("smoke", "demo", "paper")
SOURCES: tuple[str, ...] = ("synthetic", "allen")


@dataclass(frozen=True)
class DataConfig:
    """Which recordings exist and how windows are cut from them."""

    source: str = "synthetic"
    cre_lines: tuple[str, ...] = ALL_CRE_LINES
    mice_per_line: int = 3
    sessions_per_mouse: int = 1
    cell_count_scale: float = 0.3  # fraction of the realistic ROI count per session (synthetic only)
    grating_repeats: int = 3  # ABO: 15 repeats of each of the 40 conditions
    movie_repeats: int = 10  # ABO: natural movie one shown 10 times
    movie_frames: int = 900  # ABO: 900 frames = 30 s at 30 fps
    frame_height: int = 32
    frame_width: int = 64
    sampling_rate_hz: float = 30.0
    max_sessions_per_line: int = 0  # allen only: 0 = all
    pretrain_window_s: float = 1.0
    movie_window_s: float = 0.3  # decoding window ends shortly after the decoded frame
    movie_lag_s: float = 0.1  # how far past the frame onset the window ends (calcium lags the stimulus)
    max_units: int = 64  # unit dropout cap (ROIs per window)
    novel_frames_fraction: float = 0.1  # contiguous block of movie frames never seen in training


@dataclass(frozen=True)
class FilterConfig:
    """Regularity filtering: statistics, knee detection, partition."""

    partition: str = "computed"  # "computed" (knee detection) or "paper" (the authors' four lines)
    kurtosis_convention: str = "pearson"  # "pearson" (normal = 3) or "excess" (normal = 0)
    knee_sensitivity: float = 1.0  # kneed's S
    n_bootstrap: int = 200
    sensitivity_grid: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0)


@dataclass(frozen=True)
class EncoderConfig:
    """POYO+ calcium encoder sizes."""

    dim: int = 64
    depth: int = 2
    cross_heads: int = 2
    self_heads: int = 4
    latents_per_step: int = 4
    latent_step_s: float = 0.25  # latents per window = latents_per_step * window / step
    dropout: float = 0.1
    # "grid": O(B H L T U e) factorised cross-attention, never builds per-token embeddings (fastest on CPU);
    # "tokens": materialise the (B, T*U, D) tokens and use fused SDPA (fewer, larger kernels: GPUs);
    # "auto": grid on CPU and for wide models on CUDA, tokens for narrow models (dim <= 256) on CUDA - the faster
    # path in benchmarks/encoder_throughput.py on an H200 (demo size: tokens 1.31x torch_brain, grid 0.97x;
    # paper size: grid 0.92x, tokens 0.56x). All three give the same numbers (tested).
    cross_attention: str = "auto"


@dataclass(frozen=True)
class PretrainConfig:
    """Latent causal temporal masked modelling."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    grad_clip: float = 1.0
    mask_ratio: float = 0.5
    mask_mode: str = "causal"  # "causal" (last 50% by time) | "random" | "channel" (the authors' code)
    recon_loss: str = "l1"  # "l1" (paper) | "mse" (authors' code)
    ce_weight: float = 0.01  # 0 = "masking only"
    target: str = "shared"  # "shared" (stop-grad twin) | "ema"
    ema_decay: float = 0.996
    snapshot_every: int = 50


@dataclass(frozen=True)
class FinetuneConfig:
    """Downstream fine-tuning (movie frames, grating directions). Scratch baselines get ``steps + pretrain.steps``."""

    steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    encoder_lr_scale: float = 1.0
    frozen_warmup_steps: int = 0
    weight_decay: float = 0.05
    warmup_steps: int = 30
    grad_clip: float = 1.0
    eval_every: int = 50
    unet_channels: int = 32  # channels of the U-Net's 2 x 4 start map (halved per stage)
    max_eval_windows: int = 3000  # test/val sets are subsampled evenly to at most this many windows


@dataclass(frozen=True)
class EvalConfig:
    """Seeds and statistics shared by every table."""

    seeds: tuple[int, ...] = (0, 1, 2)
    ci_level: float = 0.95
    n_bootstrap: int = 1000
    frame_id_k: int = 30  # frame identification "within +-k frames" (POYO+: +-30 of 900)


@dataclass(frozen=True)
class Config:
    """The whole tree. ``scale`` names the preset it came from."""

    scale: str = "demo"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    filtering: FilterConfig = field(default_factory=FilterConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ----------------------------------------------------------------------------------------------- presets
    @staticmethod
    def for_scale(name: str) -> "Config":
        """The preset called ``name`` (``smoke``, ``demo`` or ``paper``)."""
        presets = {"smoke": smoke, "demo": demo, "paper": paper}
        if name not in presets:
            raise ValueError(f"unknown scale {name!r}; choose one of {', '.join(SCALES)}")
        return presets[name]()

    # ----------------------------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Config":
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError`` so stale artifacts are noticed."""
        return _build(Config, d)

    def digest(self, *sections: str) -> str:
        """Short hash of the whole config, or of the named sections only (used in artifact paths)."""
        d = self.to_dict()
        payload = d if not sections else {k: d[k] for k in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]

    def with_overrides(self, **sections: dict[str, Any]) -> "Config":
        """``cfg.with_overrides(data={"source": "allen"}, seed=1)``: returns a new, still frozen config."""
        top: dict[str, Any] = {}
        for key, value in sections.items():
            current = getattr(self, key)
            if dataclasses.is_dataclass(current):
                top[key] = replace(current, **value)
            else:
                top[key] = value
        return replace(self, **top)

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if self.data.source not in SOURCES:
            raise ValueError(f"data.source must be one of {SOURCES}, got {self.data.source!r}")
        unknown = set(self.data.cre_lines) - set(ALL_CRE_LINES)
        if unknown:
            raise ValueError(f"unknown Cre lines: {sorted(unknown)}")
        if self.filtering.partition not in ("computed", "paper"):
            raise ValueError("filtering.partition must be 'computed' or 'paper'")
        if self.filtering.kurtosis_convention not in ("pearson", "excess"):
            raise ValueError("filtering.kurtosis_convention must be 'pearson' or 'excess'")
        if self.encoder.cross_attention not in ("auto", "grid", "tokens"):
            raise ValueError("encoder.cross_attention must be 'auto', 'grid' or 'tokens'")
        if self.pretrain.mask_mode not in ("causal", "random", "channel"):
            raise ValueError("pretrain.mask_mode must be 'causal', 'random' or 'channel'")
        if not 0.0 < self.pretrain.mask_ratio < 1.0:
            raise ValueError("pretrain.mask_ratio must be in (0, 1)")


def _build(cls: type, d: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in d.items():
        if key not in fields:
            raise TypeError(f"{cls.__name__} has no field {key!r} (artifact from another version?)")
        default = getattr(cls(), key) if key != "scale" else None
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value)
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def demo() -> Config:
    """The default: synthetic observatory, 13 lines, ~30 minutes on 2 CPU cores for every notebook."""
    return Config(scale="demo")


def smoke() -> Config:
    """Tiny but complete: all 13 lines, 2 mice per line, 2 seeds; used by tests, nbval and CI."""
    base = demo()
    return replace(
        base,
        scale="smoke",
        data=replace(
            base.data,
            mice_per_line=2,
            cell_count_scale=0.08,
            grating_repeats=1,
            movie_repeats=10,
            movie_frames=300,
            frame_height=16,
            frame_width=32,
            max_units=32,
        ),
        filtering=replace(base.filtering, n_bootstrap=50),
        encoder=replace(base.encoder, dim=32, depth=1, self_heads=2),
        pretrain=replace(base.pretrain, steps=20, batch_size=16, warmup_steps=2, snapshot_every=10),
        finetune=replace(base.finetune, steps=20, batch_size=16, warmup_steps=2, eval_every=10, unet_channels=16),
        eval=replace(base.eval, seeds=(0, 1), n_bootstrap=200, frame_id_k=10),
    )


def paper() -> Config:
    """The authors' sizes on real Allen data (GPU; see README)."""
    base = demo()
    return replace(
        base,
        scale="paper",
        data=replace(
            base.data,
            source="allen",
            mice_per_line=0,
            cell_count_scale=1.0,
            grating_repeats=15,
            frame_height=128,
            frame_width=256,
            pretrain_window_s=1.9,
            movie_window_s=1.0 / 30.0,
            max_units=300,
        ),
        filtering=replace(base.filtering, n_bootstrap=1000),
        encoder=EncoderConfig(
            dim=1024, depth=6, cross_heads=2, self_heads=8, latents_per_step=16, latent_step_s=0.125, dropout=0.2,
        ),
        pretrain=replace(base.pretrain, steps=50_000, batch_size=32, lr=2e-4, warmup_steps=1000, snapshot_every=1000),
        finetune=replace(base.finetune, steps=50_000, batch_size=32, lr=2e-4, warmup_steps=1000, eval_every=1000,
                         unet_channels=128),
        eval=replace(base.eval, n_bootstrap=10_000),
    )
