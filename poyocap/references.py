"""Linear reference decoders: the bar every deep decoder must clear, on the same windows and splits.

- :class:`LinearReference` with ``features="raw"``: per session, ridge regression from the raw dF/F window
  ``(T, N)`` (flattened) to the frame's pixels (movie), or multinomial logistic regression from the window's mean dF/F
  ``(N,)`` to the direction (gratings). Every ROI of the session is used (no unit dropout).
- ``features="random_encoder"``: the same linear models on the frozen latents of a random-init encoder (pooled per
  latent step), i.e. "random-init encoder + linear head".

Regularisation (ridge alpha, logistic C) is chosen per session on the validation split, never on test. Predictions
come out in the order of the evaluation dataset's windows, so per-item scores pair with the deep methods'.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from .data.recording import Recording
from .data.windows import WindowDataset, WindowTable

RIDGE_ALPHAS = (1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)
LOGISTIC_CS = (1e-3, 1e-2, 1e-1, 1.0)
RIDGE_PATH_MAX_RANK = 3000  # RidgePath's eigendecomposition is ~min(n, p)^3


def raw_features(rec: Recording, t0: np.ndarray, t1: np.ndarray, pool: bool) -> np.ndarray:
    """Windows of one recording as features: flattened ``(T * N)`` (``pool=False``) or the mean over time ``(N)``.
    Windows shorter than the longest are zero-padded at the end (they only occur at session ends)."""
    length = int((t1 - t0).max())
    x = np.zeros((len(t0), length, rec.n_units), np.float32)
    mask = rec.value_mask(per_roi=True)  # (T, N), a view when ROIs share the frame mask: once, not per window
    for i, (a, b) in enumerate(zip(t0, t1)):
        x[i, : b - a] = rec.dff[a:b] * mask[a:b]
    return x.mean(axis=1) if pool else x.reshape(len(t0), -1)


def _frames(pred: np.ndarray, hw: tuple[int, ...]) -> np.ndarray:
    """Ridge outputs ``(N, H*W)`` as frames ``float32 (N, H, W)`` in [0, 1]."""
    return np.clip(pred, 0, 1).reshape(-1, *hw).astype(np.float32)


def _mean_ssim(pred: np.ndarray, y: np.ndarray, hw: tuple[int, ...]) -> float:
    from .evaluate import ssim_per_frame

    return float(ssim_per_frame(torch.from_numpy(_frames(pred, hw)), torch.from_numpy(y.reshape(-1, *hw))).mean())


def _ridge(alpha: float) -> object:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=alpha))


def _singular_vectors(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors ``(k, r)`` of a Gram or covariance matrix ``(k, k)`` of ``xs`` and the singular values ``(r,)`` of
    ``xs`` (square roots of its eigenvalues), numerically zero ones dropped."""
    lam, vectors = np.linalg.eigh(gram)
    keep = lam > 1e-10 * max(lam.max(), 1e-300)
    return vectors[:, keep], np.sqrt(lam[keep])


class RidgePath:
    """Ridge regression on standardised inputs for a whole grid of alphas from one eigendecomposition: for each
    alpha the same model as sklearn's ``make_pipeline(StandardScaler(), Ridge(alpha))`` (tested), at the cost of
    one fit instead of one per alpha (the references' alpha search was most of their time).

    Args:
        x: training inputs ``(n, p)``; y: targets ``(n, q)``.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        self.x_mean, scale = x.mean(0), x.std(0)
        self.x_scale = np.where(scale > 0, scale, 1.0)  # constant features: scale 1, as StandardScaler
        xs = (x - self.x_mean) / self.x_scale
        self.y_mean = y.mean(0)
        yc = y - self.y_mean
        # xs = U S V^T; everything below needs only S, U^T yc and a projection of new inputs onto V
        if xs.shape[0] <= xs.shape[1]:  # more features than windows: the Gram matrix (n, n) gives U
            u, self.s = _singular_vectors(xs @ xs.T)
            self._project = (xs.T @ u) / self.s  # V (p, r)
            self.uty = u.T @ yc  # (r, q)
        else:  # the covariance (p, p) gives V
            v, self.s = _singular_vectors(xs.T @ xs)
            self._project = v
            self.uty = (v.T @ (xs.T @ yc)) / self.s[:, None]

    def project(self, x: np.ndarray) -> np.ndarray:
        """New inputs ``(m, p)`` in the singular basis ``(m, r)``; pass to :meth:`predict` for any alpha."""
        return ((np.asarray(x, np.float64) - self.x_mean) / self.x_scale) @ self._project

    def predict(self, projected: np.ndarray, alpha: float) -> np.ndarray:
        """Predictions ``(m, q)`` float32 of the alpha model for inputs already :meth:`project`-ed."""
        shrink = self.s / (self.s ** 2 + alpha)
        return ((projected * shrink) @ self.uty + self.y_mean).astype(np.float32)

    def model(self, alpha: float) -> "_RidgeModel":
        return _RidgeModel(self, alpha)


class _RidgeModel:
    """One alpha of a :class:`RidgePath`, with the ``predict(x)`` of a fitted sklearn model."""

    def __init__(self, path: RidgePath, alpha: float) -> None:
        self.path, self.alpha = path, alpha

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.path.predict(self.path.project(x), self.alpha)


def _choose_ridge(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                  score: Callable[[np.ndarray], float]) -> tuple[float, _RidgeModel]:
    """The ridge alpha of ``RIDGE_ALPHAS`` with the best validation ``score(pred)`` (the first on ties), and its
    model: from one :class:`RidgePath` (per session: 35 -> 14 s for the demo's 18 sessions), or one sklearn fit
    per alpha when both sides of ``x_train`` are large."""
    if min(x_train.shape) > RIDGE_PATH_MAX_RANK:  # the pseudo-population (~6000 x 6000): one eigendecomposition
        # costs more than sklearn's six Cholesky solves (measured 58 vs 41 s on the demo)
        return _choose(RIDGE_ALPHAS, lambda alpha: _ridge(alpha).fit(x_train, y_train),  # type: ignore[attr-defined]
                       lambda model: score(model.predict(x_val)))  # type: ignore[attr-defined]
    path = RidgePath(x_train, y_train)
    projected = path.project(x_val)
    best = max(((score(path.predict(projected, a)), -i) for i, a in enumerate(RIDGE_ALPHAS)))
    alpha = RIDGE_ALPHAS[-best[1]]
    return alpha, path.model(alpha)


def _choose(candidates: Sequence[float], fit: Callable[[float], object], score: Callable[[object], float]
            ) -> tuple[float, object]:
    """The regularisation (and its fitted model) with the best validation ``score``; the first on ties."""
    best = None
    for reg in candidates:
        model = fit(reg)
        value = score(model)
        if best is None or value > best[0]:
            best = (value, reg, model)
    return best[1], best[2]


class LinearReference:
    """Per-session linear decoder for one task (``"movie"`` -> ridge on pixels, ``"gratings"`` -> logistic).

    Args:
        task: ``"movie"`` or ``"gratings"``.
        features: ``"raw"`` (dF/F windows) or a callable ``(dataset) -> (n_windows, F)`` (e.g. frozen latents).
    """

    def __init__(self, task: Literal["movie", "gratings"], features: Literal["raw"] | Callable = "raw") -> None:
        if task not in ("movie", "gratings"):
            raise ValueError(f"task must be 'movie' or 'gratings', got {task!r}")
        self.task, self.features = task, features
        self.models: dict[int, object] = {}
        self.chosen: dict[int, float] = {}

    # ------------------------------------------------------------------------------------------ data
    def _xy(self, dataset: WindowDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, targets and session of every window of ``dataset``, in its order."""
        table: WindowTable = dataset.table
        if callable(self.features):
            x = np.asarray(self.features(dataset), np.float32)
        else:
            x_parts = {}
            for s in np.unique(table.session):
                idx = np.flatnonzero(table.session == s)
                x_parts[s] = (idx, raw_features(dataset.recordings[s], table.t0[idx], table.t1[idx],
                                                pool=self.task == "gratings"))
            width = max(v[1].shape[1] for v in x_parts.values())
            x = np.zeros((len(table), width), np.float32)
            for idx, feats in x_parts.values():
                x[idx, : feats.shape[1]] = feats
        if self.task == "movie":
            y = np.stack([dataset.recordings[s].movie[f].astype(np.float32).ravel() / 255.0
                          for s, f in zip(table.session, table.frame)])
        else:
            y = np.asarray(table.direction)
        return x, y, np.asarray(table.session)

    @staticmethod
    def _logistic(reg: float) -> object:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=reg, max_iter=2000))

    @staticmethod
    def _accuracy(model: object, x: np.ndarray, y: np.ndarray) -> float:
        return float((model.predict(x) == y).mean())  # type: ignore[attr-defined]

    # -------------------------------------------------------------------------------------------- fit
    def fit(self, train: WindowDataset, val: WindowDataset) -> "LinearReference":
        """One model per session, regularisation chosen on that session's validation windows (headline score)."""
        xt, yt, st = self._xy(train)
        xv, yv, sv = self._xy(val)
        if self.task == "movie":
            rec = train.recordings[int(st[0])]
            self._hw = rec.movie.shape[1:]
        for s in np.unique(st):
            tr, va = st == s, sv == s
            if self.task == "movie":
                self.chosen[int(s)], self.models[int(s)] = _choose_ridge(
                    xt[tr], yt[tr], xv[va], lambda pred: _mean_ssim(pred, yv[va], self._hw) if va.any() else 0.0)
                continue
            if len(np.unique(yt[tr])) < 2:
                continue
            self.chosen[int(s)], self.models[int(s)] = _choose(
                LOGISTIC_CS, lambda reg: self._logistic(reg).fit(xt[tr], yt[tr]),  # type: ignore[attr-defined]
                lambda model: self._accuracy(model, xv[va], yv[va]) if va.any() else 0.0)
        if not self.models:
            raise ValueError("no session has enough training windows for a reference decoder")
        return self

    def predict(self, dataset: WindowDataset) -> tuple[Tensor, Tensor]:
        """Predictions and targets for every window of ``dataset`` in order: frames ``(N, H, W)`` in [0, 1], or
        direction classes ``(N,)`` (a session without a model predicts class 0 / the grey frame)."""
        x, y, s = self._xy(dataset)
        if self.task == "movie":
            pred = np.full((len(x), int(np.prod(self._hw))), 0.5, np.float32)
        else:
            pred = np.zeros(len(x), np.int64)
        for sess, model in self.models.items():
            m = s == sess
            if m.any():
                pred[m] = model.predict(x[m])  # type: ignore[attr-defined]
        if self.task == "movie":
            return (torch.from_numpy(_frames(pred, self._hw)),
                    torch.from_numpy(y.reshape(-1, *self._hw).astype(np.float32)))
        return torch.from_numpy(pred), torch.from_numpy(y.astype(np.int64))


class PseudoPopulationRidge:
    """Ridge from every session's window side by side to the pixels (movie only), as CEBRA builds its Allen
    pseudo-mice: the windows of all sessions are matched by (movie frame, repeat) - every session saw the same movie
    - so one model sees every ROI. Splits follow the windows' own split labels; alpha chosen on validation."""

    def __init__(self, recordings: Sequence[Recording], table: WindowTable) -> None:
        self.recordings = list(recordings)
        fps = self.recordings[0].sampling_rate_hz
        onset = table.t0 + np.round(table.frame_time * fps).astype(np.int64)
        repeat = np.array([self.recordings[s].movie_repeat[o] for s, o in zip(table.session, onset)])
        self.keys = sorted({(int(f), int(r)) for f, r in zip(table.frame, repeat)})
        index = {k: i for i, k in enumerate(self.keys)}
        self.key_of = {(int(s), int(t0)): index[(int(f), int(r))]
                       for s, t0, f, r in zip(table.session, table.t0, table.frame, repeat)}
        blocks = []
        for s, rec in enumerate(self.recordings):
            m = table.session == s
            feats = raw_features(rec, table.t0[m], table.t1[m], pool=False)
            block = np.zeros((len(self.keys), feats.shape[1]), np.float32)
            block[[index[(int(f), int(r))] for f, r in zip(table.frame[m], repeat[m])]] = feats
            blocks.append(block)
        self.x = np.concatenate(blocks, axis=1)  # (keys, sum over sessions of T x N)
        self.split = np.full(len(self.keys), -2)
        for sp, f, r in zip(table.split, table.frame, repeat):  # a key is usable in a split if every window agrees
            k = index[(int(f), int(r))]
            self.split[k] = sp if self.split[k] in (-2, sp) else -3
        frames = np.array([f for f, _ in self.keys])
        self.y = self.recordings[0].movie[frames].reshape(len(frames), -1).astype(np.float32) / 255.0
        self.hw = self.recordings[0].movie.shape[1:]
        self.model: object | None = None
        self.alpha: float | None = None

    def fit(self, train_code: int, val_code: int) -> "PseudoPopulationRidge":
        tr, va = self.split == train_code, self.split == val_code
        self.alpha, self.model = _choose_ridge(self.x[tr], self.y[tr], self.x[va],
                                               lambda pred: _mean_ssim(pred, self.y[va], self.hw))
        return self

    def predict(self, dataset: WindowDataset) -> tuple[Tensor, Tensor]:
        """The pseudo-population prediction of each window's (frame, repeat), in ``dataset``'s order."""
        t = dataset.table
        keys = np.array([self.key_of[(int(s), int(t0))] for s, t0 in zip(t.session, t.t0)], np.int64)
        pred = _frames(self.model.predict(self.x[keys]), self.hw)  # type: ignore[union-attr]
        return torch.from_numpy(pred), torch.from_numpy(self.y[keys].reshape(-1, *self.hw))
