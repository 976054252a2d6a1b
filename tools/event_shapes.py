"""Event shape per std/noise bin, real Allen sample vs the synthetic Cux2 line - the diagnostics behind
docs/calibration.md's second pass (how brief the detected events are, how sharp their onsets).

    .venv/bin/python tools/event_shapes.py ../shared/real/abo_cux2_visp275_dg_A.npz            # the generator as it is
    .venv/bin/python tools/event_shapes.py SAMPLE.npz --set indicator.rise_s=0.06               # under overrides

Per cell (``poyocap.data.cellstats`` definitions: events start at median + 4 noise SD and end below median + 2):
``duration`` median frames from onset to the end of an event; ``short`` fraction of events of <= 2 frames; ``peak``
median event peak in noise SD; ``up4`` / ``down4`` fraction of first differences above +4 / below -4 noise SD x sqrt 2
(calcium onsets are up-jumps; symmetric jumps would be noise or motion). Medians per std/noise bin. ``--set`` keys as in
``tools/calibrate.py``; the synthetic side is demo observatory seed 0's Cux2 sessions (SYNTHETIC DATA).
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

from poyocap.config import Config
from poyocap.data import synthetic
from poyocap.data.arrays import load_npz
from poyocap.data.cellstats import _segments, cell_statistics
from poyocap.data.recording import Recording

from calibrate import LINE, apply, parse_set

SNR_BINS = [0, 1.2, 1.4, 1.7, 2.2, 3.0, np.inf]


def _events(z: np.ndarray) -> tuple[list[int], list[float]]:
    """Durations (frames at or above 2) and peaks of the events of one standardised trace segment ``z (T,)``."""
    durations, peaks, armed, i = [], [], True, 0
    while i < len(z):
        if armed and z[i] >= 4:
            k = i
            while k < len(z) and z[k] >= 2:
                k += 1
            durations.append(k - i)
            peaks.append(float(z[i:k].max()))
            armed, i = False, k
            continue
        armed = armed or z[i] < 2
        i += 1
    return durations, peaks


def event_shapes(rec: Recording) -> pd.DataFrame:
    """One row per ROI of ``rec``: std/noise, event rate and the shape columns of the module docstring."""
    stats = cell_statistics(rec)
    x, ok, segs = rec.dff.astype(np.float64), rec.value_mask(per_roi=True), _segments(rec.segment_id)
    med = np.nanmedian(np.where(ok, x, np.nan), axis=0)
    rows = []
    for j, noise in enumerate(stats["noise_sd"].to_numpy()):
        trace = np.where(ok[:, j], x[:, j], med[j])
        diffs = np.concatenate([np.diff(trace[s]) for s in segs])
        jumps = (diffs - np.median(diffs)) / (noise * np.sqrt(2))
        durations, peaks = [], []
        for s in segs:
            d, p = _events((trace[s] - med[j]) / noise)
            durations += d
            peaks += p
        rows.append({"snr": stats["snr"].iloc[j], "event_rate_hz": stats["event_rate_hz"].iloc[j],
                     "duration": np.median(durations) if durations else np.nan,
                     "short": np.mean(np.array(durations) <= 2) if durations else np.nan,
                     "peak": np.median(peaks) if peaks else np.nan,
                     "up4": np.mean(jumps > 4), "down4": np.mean(jumps < -4)})
    return pd.DataFrame(rows)


def by_snr(cells: pd.DataFrame) -> pd.DataFrame:
    cells = cells.assign(snr_bin=pd.cut(cells["snr"], SNR_BINS))
    table = cells.groupby("snr_bin", observed=True).median(numeric_only=True)
    return table.assign(n_cells=cells.groupby("snr_bin", observed=True).size()).drop(columns="snr")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sample", help="the real sample (.npz with the keys of poyocap.data.arrays.load_npz)")
    ap.add_argument("--set", action="append", default=[], help="key=value (tools/calibrate.py)")
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = load_npz(args.sample, source="allen")
    print("REAL (Allen sample)")
    print(by_snr(event_shapes(real)).to_string(float_format="{:.3g}".format))
    apply(parse_set(args.set))
    obs = synthetic.SyntheticObservatory(Config.for_scale("demo").data, seed=0, cache_dir=None)
    syn = pd.concat([event_shapes(obs.generate(s)) for s in obs.sessions if s.cre_line == LINE])
    apply({})
    print(f"SYNTHETIC DATA: {LINE}, demo observatory seed 0, overrides {parse_set(args.set)}")
    print(by_snr(syn).to_string(float_format="{:.3g}".format))


if __name__ == "__main__":
    main()
