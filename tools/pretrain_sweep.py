"""Validation sweep for pretraining variants (pretraining issue): one run per variant on the demo's predictable
pool, evaluated as notebook 03 does (held-out masked L1 vs copy-last, eval-mode std(Z_L) / init, linear probes
pretrained vs random init) plus the effective rank of held-out Z_L / init. Prints one line per variant.

    .venv/bin/python tools/pretrain_sweep.py --variant base --variant pretrain.target=shared_eval

Variants as in ``tools/decoder_sweep.py`` (``section.field=value,...``; ``optim.*`` sets ``pretrain.optim``).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from types import SimpleNamespace

import torch

from poyocap.config import Config
from poyocap.evaluate import latent_features
from poyocap.model.encoder import CalciumEncoder
from poyocap.model.pretrain import TwinMaskedPretrainer, effective_rank
from poyocap.repro import seed_everything
from poyocap.stages.common import load_recordings
from poyocap.stages.pretrain import evaluate_pretraining, pretrain_data
from poyocap.train import TrainSettings, train

from decoder_sweep import demo_lines, parse


def held_out_rank(encoder: CalciumEncoder, dataset) -> float:  # noqa: ANN001
    return effective_rank(torch.from_numpy(latent_features(encoder, dataset)["features"]).float())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", action="append", default=[])
    args = ap.parse_args()
    base = Config.for_scale("demo")
    recordings = load_recordings(base, progress=False)
    lines = demo_lines(recordings)
    for variant in args.variant or ["base"]:
        over = parse(variant)
        optim = dict(over.pop("optim", {}))
        cfg = base.with_overrides(**over) if over else base
        _, _, vocab, data = pretrain_data(cfg, recordings, SimpleNamespace(predictable_lines=lines))
        seed_everything(args.seed)
        objective = TwinMaskedPretrainer(CalciumEncoder(cfg.encoder, len(vocab)), cfg.pretrain)
        t = time.perf_counter()
        res = train(objective, data["train"], dataclasses.replace(cfg.pretrain.optim, **optim), TrainSettings(),
                    seed=args.seed, device="cpu", progress=False)
        ev = evaluate_pretraining(cfg, res.objective.cpu(), data, args.seed)
        seed_everything(args.seed)
        rank0 = held_out_rank(CalciumEncoder(cfg.encoder, len(vocab)), data["probe_grating_test"])
        rank = held_out_rank(res.objective.encoder, data["probe_grating_test"])
        print(f"{variant:45s} {time.perf_counter() - t:5.0f}s masked L1 {ev['val_masked_l1']:.3f} vs copy-last "
              f"{ev['val_copy_last_l1']:.3f}; std ratio {ev['std_ratio']:.2f}; eff. rank {rank:.1f} / init "
              f"{rank0:.1f}; grating probe {ev['probe_grating_pretrained']:.3f} vs random "
              f"{ev['probe_grating_random']:.3f}; movie probe {ev['probe_movie_pretrained']:.3f} vs random "
              f"{ev['probe_movie_random']:.3f}", flush=True)


if __name__ == "__main__":
    main()
