"""Derive the small committed reference files from the real Allen sample (run once, by hand, where it exists).

    .venv/bin/python tools/make_reference.py ../shared/real/abo_cux2_visp275_dg_A.npz

Writes (the project runs without ``shared/``):
- ``poyocap/data/reference/cux2_sample_cells.csv``: per-cell statistics (``poyocap.data.cellstats``) of the 127 cells;
- ``poyocap/data/reference/cux2_sample_decoding.csv``: direction decodability vs cell count, two windows;
- ``tests/data/cux2_excerpt.npz``: 8 cells x 5 min (float16) around a segment boundary, with its trials, for tests.
Provenance of the sample: ``poyocap/data/reference/README.md``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

from poyocap.data.arrays import load_npz
from poyocap.data.cellstats import cell_statistics, direction_decodability

ROOT = Path(__file__).resolve().parent.parent


def main(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = load_npz(path, source="allen")
    cells = cell_statistics(rec)
    cells.round(6).to_csv(ROOT / "poyocap/data/reference/cux2_sample_cells.csv", index=False)
    dec = [direction_decodability(rec, [8, 16, 32, 64, 127], w) for w in ((0.0, 1.0), (0.2, 2.0))]
    import pandas as pd

    pd.concat(dec).round(4).to_csv(ROOT / "poyocap/data/reference/cux2_sample_decoding.csv", index=False)
    with np.load(path) as f:
        bound = int(f["segment_bounds"][0, 1])  # an excerpt across the first segment boundary
        lo, hi = bound - 4500, bound + 4500
        cells8 = np.argsort(-cells["snr"].to_numpy())[::16][:8]  # bright to dim
        onset = f["trial_onset_frame"]
        keep = (onset >= lo) & (onset < hi)
        np.savez_compressed(
            ROOT / "tests/data/cux2_excerpt.npz", dff=f["dff"][cells8, lo:hi].astype(np.float16),
            cell_specimen_id=f["cell_specimen_id"][cells8], fs_hz=f["fs_hz"],
            segment_bounds=np.array([[0, bound - lo], [bound - lo, hi - lo]]),
            trial_onset_frame=onset[keep] - lo, trial_stimulus_orientation=f["trial_stimulus_orientation"][keep],
            trial_stimulus_temporal_frequency=f["trial_stimulus_temporal_frequency"][keep],
            meta=json.dumps({**json.loads(str(f["meta"])), "excerpt": f"cells {cells8.tolist()}, frames {lo}-{hi}"}))
    print(cells.describe().round(3).to_string())


if __name__ == "__main__":
    main(sys.argv[1])
