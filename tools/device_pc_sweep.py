"""Positive-control exploration on the device (pretraining issue): in-domain pretraining variants x seeds with the
pretraining and the latent features on the GPU, the per-session probes (notebook 03's) on CPU, validation and test.
GPU floats differ from the demo's CPU runs: for choosing what to confirm on CPU with ``tools/transfer_sweep.py``,
never a reported result.

    python3 tools/device_pc_sweep.py --seed 0 --variant base --variant optim.steps=900
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any

from poyocap.config import Config
from poyocap.evaluate import latent_features
from poyocap.model.encoder import CalciumEncoder
from poyocap.model.pretrain import TwinMaskedPretrainer
from poyocap.repro import seed_everything
from poyocap.stages.common import load_recordings
from poyocap.stages.pretrain import pool_datasets, random_init_encoder, within_session_spread
from poyocap.train import TrainSettings, train

from decoder_sweep import demo_pools, parse
from transfer_sweep import session_probes, weighted_accuracy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--csv", default="")
    ap.add_argument("--scale", default="demo")
    args = ap.parse_args()
    base = Config.for_scale(args.scale)
    recs = load_recordings(base, progress=False)
    down = demo_pools(recs)["downstream"]
    random_scores = None
    for variant in args.variant or ["base"]:
        over: dict[str, Any] = parse(variant)
        optim = dict(over.pop("optim", {}))
        cfg = base.with_overrides(**over) if over else base
        vocab, data = pool_datasets(cfg, down)
        if random_scores is None:  # the random-init encoder of this seed (same for every variant)
            random_enc = random_init_encoder(cfg, len(vocab), args.seed)
            random_scores = session_probes(random_enc, data, args.device, 256)
            rand_spread = within_session_spread(latent_features(random_enc, data["probe_grating_test"], 256,
                                                                args.device))
        seed_everything(args.seed)
        objective = TwinMaskedPretrainer(CalciumEncoder(cfg.encoder, len(vocab)), cfg.pretrain)
        t0 = time.perf_counter()
        res = train(objective, data["train"], dataclasses.replace(cfg.pretrain.optim, **optim), TrainSettings(),
                    seed=args.seed, device=args.device, progress=False)
        enc = res.objective.encoder
        spread = within_session_spread(latent_features(enc, data["probe_grating_test"], 256, args.device))
        both = session_probes(enc, data, args.device, 256).merge(random_scores, on=["probe", "split", "session", "n"],
                                                                   suffixes=("_pre", "_rand"))
        parts = []
        for (split, probe), g in both.groupby(["split", "probe"], sort=False):
            w = [weighted_accuracy(g, f"acc_{k}") for k in ("pre", "rand")]
            d = g.acc_pre - g.acc_rand
            parts.append(f"{split} {probe} {w[0]:.3f} vs {w[1]:.3f} ({int((d > 0).sum())}/{int((d < 0).sum())})")
        print(f"{variant:50s} seed {args.seed} {time.perf_counter() - t0:4.0f}s within-std "
              f"{spread[0] / rand_spread[0]:.2f} rank {spread[1] / rand_spread[1]:.2f} | " + "; ".join(parts),
              flush=True)
        if args.csv:
            both.assign(variant=variant, seed=args.seed).to_csv(args.csv, mode="a", index=False,
                                                                header=not os.path.exists(args.csv))


if __name__ == "__main__":
    main()
