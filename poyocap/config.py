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
import typing
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Sequence

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

Scale = Literal["smoke", "demo", "paper"]
Source = Literal["synthetic", "allen"]
SCALES: tuple[str, ...] = typing.get_args(Scale)
SOURCES: tuple[str, ...] = typing.get_args(Source)


def stable_digest(payload: Any, length: int = 10) -> str:
    """Short sha256 of a JSON-ready payload (keys sorted): the one digest used for configs and artifact keys."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:length]


def parse_seeds(seeds: str | Sequence[int]) -> tuple[int, ...]:
    """``"0,1,2"`` or ``[0, 1, 2]`` -> ``(0, 1, 2)``; seeds must be distinct integers >= 0 (clear ValueError)."""
    items = [s.strip() for s in seeds.split(",")] if isinstance(seeds, str) else list(seeds)
    try:
        seq = tuple(int(s) for s in items)
    except (TypeError, ValueError):
        raise ValueError(f"seeds must be comma-separated integers such as 0,1,2; got {seeds!r}") from None
    if not seq:
        raise ValueError("seeds must name at least one seed")
    if min(seq) < 0:
        raise ValueError(f"seeds must be >= 0; got {list(seq)}")
    if len(set(seq)) != len(seq):
        raise ValueError(f"seeds must be distinct (a repeated seed gives a zero-width CI); got {list(seq)}")
    return seq


def _check_literals(section: Any) -> None:
    """Every ``Literal[...]`` field of a config dataclass holds one of its allowed values (clear error if not)."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        hint = hints[f.name]
        if typing.get_origin(hint) is Literal:
            allowed = typing.get_args(hint)
            value = getattr(section, f.name)
            if value not in allowed:
                raise ValueError(f"{type(section).__name__}.{f.name} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which recordings exist and how windows are cut from them."""

    source: Source = "synthetic"
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
    grating_window_s: float = 0.0  # grating decoding window; 0 = pretrain_window_s
    grating_offset_s: float = 0.0  # its start relative to the trial onset
    max_units: int = 64  # unit dropout cap (ROIs per window)
    # model input: dF/F as is, or z-scored per ROI (training frames). Demo default zscore (a deviation, paper preset:
    # none): with the population path, movie validation SSIM +0.015 and frame identification 0.306 vs 0.251 (seeds
    # 0-2, docs/decoders.md); the linear references standardise their own raw-dF/F features either way.
    normalize: Literal["none", "zscore"] = "zscore"
    novel_frames_fraction: float = 0.1  # contiguous block of movie frames never seen in training

    def __post_init__(self) -> None:
        _check_literals(self)
        unknown = set(self.cre_lines) - set(ALL_CRE_LINES)
        if unknown:
            raise ValueError(f"unknown Cre lines: {sorted(unknown)}")


@dataclass(frozen=True)
class FilterConfig:
    """Regularity filtering: statistics, knee detection, partition."""

    partition: Literal["computed", "paper"] = "computed"  # knee detection, or the authors' four lines
    kurtosis_convention: Literal["pearson", "excess"] = "pearson"  # normal = 3 / normal = 0
    knee_sensitivity: float = 1.0  # kneed's S
    n_bootstrap: int = 200
    sensitivity_grid: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0)

    def __post_init__(self) -> None:
        _check_literals(self)


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
    # "tokens": materialise the (B, T*U, D) tokens and use fused SDPA; "kv": per-token keys / values built from the
    # grid path's per-unit factorisation (no token matrix, no token LayerNorm or projection), then fused SDPA;
    # "auto": grid on CPU and on CUDA when the cross-attention is wider than 256 (heads x head size), kv otherwise.
    # benchmarks/encoder_throughput.py on an H200 (bf16, batch 32; ratios to torch_brain's CalciumPOYOPlus, which
    # run to run move by ~10 %): paper size with the cross-attention 2 x 128 as torch_brain's, grid 0.94-1.10x,
    # tokens 1.04-1.16x, kv 0.88-1.22x (median 1.14x); at 2 x 512 (cross_dim_head 0) grid 0.80-0.99x, tokens
    # 0.61-0.64x, kv 0.53-0.57x; demo size tokens 1.07-1.24x, kv 1.14-1.15x, grid 0.82-0.90x. All paths give the same
    # numbers (tested).
    cross_attention: Literal["auto", "grid", "tokens", "kv"] = "auto"
    # Width of each cross-attention head. 0: dim / cross_heads (the cross-attention as wide as the model, 2 heads of
    # 512 at dim 1024). torch_brain's CalciumPOYOPlus uses one dim_head (default 64) for every attention, so its
    # token cross-attention is heads x dim_head wide; the authors' config sets dim_head 1024 (2 x 1024). The width,
    # not the implementation, decides the paper-size speed (numbers above).
    cross_dim_head: int = 0
    # Beyond POYO+ (demo default; paper preset off): add each latent step's population vector projected on the unit
    # embeddings to the latent queries (encoder.PopulationPath). Validation, 300 steps, seed 0: gratings 0.221 ->
    # 0.375, movie SSIM 0.256 -> 0.293 (docs/decoders.md).
    population_path: bool = True

    def __post_init__(self) -> None:
        _check_literals(self)
        if self.cross_dim_head < 0 or (self.cross_dim_head == 0 and self.dim % self.cross_heads):
            raise ValueError(f"cross_dim_head {self.cross_dim_head}: must be > 0, or 0 with dim {self.dim} "
                             f"divisible by cross_heads {self.cross_heads}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay (to 10 % of the peak), gradient clipping; the step budget.

    Shared by pretraining and fine-tuning (``PretrainConfig.optim``, ``FinetuneConfig.optim``)."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    grad_clip: float = 1.0


@dataclass(frozen=True)
class PretrainConfig:
    """Latent causal temporal masked modelling."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    mask_ratio: float = 0.5
    mask_mode: Literal["causal", "random", "channel"] = "causal"  # last 50% by time | random | authors' code
    recon_loss: Literal["l1", "mse", "infonce"] = "l1"  # paper | authors' code | contrastive (beyond the paper)
    ce_weight: float = 0.01  # 0 = "masking only"
    # Demo defaults: EMA target + token-level causal masking + per-window centring (beyond the paper, docs/pretraining.md:
    # the only setting that kept eval-mode std and effective rank >= 50 % of init on every seed). Paper preset:
    # the paper's shared twin (target without dropout: a choice the paper leaves open), latent masking, no centring.
    target: Literal["shared", "shared_eval", "ema"] = "ema"  # stop-grad twin | the same without dropout | EMA
    ema_decay: float = 0.996
    # where the mask acts: "latent" (paper: Z_1 latents replaced by a MASK token after the global cross-attention,
    # so unmasked latents have seen the masked half's tokens) | "token" (causal only: the online branch's tokens of
    # the last ``mask_ratio`` of the window are removed before the cross-attention; the target sees every token)
    mask_level: Literal["latent", "token"] = "token"
    predictor: bool = False  # a small MLP on the online (masked) branch before the loss (BYOL / JEPA predictor)
    normalize_target: bool = False  # compare layer-normalised prediction and target (no gain: the target cannot shrink)
    # compare prediction and target minus their own mean over each window's masked latents: the part of Z_L that is
    # constant within a window (mostly which session / units it holds) is then worth nothing to the loss
    centre_per_window: bool = True
    # Beyond the paper (paper preset 0): in training the online branch also loses each window's units with this
    # probability (token masking only). Chosen on the positive control's validation probes: 5 of 6 (seed, probe) wins
    # over random init vs 3 without it (docs/pretraining.md).
    unit_mask_ratio: float = 0.5
    snapshot_every: int = 50
    checkpoint_every: int = 50  # resumable checkpoint (atomic) every this many steps; 0: only at the end

    def __post_init__(self) -> None:
        _check_literals(self)
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError("pretrain.mask_ratio must be in (0, 1)")
        if not 0.0 <= self.unit_mask_ratio < 1.0:
            raise ValueError("pretrain.unit_mask_ratio must be in [0, 1)")
        if self.unit_mask_ratio > 0 and self.mask_level != "token":
            raise ValueError("pretrain.unit_mask_ratio needs mask_level='token' (units are removed from the tokens)")
        if self.mask_level == "token" and self.mask_mode != "causal":
            raise ValueError("pretrain.mask_level='token' needs mask_mode='causal' (tokens are removed by time)")


@dataclass(frozen=True)
class FinetuneConfig:
    """Downstream fine-tuning (movie frames, grating directions). Every method gets ``optim.steps``; one labelled
    scratch row gets ``steps + pretrain.steps`` (``poyocap.methods``)."""

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=300))
    # The demo defaults below deviate from the paper where a validation sweep (tools/decoder_sweep.py,
    # docs/decoders.md) measured a gain at the demo's step budget; the paper preset restores the paper's choices.
    encoder_lr_scale: float = 1.0  # pretrained trunk's LR = lr * this
    head_lr_scale: float = 1.0  # readout, decoder, session embeddings (learned from zero): lr * this
    unit_lr_scale: float = 0.01  # unit embeddings: lr * this (Adam steps of ~lr swamp their 0.02-sized rows)
    session_embedding: bool = True  # POYO+ session embedding added to the readout query (POYO+, the authors' code)
    movie_loss: str = "l1_ssim"  # a preset of poyocap.losses.LOSS_PRESETS ("paper": 50 focal + 50 L1 + ...)
    readout_queries: int = 4  # learned output queries per decoded frame (outputs concatenated for the U-Net)
    mean_frame_prior: bool = True  # the movie decoder's output starts at the mean training frame
    session_centring: bool = True  # subtract each session's running mean latent before the readout (AdaBN-like)
    unit_init: Literal["random", "response"] = "response"  # unit embeddings start from training response profiles ("random": POYO+)
    # gratings: "linear_probe" starts the linear head as a logistic probe on the initial model's features (LP-FT,
    # Kumar et al. 2022). With the population path and z-scored input: validation accuracy at 300 steps 0.387 / 0.368
    # / 0.383 vs 0.348 / 0.383 / 0.375 (seeds 0-2; the worst seed +0.02), docs/decoders.md
    head_init: Literal["random", "linear_probe"] = "linear_probe"
    frozen_warmup_steps: int = 0
    eval_every: int = 50
    checkpoint_every: int = 50  # resumable checkpoint (atomic) every this many steps; 0: only at the end
    unet_channels: int = 16  # channels of the U-Net's 2 x 4 start map (halved per stage); 16 vs 32: 33 vs 37 s per demo run, val SSIM 0.311 vs 0.313
    max_eval_windows: int = 3000  # test/val sets are subsampled evenly to at most this many windows
    # The movie's batch and peak LR (0: ``optim``'s). Validation frame identification, Scratch (all lines), seeds 0 / 1:
    # batch 32 0.243 / 0.247, batch 64 0.282 / 0.286, batch 64 + LR 2e-3 0.291 / 0.298 (per-session ridge 0.283);
    # the SSIM loss as matrix products (losses.ssim_frames) pays for much of the larger batch (docs/decoders.md)
    movie_batch_size: int = 64
    movie_lr: float = 2e-3
    # The movie's steps (0: ``optim``'s). Validation frame identification, seeds 0 / 1: 300 steps 0.272 / 0.267, 450
    # 0.276 / 0.275 (ridge 0.272); the gratings over-fit beyond ~300 and keep ``optim.steps`` (docs/decoders.md).
    movie_steps: int = 450

    def __post_init__(self) -> None:
        _check_literals(self)
        if self.movie_batch_size < 0 or self.movie_lr < 0 or self.movie_steps < 0:
            raise ValueError(f"movie_batch_size, movie_lr and movie_steps must be >= 0 (0: optim's), got "
                             f"{self.movie_batch_size}, {self.movie_lr}, {self.movie_steps}")

    def task_optim(self, task: str, steps: int | None = None) -> OptimConfig:
        """The optimiser settings of ``task`` (``movie`` / ``gratings``): ``optim`` with the movie's own batch size,
        LR and steps where set, and ``steps`` when given (it wins over ``movie_steps``)."""
        optim = self.optim
        if task == "movie":
            optim = replace(optim, batch_size=self.movie_batch_size or optim.batch_size, lr=self.movie_lr or optim.lr,
                            steps=self.movie_steps or optim.steps)
        return optim if steps is None else replace(optim, steps=steps)


@dataclass(frozen=True)
class EvalConfig:
    """Seeds and statistics shared by every table."""

    seeds: tuple[int, ...] = (0, 1, 2)
    ci_level: float = 0.95
    n_bootstrap: int = 1000
    frame_id_k: int = 30  # frame identification "within +-k frames" (POYO+: +-30 of 900)

    def __post_init__(self) -> None:
        parse_seeds(self.seeds)  # distinct integers >= 0


@dataclass(frozen=True)
class Config:
    """The whole tree. ``scale`` names the preset it came from."""

    scale: Scale = "demo"
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
        return stable_digest(d if not sections else {k: d[k] for k in sections})

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
        _check_literals(self)  # each section checks its own fields when it is built


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
    small = OptimConfig(steps=20, batch_size=16, warmup_steps=2)
    return demo().with_overrides(
        scale="smoke",
        data=dict(mice_per_line=2, cell_count_scale=0.08, grating_repeats=1, movie_repeats=10, movie_frames=300,
                  frame_height=16, frame_width=32, max_units=32),
        filtering=dict(n_bootstrap=50),
        encoder=dict(dim=32, depth=1, self_heads=2),
        pretrain=dict(optim=small, snapshot_every=10, checkpoint_every=10),
        finetune=dict(optim=small, eval_every=10, checkpoint_every=10, movie_batch_size=0, movie_lr=0.0, movie_steps=0),
        eval=dict(seeds=(0, 1), n_bootstrap=200, frame_id_k=10),
    )


def paper() -> Config:
    """The authors' sizes on real Allen data (GPU; see README)."""
    optim = OptimConfig(steps=50_000, batch_size=32, lr=2e-4, warmup_steps=1000)
    return demo().with_overrides(
        scale="paper",
        data=dict(source="allen", mice_per_line=0, cell_count_scale=1.0, grating_repeats=15, frame_height=128,
                  frame_width=256, normalize="none", pretrain_window_s=1.9, movie_window_s=1.0 / 30.0, max_units=300),
        filtering=dict(n_bootstrap=1000),
        encoder=dict(dim=1024, depth=6, cross_heads=2, self_heads=8, latents_per_step=16, latent_step_s=0.125,
                     dropout=0.2, population_path=False),
        pretrain=dict(optim=optim, snapshot_every=1000, checkpoint_every=1000, target="shared_eval", mask_level="latent",
                      centre_per_window=False, unit_mask_ratio=0.0),
        finetune=dict(optim=optim, eval_every=1000, checkpoint_every=1000, unet_channels=128, head_lr_scale=1.0,
                      unit_lr_scale=1.0, movie_loss="paper", readout_queries=1, mean_frame_prior=False,
                      session_centring=False, unit_init="random", head_init="random", movie_batch_size=0,
                      movie_lr=0.0, movie_steps=0),
        eval=dict(n_bootstrap=10_000),
    )
