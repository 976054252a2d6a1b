"""How much the positive control's probes move between random-init encoders (pretraining issue).

The positive control compares each pretrained encoder with *the* random-init encoder its seed started from. This
tool measures the reference itself: notebook 03's per-session probes (grating direction, movie time; validation and
test windows) on K random-init encoders (seeds 0 .. K-1: seeds 0-2 are the ones the 3-seed runs start from), and
optionally places pretrained runs' probes (``tools/transfer_sweep.py --probe-csv``) in that distribution.

    .venv/bin/python tools/random_init_spread.py --inits 8 --pool downstream --probe-csv /tmp/pc.csv

Prints one line per init (window-weighted accuracies, as notebook 03), the mean and SD over inits, and for each
pretrained (variant, seed) its accuracy minus its own random init and minus the mean over all K inits.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from poyocap.config import Config
from poyocap.stages.common import load_recordings
from poyocap.stages.pretrain import pool_datasets, random_init_encoder

from decoder_sweep import demo_pools
from transfer_sweep import session_probes, weighted_accuracy

COLUMNS = [("val", "grating"), ("test", "grating"), ("val", "movie"), ("test", "movie")]


def weighted(df: pd.DataFrame, acc: str) -> pd.Series:
    """Window-weighted accuracy per (split, probe): ``df`` has one row per (probe, split, session)."""
    return pd.Series({key: weighted_accuracy(g, acc) for key, g in df.groupby(["split", "probe"])})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inits", type=int, default=8, help="random-init encoders (seeds 0 .. inits-1)")
    ap.add_argument("--pool", choices=("downstream", "predictable"), default="downstream")
    ap.add_argument("--probe-csv", type=Path, action="append", default=[],
                    help="per-session probes of pretrained runs (transfer_sweep --probe-csv) to place among the inits")
    args = ap.parse_args()
    if args.inits < 2:
        raise SystemExit("--inits must be >= 2 (a spread needs two encoders)")
    cfg = Config.for_scale("demo")
    recordings = load_recordings(cfg, progress=False)
    vocab, data = pool_datasets(cfg, demo_pools(recordings)[args.pool])
    header = "  ".join(f"{s} {p:7s}" for s, p in COLUMNS)
    print(f"random init (demo, SYNTHETIC DATA, {args.pool} pool); window-weighted probe accuracy\nseed  {header}")
    per_init = []
    for seed in range(args.inits):
        acc = weighted(session_probes(random_init_encoder(cfg, len(vocab), seed), data), "acc")
        per_init.append(acc)
        print(f"{seed:4d}  " + "  ".join(f"{acc[c]:12.3f}" for c in COLUMNS), flush=True)
    table = pd.DataFrame(per_init)
    mean, sd = table.mean(), table.std(ddof=1)
    print("mean  " + "  ".join(f"{mean[c]:12.3f}" for c in COLUMNS))
    print("sd    " + "  ".join(f"{sd[c]:12.3f}" for c in COLUMNS))
    for csv in args.probe_csv:
        runs = pd.read_csv(csv)
        for (variant, seed), g in runs.groupby(["variant", "seed"]):
            pre, own = weighted(g, "acc_pretrained"), weighted(g, "acc_random")
            cells = [f"{pre[c]:.3f} ({pre[c] - own[c]:+.3f}, {(pre[c] - mean[c]) / sd[c]:+.1f} sd)" for c in COLUMNS]
            print(f"{variant} seed {seed}: " + "  ".join(cells))
    print("pretrained cells: accuracy (minus its own random init, minus the mean of the inits in their SD)")


if __name__ == "__main__":
    main()
