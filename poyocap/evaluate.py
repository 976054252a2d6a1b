"""Evaluation shared by every stage: frozen-latent features and linear probes, pretraining diagnostics, the
movie and grating test metrics (``poyocap.tasks`` calls them), and the across-seed statistics of the tables
(mean +- Student-t CI, paired t-test, paired bootstrap).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from torch.utils.data import Dataset

from .losses import ssim_frames
from .model.encoder import CalciumEncoder
from .model.pretrain import TwinMaskedPretrainer, copy_last_baseline, latent_std
from .train import eval_batches


@torch.no_grad()
def latent_features(encoder: CalciumEncoder, dataset: Dataset, batch_size: int = 64,
                    device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Frozen Z_L of every window, pooled per latent step: ``features (N, S*D)`` plus the windows' targets."""
    encoder.eval().to(device)
    feats, direction, frame = [], [], []
    session = dataset.table.session if hasattr(dataset, "table") else None
    for batch in eval_batches(dataset, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        _, z_l, _ = encoder(batch)
        b, n, d = z_l.shape
        per_step = z_l.view(b, -1, encoder.cfg.latents_per_step, d).mean(2)  # (B, S, D)
        feats.append(per_step.reshape(b, -1).float().cpu().numpy())
        direction.append(batch["direction"].cpu().numpy())
        frame.append(batch["frame"].cpu().numpy())
    if not feats:
        raise ValueError("no windows to extract features from")
    out = {"features": np.concatenate(feats), "direction": np.concatenate(direction),
           "frame": np.concatenate(frame)}
    if session is not None:
        out["session"] = np.asarray(session)
    return out


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 c: float = 0.1) -> float:
    """Accuracy of an L2-regularised multinomial logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_train)) < 2:
        raise ValueError("a probe needs at least two classes in its training set")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
    clf.fit(x_train, y_train)
    return float((clf.predict(x_test) == y_test).mean())


def per_session_probe_scores(train: dict[str, np.ndarray], test: dict[str, np.ndarray], target: str = "direction",
                             c: float = 0.1) -> dict[int, tuple[float, int]]:
    """Linear probe fitted and tested *within* each session (units differ between sessions): session -> (accuracy,
    number of test windows). Sessions with < 2 classes or no test window are skipped."""
    scores = {}
    for s in np.unique(test["session"]):
        tr, te = train["session"] == s, test["session"] == s
        if te.sum() == 0 or len(np.unique(train[target][tr])) < 2:
            continue
        acc = linear_probe(train["features"][tr], train[target][tr], test["features"][te], test[target][te], c=c)
        scores[int(s)] = (float(acc), int(te.sum()))
    return scores


def per_session_probe(train: dict[str, np.ndarray], test: dict[str, np.ndarray], target: str = "direction",
                      c: float = 0.1) -> float:
    """:func:`per_session_probe_scores` averaged over sessions, weighted by their number of test windows."""
    scores = per_session_probe_scores(train, test, target, c)
    total = sum(n for _, n in scores.values())
    if total == 0:
        raise ValueError("no session has both training and test windows for the probe")
    return sum(acc * n for acc, n in scores.values()) / total


@torch.no_grad()
def masked_reconstruction(objective: TwinMaskedPretrainer, dataset: Dataset, batch_size: int = 64,
                          device: torch.device | str = "cpu") -> dict[str, float]:
    """On held-out windows: L1 of the masked-view prediction, of the copy-last-latent baseline, the auxiliary
    head's direction accuracy (windows with a grating trial) and the collapse monitor std(Z_L)."""
    objective.eval().to(device)
    err, base, n, correct, n_lab, stds = 0.0, 0.0, 0, 0, 0, []
    for batch in eval_batches(dataset, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        v = objective.views(batch)
        m = v["mask"]
        pred, target = objective.prediction_and_target(v)
        pred_base = copy_last_baseline(target, m, objective.encoder.cfg.latents_per_step)
        err += float((pred - target).abs()[m].sum())
        base += float((pred_base - target).abs()[m].sum())
        n += int(m.sum()) * target.shape[-1]
        lab = batch["direction"] >= 0
        if lab.any():
            logits = objective.head(v["z_l"][lab].mean(1))
            correct += int((logits.argmax(-1) == batch["direction"][lab]).sum())
            n_lab += int(lab.sum())
        stds.append(float(latent_std(v["z_l"])))
    return {"masked_l1": err / max(n, 1), "copy_last_l1": base / max(n, 1),
            "aux_acc": correct / n_lab if n_lab else float("nan"), "std_zl": float(np.mean(stds))}


# ------------------------------------------------------------------------------------------- movie metrics
def ssim_per_frame(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Headline SSIM per frame: frames in [0, 1], data_range 1, Gaussian window 11, sigma 1.5. ``(N, H, W)`` -> (N,).

    pytorch_msssim's SSIM, computed by :func:`poyocap.losses.ssim_frames` (equal to ~1e-6, tested; 8x faster)."""
    if len(pred) == 0:
        return np.zeros(0)
    with torch.no_grad():
        return torch.cat([ssim_frames(p, t) for p, t in zip(pred.split(512), target.split(512))]).cpu().numpy()


def ssim_torchmetrics(pred: torch.Tensor, target: torch.Tensor) -> float:
    """The authors' variant: torchmetrics ``StructuralSimilarityIndexMeasure()`` with its defaults on 0-255 images
    (data range inferred from the data), averaged over the frames."""
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    metric = StructuralSimilarityIndexMeasure()
    return float(metric((pred[:, None].float() * 255).round(), (target[:, None].float() * 255).round()))


def pixel_correlation(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Pearson correlation of pixels per frame, ``(N, H, W)`` -> (N,)."""
    p = pred.reshape(len(pred), -1).double()
    t = target.reshape(len(target), -1).double()
    p = p - p.mean(1, keepdim=True)
    t = t - t.mean(1, keepdim=True)
    return ((p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + 1e-12)).cpu().numpy()


def frame_identification(pred: torch.Tensor, frame_index: np.ndarray, candidates: np.ndarray,
                         candidate_frames: torch.Tensor, k: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Is each reconstruction closest (pixel correlation) to its own frame among the candidate frames?

    Args:
        pred: reconstructions (N, H, W); frame_index: their true frame ids (N,);
        candidates: candidate frame ids (F,); candidate_frames: those frames (F, H, W).
    Returns per item: exact hit (bool), hit within +-k frames (bool) - as CEBRA / POYO+ report decoding.
    """
    p = pred.reshape(len(pred), -1).double()
    c = candidate_frames.reshape(len(candidate_frames), -1).double()
    p = (p - p.mean(1, keepdim=True)) / (p.std(1, keepdim=True) + 1e-12)
    c = (c - c.mean(1, keepdim=True)) / (c.std(1, keepdim=True) + 1e-12)
    best = np.asarray(candidates)[(p @ c.T).argmax(1).cpu().numpy()]
    return best == frame_index, np.abs(best - frame_index) <= k


def confusion_matrix(pred: np.ndarray, true: np.ndarray, n: int = 8) -> np.ndarray:
    """Counts ``(n, n)``: rows true class, columns predicted."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (true, pred), 1)
    return m


# --------------------------------------------------------------------------------------- across-seed stats
def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for a single value)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def paired_t(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test p-value (NaN with fewer than 2 pairs or zero variance)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.allclose(a - b, (a - b)[0]):
        return float("nan")
    return float(stats.ttest_rel(a, b).pvalue)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Paired bootstrap over test items of mean(a - b): the difference, its CI, and a two-sided p-value."""
    rng = np.random.default_rng(seed)
    d = np.asarray(a, float) - np.asarray(b, float)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    p = 2 * min((boots <= 0).mean(), (boots >= 0).mean())
    return {"diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi), "p": float(min(1.0, p))}
