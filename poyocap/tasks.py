"""Downstream tasks: what fine-tuning decodes and how it is scored.

A :class:`DownstreamTask` owns everything task-specific - its windows, its datasets, the decoder it builds, the
targets and predictions it compares, the per-item headline score and the extra test metrics - so the fine-tuning
stage, the main table and the analyses never switch on the task's name. Two tasks exist:

- :class:`MovieTask`: natural-movie frame reconstruction (``MovieDecoder``), headline SSIM per frame.
- :class:`GratingTask`: drifting-grating direction (``GratingDecoder``, 8 classes), headline accuracy.

Adding a task = one subclass + one entry in :data:`TASKS` (``docs/architecture.md``).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .config import Config
from .data.profiles import response_profiles
from .data.recording import Recording
from .data.splits import SPLIT_CODE, build_splits
from .data.windows import UnitVocab, WindowDataset, WindowTable, grating_windows, movie_windows
from .evaluate import confusion_matrix, frame_identification, pixel_correlation, ssim_per_frame, ssim_torchmetrics
from .finetune import GratingDecoder, MovieDecoder, linear_probe_head, mean_frame
from .losses import MovieLoss, load_lpips
from .model.unit_init import profile_embeddings
from .train import eval_batches

#: ``predict_split(split)`` -> (predictions, targets) of a model on that split of the evaluation pool
SplitPredictor = Callable[[str], tuple[Tensor, Tensor]]


class DownstreamTask:
    """Base class; subclasses set the class attributes and the task-specific methods."""

    name: ClassVar[str]
    metric: ClassVar[str]  # headline metric column of the per-seed table ("ssim", "accuracy")
    label: ClassVar[str]  # its short label in the main table ("ssim", "acc")
    curve_label: ClassVar[str]  # y label of the learning curves
    with_images: ClassVar[bool] = False
    table_extras: ClassVar[tuple[str, ...]] = ()  # extra test metrics the main table averages over seeds

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    # ------------------------------------------------------------------------------------------- data
    def windows(self, recordings: Sequence[Recording]) -> WindowTable:
        """Every window of this task in ``recordings``, with its split."""
        raise NotImplementedError

    def dataset(self, recordings: Sequence[Recording], table: WindowTable, split: str, vocab: UnitVocab,
                train: bool = False) -> WindowDataset:
        return WindowDataset(recordings, table, split, vocab, self.cfg.data.max_units, train=train,
                             with_images=self.with_images, seed=self.cfg.seed,
                             normalize=self.cfg.data.normalize == "zscore")

    # ------------------------------------------------------------------------------------------ model
    @property
    def loss_spec(self) -> str:
        raise NotImplementedError

    def decoder(self, n_sessions: int = 0, variant: Mapping[str, Any] | None = None
                ) -> tuple[type[nn.Module], dict[str, Any]]:
        """The decoder class and its keyword arguments (``cls(encoder, **kwargs)``, or ``load_pretrained``).
        ``variant``: decoder options of an ablation row (movie: ``inject``, ``pixel_decoder``)."""
        raise NotImplementedError

    def build(self, encoder: nn.Module, n_sessions: int = 0, variant: Mapping[str, Any] | None = None) -> nn.Module:
        """The decoder on ``encoder``; ``n_sessions`` rows of session embeddings (when the config uses them)."""
        cls, kwargs = self.decoder(n_sessions, variant)
        return cls(encoder, **kwargs)

    def _decoder_kwargs(self, n_sessions: int) -> dict[str, Any]:
        fc = self.cfg.finetune
        return {"encoder_lr_scale": fc.encoder_lr_scale, "head_lr_scale": fc.head_lr_scale,
                "unit_lr_scale": fc.unit_lr_scale,
                "n_sessions": n_sessions if fc.session_embedding else 0,
                "session_centring": n_sessions if fc.session_centring else 0}

    profile_condition: ClassVar[str] = ""  # what a unit's response profile is averaged over (finetune.unit_init)

    def initialise(self, model: nn.Module, recordings: Sequence[Recording], table: WindowTable,
                   vocab: UnitVocab) -> None:
        """Data-dependent initialisation of a freshly built decoder (before training), from ``table``'s training
        windows only. With ``finetune.unit_init == "response"`` the embeddings of the units of ``recordings``
        (rows of ``vocab``) start from their stimulus-response profiles (:mod:`poyocap.model.unit_init`)."""
        if self.cfg.finetune.unit_init == "random":
            return
        ids, profiles = response_profiles(recordings, table, self.profile_condition)
        emb = model.encoder.unit_emb.weight
        init, usable = profile_embeddings(profiles, emb.shape[1], seed=self.cfg.seed)
        rows = torch.from_numpy(vocab.lookup(ids))
        with torch.no_grad():
            emb[rows[usable]] = init[usable].to(emb.device, emb.dtype)

    # ----------------------------------------------------------------------------------------- scoring
    def target(self, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def prediction(self, output: Tensor) -> Tensor:
        """What the decoder's ``predict`` output is compared with the target as."""
        return output

    @torch.no_grad()
    def predict(self, model: nn.Module, dataset: WindowDataset, batch_size: int = 128) -> tuple[Tensor, Tensor]:
        """Predictions and targets for every window of ``dataset``, in order (empty tensors for no window)."""
        if len(dataset) == 0:
            return torch.zeros(0), torch.zeros(0)
        model.eval()
        device = next(model.parameters()).device  # batches go to the model (GPU runs), results come back to CPU
        preds, targets = [], []
        for batch in eval_batches(dataset, batch_size):
            out = self.prediction(model.predict({k: v.to(device) for k, v in batch.items()}))
            preds.append((out.float() if out.is_floating_point() else out).cpu())
            targets.append(self.target(batch))
        model.train()
        return torch.cat(preds), torch.cat(targets)

    def score_items(self, pred: Tensor, target: Tensor) -> np.ndarray:
        """Per-item headline score ``(N,)``."""
        raise NotImplementedError

    def test_metrics(self, pred: Tensor, target: Tensor, per_item: np.ndarray, test: WindowDataset,
                     predict_split: SplitPredictor) -> dict[str, Any]:
        """The headline metric (mean per-item score) and the task's extra metrics on the test set."""
        return {self.metric: float(per_item.mean())}

    def constant_metrics(self, pred: Tensor, target: Tensor, per_item: np.ndarray) -> dict[str, Any]:
        """Metrics of a :meth:`constant_prediction` (those that need a model are left out)."""
        return {self.metric: float(per_item.mean())}

    def examples(self, pred: Tensor) -> Tensor:
        """What the notebooks show of the first seed's predictions."""
        return pred

    def constant_prediction(self, recordings: Sequence[Recording], table: WindowTable, target: Tensor
                            ) -> Tensor | None:
        """A prediction that ignores the neurons (a floor), ``target``-shaped; None if the task has none."""
        return None


def prediction_diversity(pred: Tensor, target: Tensor) -> float:
    """How much predictions vary across items relative to the truth: per-pixel SD over items of ``pred (N, H, W)``
    divided by that of ``target``, averaged over pixels (0 = one constant frame; a posterior mean is < 1)."""
    return float(pred.float().std(0).mean() / target.float().std(0).mean().clamp_min(1e-12))


class MovieTask(DownstreamTask):
    name, metric, label, curve_label, with_images = "movie", "ssim", "ssim", "SSIM", True
    profile_condition = "frame"
    table_extras = ("ssim_novel", "ssim_torchmetrics", "pixel_corr", "frame_id", "frame_id_k", "diversity")

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.loss = MovieLoss(load_lpips(), preset=cfg.finetune.movie_loss)

    def windows(self, recordings: Sequence[Recording]) -> WindowTable:
        splits = build_splits(recordings, self.cfg.data.novel_frames_fraction)
        return movie_windows(recordings, splits, self.cfg.data.movie_window_s, self.cfg.data.movie_lag_s)

    @property
    def loss_spec(self) -> str:
        return self.loss.spec

    def decoder(self, n_sessions: int = 0, variant: Mapping[str, Any] | None = None
                ) -> tuple[type[nn.Module], dict[str, Any]]:
        extra = {k: v for k, v in (variant or {}).items() if k in ("inject", "pixel_decoder")}
        return MovieDecoder, {"frame_hw": (self.cfg.data.frame_height, self.cfg.data.frame_width), "loss": self.loss,
                              "channels": self.cfg.finetune.unet_channels,
                              "n_queries": self.cfg.finetune.readout_queries, **self._decoder_kwargs(n_sessions),
                              **extra}

    def initialise(self, model: nn.Module, recordings: Sequence[Recording], table: WindowTable,
                   vocab: UnitVocab) -> None:
        """The base initialisation, and the U-Net starts at the mean training frame (``MovieUNet.set_prior``;
        ``finetune.mean_frame_prior``)."""
        super().initialise(model, recordings, table, vocab)
        if self.cfg.finetune.mean_frame_prior:
            model.unet.set_prior(self.mean_training_frame(recordings, table))

    def target(self, batch: dict[str, Tensor]) -> Tensor:
        return batch["image"]

    def score_items(self, pred: Tensor, target: Tensor) -> np.ndarray:
        return ssim_per_frame(pred, target)

    def test_metrics(self, pred: Tensor, target: Tensor, per_item: np.ndarray, test: WindowDataset,
                     predict_split: SplitPredictor) -> dict[str, Any]:
        """SSIM (ours and the authors' torchmetrics variant), pixel correlation, frame identification among the
        test frames (exact and within +-k), SSIM on the novel-frames block."""
        out = {"ssim": float(per_item.mean()), "ssim_torchmetrics": ssim_torchmetrics(pred, target),
               "pixel_corr": float(pixel_correlation(pred, target).mean()),
               "diversity": prediction_diversity(pred, target)}
        frames = test.table.frame
        candidates = np.unique(frames)
        movie = torch.from_numpy(test.recordings[0].movie[candidates].astype(np.float32) / 255.0)
        exact, near = frame_identification(pred, frames, candidates, movie, k=self.cfg.eval.frame_id_k)
        out.update(frame_id=float(exact.mean()), frame_id_k=float(near.mean()))
        pn, tn = predict_split("novel")
        if len(tn):
            out["ssim_novel"] = float(ssim_per_frame(pn, tn).mean())
        return out

    def constant_metrics(self, pred: Tensor, target: Tensor, per_item: np.ndarray) -> dict[str, Any]:
        nan = float("nan")  # pixel correlation / frame identity are not meaningful for one constant frame
        return {"ssim": float(per_item.mean()), "ssim_torchmetrics": ssim_torchmetrics(pred, target),
                "pixel_corr": nan, "frame_id": nan, "frame_id_k": nan, "diversity": 0.0}

    def examples(self, pred: Tensor) -> Tensor:
        return pred[:64]

    @staticmethod
    def mean_training_frame(recordings: Sequence[Recording], table: WindowTable) -> Tensor:
        """The mean of the movie frames decoded by ``table``'s training windows, float32 (H, W) in [0, 1]."""
        train_frames = np.unique(table.frame[table.split == SPLIT_CODE["train"]])
        return torch.from_numpy(mean_frame(recordings[0].movie[train_frames]).astype(np.float32) / 255.0)

    def constant_prediction(self, recordings: Sequence[Recording], table: WindowTable, target: Tensor
                            ) -> Tensor | None:
        """The mean training frame, for every test item."""
        return self.mean_training_frame(recordings, table)[None].expand_as(target)


class GratingTask(DownstreamTask):
    name, metric, label, curve_label = "gratings", "accuracy", "acc", "accuracy"
    profile_condition = "direction"

    def windows(self, recordings: Sequence[Recording]) -> WindowTable:
        splits = build_splits(recordings, self.cfg.data.novel_frames_fraction)
        d = self.cfg.data
        return grating_windows(recordings, splits, d.grating_window_s or d.pretrain_window_s, d.grating_offset_s)

    @property
    def loss_spec(self) -> str:
        return "cross-entropy (8 directions)"

    def decoder(self, n_sessions: int = 0, variant: Mapping[str, Any] | None = None
                ) -> tuple[type[nn.Module], dict[str, Any]]:
        return GratingDecoder, self._decoder_kwargs(n_sessions)

    def initialise(self, model: nn.Module, recordings: Sequence[Recording], table: WindowTable,
                   vocab: UnitVocab) -> None:
        """The base initialisation, then (``finetune.head_init == "linear_probe"``) the linear head as a logistic
        probe on the initial features of the training windows (:func:`poyocap.finetune.linear_probe_head`)."""
        super().initialise(model, recordings, table, vocab)
        if self.cfg.finetune.head_init == "linear_probe":
            linear_probe_head(model, self.dataset(recordings, table, "train", vocab))

    def target(self, batch: dict[str, Tensor]) -> Tensor:
        return batch["direction"]

    def prediction(self, output: Tensor) -> Tensor:
        return output.argmax(-1)

    def score_items(self, pred: Tensor, target: Tensor) -> np.ndarray:
        return (pred == target).cpu().numpy().astype(float)

    def test_metrics(self, pred: Tensor, target: Tensor, per_item: np.ndarray, test: WindowDataset,
                     predict_split: SplitPredictor) -> dict[str, Any]:
        return {"accuracy": float(per_item.mean()),
                "confusion": confusion_matrix(pred.cpu().numpy(), target.cpu().numpy())}


TASKS: dict[str, type[DownstreamTask]] = {"movie": MovieTask, "gratings": GratingTask}


def get_task(name: str, cfg: Config) -> DownstreamTask:
    """The downstream task called ``name`` (``movie`` or ``gratings``) for ``cfg``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name](cfg)
