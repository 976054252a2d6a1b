"""Diagnostic for the pretraining issue: the linear probes of notebook 03 (per-session logistic regression, movie time
in 10 bins and grating direction) on the raw dF/F of the same windows, beside the random-init encoder's latents -
how much of the linearly decodable information the encoder's latents keep at init. Pool: the downstream mice (the
positive control's pool). Demo, CPU, one thread. ``--nonlinear``: also a per-session MLP probe (one hidden layer,
early stopping on 10 % of the probe's training windows) on the raw dF/F - is there movie-time information a linear
probe cannot read, that a pretraining could make linear?

    .venv/bin/python tools/probe_ceiling.py [--nonlinear] [--probes movie,grating]
"""
import argparse

import numpy as np
import torch
from poyocap.config import Config
from poyocap.evaluate import latent_features, per_session_probe
from poyocap.model.encoder import CalciumEncoder
from poyocap.parallel import run_threads
from poyocap.repro import seed_everything
from poyocap.stages.common import load_recordings
from poyocap.stages.pretrain import pool_datasets
from poyocap.train import eval_batches
from decoder_sweep import demo_pools


def raw_features(ds, n_units: int, halves: int = 2) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Per window: mean dF/F of each unit over ``halves`` equal parts of the window, by unit id ``(N, halves*U)``."""
    feats, direction = [], []
    for b in eval_batches(ds, 256):
        v, m, u = b["values"], b["mask"].float(), b["unit_index"]  # (B, T, U), (B, T, U), (B, U)
        B, T, U = v.shape
        parts = []
        for h in range(halves):
            sl = slice(h * T // halves, (h + 1) * T // halves)
            mean = (v[:, sl] * m[:, sl]).sum(1) / m[:, sl].sum(1).clamp(min=1)  # (B, U)
            dense = torch.zeros(B, n_units)
            dense.scatter_add_(1, u.long(), mean)
            parts.append(dense)
        feats.append(torch.cat(parts, 1).numpy())
        direction.append(b["direction"].numpy())
    return {"features": np.concatenate(feats), "direction": np.concatenate(direction),
            "session": np.asarray(ds.table.session)}


def mlp_probe(train: dict[str, np.ndarray], test: dict[str, np.ndarray], seed: int = 0) -> float:
    """Per-session MLP probe (standardised features, 256 hidden units), test accuracy weighted by test windows."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    correct, total = 0, 0
    for s in np.unique(test["session"]):
        tr, te = train["session"] == s, test["session"] == s
        clf = make_pipeline(StandardScaler(), MLPClassifier((256,), alpha=1e-2, early_stopping=True, max_iter=500,
                                                            random_state=seed))
        clf.fit(train["features"][tr], train["direction"][tr])
        correct += int((clf.predict(test["features"][te]) == test["direction"][te]).sum())
        total += int(te.sum())
    return correct / total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nonlinear", action="store_true")
    ap.add_argument("--probes", default="movie,grating")
    ap.add_argument("--random-init", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    cfg = Config.for_scale("demo")
    recs = load_recordings(cfg, progress=False)
    down = demo_pools(recs)["downstream"]
    vocab, data = pool_datasets(cfg, down)
    with run_threads(cfg):
        for probe in args.probes.split(","):
            tr, te = data[f"probe_{probe}_train"], data[f"probe_{probe}_test"]
            for halves in (1, 2):
                raw_tr, raw_te = raw_features(tr, len(vocab), halves), raw_features(te, len(vocab), halves)
                a = per_session_probe(raw_tr, raw_te)
                print(f"{probe}: raw dF/F, {halves} time bin(s) per window: {a:.3f}", flush=True)
                if args.nonlinear:
                    print(f"{probe}: raw dF/F, {halves} time bin(s) per window, MLP probe: "
                          f"{mlp_probe(raw_tr, raw_te):.3f}", flush=True)
            for seed in (0, 1, 2) if args.random_init else ():
                seed_everything(seed)
                enc = CalciumEncoder(cfg.encoder, len(vocab))
                a = per_session_probe(latent_features(enc, tr), latent_features(enc, te))
                print(f"{probe}: random-init encoder seed {seed}: {a:.3f}", flush=True)


if __name__ == "__main__":
    main()
