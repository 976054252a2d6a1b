"""CEBRA embeddings of the downstream sessions (ablation table, row "CEBRA + the same decoders").

The real ``cebra`` package (0.4) is fitted on the downstream sessions' TRAINING frames only (the per-session splits
of :func:`poyocap.data.splits.build_splits`; no validation or test frame is ever seen), then every frame of every
session is transformed. Two modes, as in CEBRA's Allen examples:

- ``behavior``: one multi-session model (a network per session, a shared embedding) with the movie frame index as
  the continuous auxiliary variable, fitted on the movie's training frames (cebra 0.4's multi-session training
  needs labels to align the sessions).
- ``time``: time-contrastive CEBRA-Time, one model per session (multi-session training has no time-only mode),
  fitted on all training frames.

Each embedding becomes a :class:`~poyocap.data.recording.Recording` whose "units" are the embedding's dimensions,
with the session's stimuli unchanged, so the fine-tuning stage feeds it to the same readouts and decoders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import numpy as np
import torch

from .data.recording import Recording
from .data.splits import SPLIT_CODE, SessionSplit


@dataclass(frozen=True)
class CebraSettings:
    """CEBRA hyper-parameters (``cebra.CEBRA`` names)."""

    mode: Literal["behavior", "time"] = "behavior"
    output_dimension: int = 16
    num_hidden_units: int = 32
    max_iterations: int = 1000
    batch_size: int = 512
    learning_rate: float = 3e-4
    temperature: float = 1.0
    model_architecture: str = "offset10-model"


def training_frames(rec: Recording, split: SessionSplit, movie_only: bool) -> np.ndarray:
    """Indices of ``rec``'s training frames (valid frames of training stimuli; movie frames only if asked)."""
    keep = (split.stim_label == SPLIT_CODE["train"]) & rec.valid
    if movie_only:
        keep &= rec.movie_frames >= 0
    return np.flatnonzero(keep)


def _seed(seed: int) -> None:
    """cebra draws from torch's, numpy's and Python's global generators (and see :func:`_deterministic_samplers`)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _deterministic_samplers() -> Iterator[None]:
    """cebra 0.4's ``HasGenerator`` (the time-contrastive samplers) seeds its private ``torch.Generator`` with
    ``Generator.seed()``, i.e. from the OS's entropy: CEBRA-Time fits differ run to run whatever the global seeds.
    Within this context it takes its seed from torch's global generator instead (seeded by :func:`_seed`)."""
    from cebra.distributions import base

    original = base.HasGenerator.__init__

    def seeded_init(self, device: str, seed: int) -> None:  # noqa: ANN001
        base.HasGenerator.__bases__[0].__init__(self, device=device)
        self._device = device
        self._seed = int(torch.randint(0, 2**31 - 1, (1,)).item())

    base.HasGenerator.__init__ = seeded_init
    try:
        yield
    finally:
        base.HasGenerator.__init__ = original


def _model(settings: CebraSettings, conditional: str):  # noqa: ANN202 - cebra.CEBRA
    import cebra  # heavy import (sklearn API, pkg_resources)

    return cebra.CEBRA(model_architecture=settings.model_architecture, batch_size=settings.batch_size,
                       output_dimension=settings.output_dimension, num_hidden_units=settings.num_hidden_units,
                       max_iterations=settings.max_iterations, learning_rate=settings.learning_rate,
                       temperature=settings.temperature, conditional=conditional, time_offsets=10, device="cpu",
                       verbose=False)


def fit_cebra(recordings: Sequence[Recording], splits: Sequence[SessionSplit], settings: CebraSettings,
              seed: int = 0) -> tuple[list[Recording], np.ndarray]:
    """Fit CEBRA on the training frames and embed every session (``splits``: one per recording, in order).

    Returns the embedded recordings (dF/F ``(T, output_dimension)`` per session, unit ids ``<session>/cebra<k>``)
    and the training loss curve ``(iterations,)`` (the mean over sessions in ``time`` mode).
    """
    with _deterministic_samplers():
        return _fit(recordings, splits, settings, seed)


def _fit(recordings: Sequence[Recording], splits: Sequence[SessionSplit], settings: CebraSettings,
         seed: int) -> tuple[list[Recording], np.ndarray]:
    _seed(seed)
    xs = [np.nan_to_num(r.dff.astype(np.float32)) for r in recordings]  # invalid frames are never trained on
    if settings.mode == "behavior":
        idx = [training_frames(r, sp, movie_only=True) for r, sp in zip(recordings, splits)]
        model = _model(settings, "time_delta")
        model.fit([x[i] for x, i in zip(xs, idx)],
                  [r.movie_frames[i].astype(np.float32)[:, None] for r, i in zip(recordings, idx)])
        embedded = [model.transform(x, session_id=k) for k, x in enumerate(xs)]
        curve = np.asarray(model.state_dict_["log"]["total"], dtype=float)
    elif settings.mode == "time":
        embedded, curves = [], []
        for k, (r, sp, x) in enumerate(zip(recordings, splits, xs)):
            _seed(seed * 1000 + k)  # each session's fit on its own seed: independent of the order of fits
            model = _model(settings, "time")
            model.fit(x[training_frames(r, sp, movie_only=False)])
            embedded.append(model.transform(x))
            curves.append(np.asarray(model.state_dict_["log"]["total"], dtype=float))
        curve = np.mean(curves, axis=0)
    else:
        raise ValueError(f"CEBRA mode must be 'behavior' or 'time', got {settings.mode!r}")
    return embedded_recordings(recordings, embedded), curve


def embedded_recordings(recordings: Sequence[Recording], embeddings: Sequence[np.ndarray]) -> list[Recording]:
    """Each recording with its dF/F replaced by its embedding ``(T, d)``: units ``<session>/cebra<k>``, the
    session's frame validity and stimuli kept."""
    out = []
    for r, z in zip(recordings, embeddings):
        ids = [f"{r.session_id}/cebra{k}" for k in range(z.shape[1])]
        out.append(dataclasses.replace(r, dff=np.asarray(z, dtype=np.float32), unit_ids=ids, valid=r.valid,
                                       roi_valid=None))
    return out
