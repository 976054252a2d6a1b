"""Pools (which animals serve which stage) and leak-free splits (which frames serve train/val/test).

**Pools** (docs/architecture.md, "Partition and pools"). The partition arrives as plain data (a set of predictable lines,
or a set of predictable unit ids for the label-free mode); nothing here names lines.

- ``pretrain``: mice of predictable lines;
- ``downstream``: mice of unpredictable lines used for fine-tuning;
- ``reverse``: unpredictable-line mice kept *out* of downstream (for the "reverse SSL" ablation).

No mouse is in two pools (asserted).

**Splits** (as the authors' code, plus one of ours). Every stimulus frame gets a label:

- natural movie: repeats ``0..R-3`` train, ``R-2`` val, ``R-1`` test (ABO: 0-7 / 8 / 9);
- drifting gratings: trials 70/10/20, shuffled with a fixed seed per session, in *blocks* of consecutive
  trials (default 8). The authors shuffle single trials; but ABO trials are only 1 s apart, so a window at a
  test trial would then almost always see the calcium tail of a training trial. Blocks keep the 70/10/20
  proportions and lose only the first trial of a block whose neighbour belongs to another split;
- *novel frames* (beyond the paper): a contiguous block of movie frames, in every repeat, labelled ``novel``;
  no training window ever sees them.

A window over frames ``[t0, t1]`` reflects the stimulus in ``[t0 - tail, t1]`` (calcium decays for ``tail``
seconds). It belongs to split *s* only if every labelled stimulus frame in that range is *s*; other windows are
dropped. That makes leakage through calcium tails impossible by construction (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .recording import Recording

SPLITS: tuple[str, ...] = ("train", "val", "test", "novel")
UNLABELLED = -1
SPLIT_CODE = {name: i for i, name in enumerate(SPLITS)}
DEFAULT_TAIL_S = 1.5  # > 2 decay constants of every line except Pvalb (GCaMP6s, 0.72 s): covers ~90 % of the tail


@dataclass(frozen=True)
class Pools:
    """Session ids per pool, plus the unit ids used for pretraining in the label-free (per-neuron) mode."""

    pretrain: tuple[str, ...]
    downstream: tuple[str, ...]
    reverse: tuple[str, ...]
    predictable_lines: tuple[str, ...]
    pretrain_units: frozenset[str] | None = field(default=None)

    def summary(self, recordings: Sequence[Recording]) -> list[dict]:
        """Rows: pool, line, mice, sessions, units."""
        by_id = {r.session_id: r for r in recordings}
        rows = []
        for pool in ("pretrain", "downstream", "reverse"):
            recs = [by_id[s] for s in getattr(self, pool)]
            for line in sorted({r.cre_line for r in recs}):
                rl = [r for r in recs if r.cre_line == line]
                units = sum(
                    r.n_units if (pool != "pretrain" or self.pretrain_units is None)
                    else sum(u in self.pretrain_units for u in r.unit_ids) for r in rl
                )
                rows.append({"pool": pool, "cre_line": line, "mice": len({r.mouse_id for r in rl}),
                             "sessions": len(rl), "units": units})
        return rows


def make_pools(
    recordings: Sequence[Recording],
    predictable_lines: Iterable[str],
    reverse_every: int = 3,
    predictable_units: Iterable[str] | None = None,
) -> Pools:
    """Assign sessions to pools by line and animal.

    Args:
        predictable_lines: lines the filtering step called predictable (the only place that decides).
        reverse_every: of each unpredictable line's mice (sorted), every ``reverse_every``-th one goes to the
            reverse pool (at least one when the line has >= 2 mice), the rest to downstream.
        predictable_units: label-free mode: the pretrain pool is these units (from any line); their mice are
            then taken out of downstream/reverse so no animal serves two pools.
    """
    predictable = set(predictable_lines)
    mice_by_line: dict[str, list[str]] = {}
    for r in recordings:
        mice_by_line.setdefault(r.cre_line, [])
        if r.mouse_id not in mice_by_line[r.cre_line]:
            mice_by_line[r.cre_line].append(r.mouse_id)
    pool_of_mouse: dict[str, str] = {}
    for line, mice in sorted(mice_by_line.items()):
        mice = sorted(mice)
        if line in predictable:
            for m in mice:
                pool_of_mouse[m] = "pretrain"
            continue
        n_rev = len(mice) // reverse_every if len(mice) >= reverse_every else (1 if len(mice) >= 2 else 0)
        reverse = set(mice[len(mice) - n_rev:]) if n_rev else set()
        for m in mice:
            pool_of_mouse[m] = "reverse" if m in reverse else "downstream"
    units = None
    if predictable_units is not None:
        units = frozenset(predictable_units)
        unit_mice = {r.mouse_id for r in recordings if units.intersection(r.unit_ids)}
        for m in unit_mice:
            pool_of_mouse[m] = "pretrain"
    pools = {"pretrain": [], "downstream": [], "reverse": []}
    for r in sorted(recordings, key=lambda r: r.session_id):
        pools[pool_of_mouse[r.mouse_id]].append(r.session_id)
    result = Pools(
        pretrain=tuple(pools["pretrain"]), downstream=tuple(pools["downstream"]), reverse=tuple(pools["reverse"]),
        predictable_lines=tuple(sorted(predictable)), pretrain_units=units,
    )
    check_pools(result, recordings)
    return result


def check_pools(pools: Pools, recordings: Sequence[Recording]) -> None:
    """Assert that no mouse (and no session) serves two pools."""
    mouse_of = {r.session_id: r.mouse_id for r in recordings}
    seen: dict[str, str] = {}
    for pool in ("pretrain", "downstream", "reverse"):
        for sid in getattr(pools, pool):
            m = mouse_of[sid]
            if seen.setdefault(m, pool) != pool:
                raise AssertionError(f"mouse {m} appears in pools {seen[m]!r} and {pool!r}")


# ----------------------------------------------------------------------------------------------------- splits
@dataclass
class SessionSplit:
    """Per-frame stimulus labels of one session (codes of :data:`SPLITS`, or -1 for unlabelled frames)."""

    session_id: str
    stim_label: np.ndarray  # (T,) int8: split of the stimulus shown at each frame
    trial_split: np.ndarray  # (M,) int8: split of each grating trial
    tail_frames: int
    novel_frames: tuple[int, int]  # [first, last) movie frame indices held out as "novel"

    def window_split(self, t0: int, t1: int) -> int:
        """Split of the window over frames ``[t0, t1)``, or -1 when it mixes splits (dropped)."""
        labels = self.stim_label[max(0, t0 - self.tail_frames):t1]
        present = np.unique(labels[labels >= 0])
        return int(present[0]) if len(present) == 1 else (UNLABELLED if len(present) == 0 else -2)

    def window_splits(self, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`window_split`: -1 for unlabelled windows, -2 for mixed (dropped) windows."""
        n_codes = len(SPLITS)
        onehot = np.zeros((len(self.stim_label) + 1, n_codes), np.int32)
        lab = self.stim_label
        onehot[1:][np.arange(len(lab))[lab >= 0], lab[lab >= 0]] = 1
        csum = np.cumsum(onehot, axis=0)
        lo = np.clip(t0 - self.tail_frames, 0, len(lab))
        hi = np.clip(t1, 0, len(lab))
        counts = csum[hi] - csum[lo]
        n_present = (counts > 0).sum(axis=1)
        out = np.where(n_present == 1, counts.argmax(axis=1), np.where(n_present == 0, UNLABELLED, -2))
        return out.astype(np.int64)


def split_session(
    rec: Recording,
    grating_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    novel_fraction: float = 0.1,
    tail_s: float = DEFAULT_TAIL_S,
    seed: int = 42,
    grating_block: int = 8,
) -> SessionSplit:
    """Label every stimulus frame of ``rec`` with its split (see module docstring)."""
    if abs(sum(grating_fractions) - 1.0) > 1e-6:
        raise ValueError(f"grating_fractions must sum to 1, got {grating_fractions}")
    n_t = rec.n_frames
    label = np.full(n_t, UNLABELLED, np.int8)
    # drifting gratings: whole trials, shuffled with a per-session seed derived from `seed`
    n_trials = rec.n_trials
    rng = np.random.default_rng([seed, _stable_hash(rec.session_id)])
    chrono = np.argsort(rec.grating_trials["start"], kind="stable")
    block_of = np.empty(n_trials, np.int64)
    block_of[chrono] = np.arange(n_trials) // max(1, grating_block)
    n_blocks = int(block_of.max()) + 1 if n_trials else 0
    order = rng.permutation(n_blocks)
    n_train = int(round(grating_fractions[0] * n_blocks))
    n_val = int(round(grating_fractions[1] * n_blocks))
    if n_blocks >= 3:  # every split gets at least one block
        n_val = max(1, n_val)
        n_train = min(n_train, n_blocks - n_val - 1)
    block_split = np.empty(n_blocks, np.int8)
    block_split[order[:n_train]] = SPLIT_CODE["train"]
    block_split[order[n_train:n_train + n_val]] = SPLIT_CODE["val"]
    block_split[order[n_train + n_val:]] = SPLIT_CODE["test"]
    trial_split = block_split[block_of] if n_trials else np.empty(0, np.int8)
    start_f = np.searchsorted(rec.timestamps, rec.grating_trials["start"])
    stop_f = np.searchsorted(rec.timestamps, rec.grating_trials["stop"])
    for k in range(n_trials):
        label[start_f[k]:stop_f[k]] = trial_split[k]
    # natural movie: last repeat test, the one before val, the rest train; a block of frames is "novel"
    shown = rec.movie_repeat >= 0
    novel = (0, 0)
    if shown.any():
        n_rep = int(rec.movie_repeat.max()) + 1
        if n_rep < 3:
            raise ValueError(f"session {rec.session_id}: field 'movie_repeat': need >= 3 repeats for train/val/test")
        rep = rec.movie_repeat
        label[shown & (rep <= n_rep - 3)] = SPLIT_CODE["train"]
        label[shown & (rep == n_rep - 2)] = SPLIT_CODE["val"]
        label[shown & (rep == n_rep - 1)] = SPLIT_CODE["test"]
        n_movie = int(rec.movie_frames.max()) + 1
        n_novel = int(round(novel_fraction * n_movie))
        if n_novel > 0:
            first = n_movie // 2 - n_novel // 2  # a block in the middle, away from the repeat boundaries
            novel = (first, first + n_novel)
            label[shown & (rec.movie_frames >= novel[0]) & (rec.movie_frames < novel[1])] = SPLIT_CODE["novel"]
    tail = int(round(tail_s * rec.sampling_rate_hz))
    return SessionSplit(rec.session_id, label, trial_split, tail, novel)


def _stable_hash(text: str) -> int:
    """A process-independent small hash (Python's hash() is salted)."""
    return int.from_bytes(text.encode()[:64].ljust(64, b"\0"), "little") % (2**31)


def build_splits(recordings: Sequence[Recording], novel_fraction: float, seed: int = 42,
                 grating_block: int = 8) -> list[SessionSplit]:
    """:func:`split_session` for every recording (the authors' seed 42 for grating trials)."""
    return [split_session(r, novel_fraction=novel_fraction, seed=seed, grating_block=grating_block)
            for r in recordings]
