"""Pretrain, then fine-tune from it, scored on the downstream VALIDATION windows only (pretraining issue).

One pretraining run per variant on a pool of sessions, then a POYO-CAP-style fine-tuning of each task from its
encoder, next to a scratch fine-tuning with the same seed and steps. Prints one line per (variant, task).

    .venv/bin/python tools/transfer_sweep.py --pool downstream --variant pretrain.target=ema
    .venv/bin/python tools/transfer_sweep.py --pool predictable --variant base --scratch

``--pool downstream`` is the positive control (in-domain SSL): the downstream mice's own *training* windows (the
per-session splits are the ones fine-tuning uses, so no validation or test window is pretrained on).
Variants as in ``tools/decoder_sweep.py``; ``optim.*`` sets the pretraining's optimiser.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from poyocap.config import Config
from poyocap.data.windows import UnitVocab
from poyocap.evaluate import latent_features, per_session_probe_scores
from poyocap.finetune import load_pretrained
from poyocap.model.encoder import CalciumEncoder
from poyocap.model.pretrain import TwinMaskedPretrainer
from poyocap.repro import seed_everything
from poyocap.stages.common import load_recordings, subsample
from poyocap.stages.pretrain import evaluate_pretraining, pool_datasets, random_init_encoder
from poyocap.tasks import get_task
from poyocap.train import TrainSettings, train

from decoder_sweep import demo_pools, parse


def finetune(cfg: Config, task_name: str, down: list, steps: int, seed: int, encoder_path: Path | None,
             keep_pretrained_units: bool, device: str = "cpu", eval_every: int = 100) -> str:
    """Fine-tune one decoder (from ``encoder_path`` or random init); the validation curve as text."""
    task = get_task(task_name, cfg)
    table = task.windows(down)
    seed_everything(seed)
    units = [u for r in down for u in r.unit_ids]
    if encoder_path is None:
        vocab = UnitVocab(units)
        model = task.build(CalciumEncoder(cfg.encoder, len(vocab)), n_sessions=len(down))
    else:
        cls, kwargs = task.decoder(n_sessions=len(down))
        model, vocab, _ = load_pretrained(encoder_path, cfg, units, cls, **kwargs)
    vocab.session_rows([r.session_id for r in down])
    pretrained_rows = model.encoder.unit_emb.weight.detach().clone()
    task.initialise(model, down, table, vocab)
    if keep_pretrained_units and encoder_path is not None:  # units the encoder was pretrained on keep their rows
        saved = torch.load(encoder_path, map_location="cpu", weights_only=False)
        rows = torch.from_numpy(vocab.lookup(list(saved["vocab"])))
        with torch.no_grad():
            model.encoder.unit_emb.weight[rows] = pretrained_rows[rows]
    train_ds = task.dataset(down, table, "train", vocab, train=True)
    val_ds = subsample(task.dataset(down, table, "val", vocab), cfg.finetune.max_eval_windows // 4)

    def val_score(m, step):  # noqa: ANN001
        return {"val_score": float(np.mean(task.score_items(*task.predict(m, val_ds))))}

    opt = cfg.finetune.task_optim(task_name, steps)
    res = train(model, train_ds, opt, TrainSettings(eval_every=eval_every, checkpoint_every=0), seed=seed, device=device,
                eval_fn=val_score, select_key="val_score", progress=False)
    ev = res.history[res.history.kind == "eval"]
    return " ".join(f"{int(s)}:{v:.3f}" for s, v in zip(ev.step, ev.val_score))


def session_probes(encoder: CalciumEncoder, data: dict, device: str = "cpu", batch_size: int = 64) -> pd.DataFrame:
    """Notebook 03's linear probes per session, trained on the probe training windows and scored on the VALIDATION
    windows (what a choice between objectives may look at) and on the test windows (the reported result): one row per
    (probe, split, session) with its accuracy and number of scored windows. ``device`` / ``batch_size``: where and
    in what batches the latent features are computed (the probes run on CPU)."""
    rows = []
    for probe in ("grating", "movie"):
        train_features = latent_features(encoder, data[f"probe_{probe}_train"], batch_size, device)
        for split in ("val", "test"):
            test_features = latent_features(encoder, data[f"probe_{probe}_{split}"], batch_size, device)
            scores = per_session_probe_scores(train_features, test_features)
            rows += [{"probe": probe, "split": split, "session": s, "acc": a, "n": n} for s, (a, n) in scores.items()]
    return pd.DataFrame(rows)


def weighted_accuracy(rows: pd.DataFrame, column: str) -> float:
    """Accuracy over the sessions of ``rows`` (one per session) weighted by their scored windows ``n``: notebook 03's
    number for one (split, probe)."""
    return float(np.average(rows[column], weights=rows.n))


def paired_probe_lines(pretrained: pd.DataFrame, random: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Pretrained vs random-init probes paired by session: the merged table and one line per (split, probe) with the
    window-weighted accuracies (notebook 03's numbers), sessions won, the mean per-session difference and a Wilcoxon
    signed-rank p (two-sided) - one seed's comparison over sessions rather than one number against another."""
    both = pretrained.merge(random, on=["probe", "split", "session", "n"], suffixes=("_pretrained", "_random"))
    both["diff"] = both.acc_pretrained - both.acc_random
    lines = []
    for (split, probe), g in both.groupby(["split", "probe"], sort=False):
        weighted = [weighted_accuracy(g, f"acc_{k}") for k in ("pretrained", "random")]
        p = stats.wilcoxon(g["diff"]).pvalue if (g["diff"] != 0).any() else 1.0
        lines.append(f"{split:4s} {probe:7s} {weighted[0]:.3f} vs random {weighted[1]:.3f}; sessions won "
                     f"{int((g['diff'] > 0).sum())} / lost {int((g['diff'] < 0).sum())} of {len(g)}, mean difference "
                     f"{g['diff'].mean():+.4f}, Wilcoxon p {p:.3f}")
    return both, lines


def add_movie_time_ce(objective: TwinMaskedPretrainer, train_ds, recs: list, n_frames: int, lag_s: float,
                      weight: float) -> None:  # noqa: ANN001
    """A *supervised* control of the code path: label each pretraining window showing the movie with the movie-time
    bin (10 bins, the movie probe's target) of the frame ``lag_s`` before its end, and add ``weight`` x a
    cross-entropy on a linear head over the online latents, as the grating CE does for direction. If even this does
    not move the movie probe, the probe (or the data) cannot show what a pretraining learns."""
    tab = train_ds.table
    labels = np.full(len(tab.t0), -1, np.int64)
    for i, (s, t1) in enumerate(zip(tab.session, tab.t1)):
        rec = recs[int(s)]
        f = int(rec.movie_frames[max(0, int(t1) - 1 - int(round(lag_s * rec.sampling_rate_hz)))])
        labels[i] = f * 10 // max(n_frames, 1) if f >= 0 else -1
    tab.frame = labels
    d = objective.encoder.cfg.dim
    objective.movie_head = torch.nn.Sequential(torch.nn.LayerNorm(d), torch.nn.Linear(d, 10))
    plain = type(objective).forward

    def forward(batch):  # noqa: ANN001, ANN202
        loss, metrics = plain(objective, batch)
        lab = batch["frame"] >= 0
        if lab.any():
            z = objective.encoder(batch)[1]  # the whole window's latents, as the grating head sees them
            ce = torch.nn.functional.cross_entropy(objective.movie_head(z[lab].mean(1)).float(), batch["frame"][lab])
            loss = loss + weight * ce
            metrics["movie_ce"] = float(ce.detach())
        return loss, metrics

    objective.forward = forward
    print(f"movie-time CE x {weight} on {int((labels >= 0).sum())} of {len(labels)} training windows", flush=True)


def add_token_forecast(objective: TwinMaskedPretrainer, n_units: int, window_s: float, weight: float) -> None:
    """A *data-space* self-supervised term (an experiment beside the paper's latent-space one): from the online
    branch's latents (past tokens only, as for the latent loss), a linear per-unit read-out predicts each unit's mean
    z-scored dF/F in every masked latent step; ``weight`` x its L1 is added to the loss. No label is used."""
    cfg, d = objective.encoder.cfg, objective.encoder.cfg.dim
    objective.forecast_proj = torch.nn.Linear(d, d)
    objective.forecast_units = torch.nn.Embedding(n_units, d + 1)  # per-unit read-out weights and bias
    torch.nn.init.normal_(objective.forecast_units.weight, std=d ** -0.5)
    plain = type(objective).forward

    def forward(batch):  # noqa: ANN001, ANN202
        loss, metrics = plain(objective, batch)
        z = objective.encoder(objective.online_batch(batch, window_s))[1]  # (B, L, D)
        b, n_lat, _ = z.shape
        steps = z.view(b, -1, cfg.latents_per_step, d).mean(2)  # (B, S, D)
        n_steps = steps.shape[1]
        step_of_frame = (batch["times"] / cfg.latent_step_s).long().clamp(max=n_steps - 1)  # (B, T)
        onehot = torch.nn.functional.one_hot(step_of_frame, n_steps).float()  # (B, T, S)
        m = batch["mask"].float()  # (B, T, U)
        count = torch.einsum("bts,btu->bsu", onehot, m)
        target = torch.einsum("bts,btu->bsu", onehot, batch["values"] * m) / count.clamp(min=1)
        w = objective.forecast_units(batch["unit_index"])  # (B, U, D + 1)
        pred = torch.einsum("bsd,bud->bsu", objective.forecast_proj(steps), w[..., :d]) + w[..., None, :, d]
        future = torch.arange(n_steps, device=z.device) >= round((1 - objective.cfg.mask_ratio) * n_steps)
        keep = (count > 0) & future[None, :, None]
        err = (pred - target).abs()[keep].mean()
        metrics["forecast_l1"] = float(err.detach())
        return loss + weight * err, metrics

    objective.forward = forward


def real_interneuron_counts(cell_count_scale: float) -> None:
    """Scale the inhibitory lines' ROI counts by 1 / ``cell_count_scale`` in the generator's table, so a session plan
    at that scale draws their full ABO counts. The plan's random draws (and so every other session) are unchanged."""
    from poyocap.data import synthetic

    for line, phys in synthetic.LINE_PHYSIOLOGY.items():
        if phys.cell_class == "inhibitory":
            rois = int(round(phys.rois_per_session / cell_count_scale))
            synthetic.LINE_PHYSIOLOGY[line] = dataclasses.replace(phys, rois_per_session=rois)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", choices=("downstream", "predictable"), default="downstream")
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--tasks", default="gratings,movie")
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scratch", action="store_true", help="also fine-tune from random init (same seed, steps)")
    ap.add_argument("--keep-pretrained-units", action="store_true",
                    help="units present in the pretraining keep their pretrained embeddings (no response init)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--real-interneuron-counts", action="store_true",
                    help="generate the Sst / Vip / Pvalb sessions with their full ABO ROI counts (not x cell_count_scale): "
                         "a pretraining pool of realistic size; other sessions are unchanged")
    ap.add_argument("--save-encoder", type=Path, default=None,
                    help="also keep each variant's pretrained encoder here (<variant>-seed<S>.pt), e.g. for re-probing")
    ap.add_argument("--eval-every", type=int, default=100, help="fine-tuning: validation every this many steps")
    ap.add_argument("--movie-ce", type=float, default=0.0,
                    help="supervised control: add this weight x a movie-time cross-entropy to the pretraining")
    ap.add_argument("--token-forecast", type=float, default=0.0,
                    help="experiment: add this weight x an L1 forecast of the masked steps' dF/F (data space)")
    ap.add_argument("--probe-csv", type=Path, default=None,
                    help="append the per-session probes (pretrained and random init, val and test) to this CSV")
    args = ap.parse_args()
    ft = {"device": args.device, "eval_every": args.eval_every}
    base = Config.for_scale("demo")
    if args.real_interneuron_counts:
        real_interneuron_counts(base.data.cell_count_scale)
    recordings = load_recordings(base, progress=False)
    pools = demo_pools(recordings)
    down, pool = pools["downstream"], pools[args.pool]
    tasks = [t for t in args.tasks.split(",") if t]  # "" = probes only
    if args.scratch:
        for t in tasks:
            print(f"{'scratch':45s} {t:8s} {finetune(base, t, down, args.steps, args.seed, None, False, **ft)}", flush=True)
    for variant in args.variant or ["base"]:
        over: dict[str, Any] = parse(variant)
        optim = dict(over.pop("optim", {}))
        cfg = base.with_overrides(**over) if over else base
        vocab, data = pool_datasets(cfg, pool)
        seed_everything(args.seed)
        objective = TwinMaskedPretrainer(CalciumEncoder(cfg.encoder, len(vocab)), cfg.pretrain)
        if args.movie_ce:
            add_movie_time_ce(objective, data["train"], pool, cfg.data.movie_frames, cfg.data.movie_lag_s,
                              args.movie_ce)
        if args.token_forecast:
            add_token_forecast(objective, len(vocab), cfg.data.pretrain_window_s, args.token_forecast)
        t0 = time.perf_counter()
        res = train(objective, data["train"], dataclasses.replace(cfg.pretrain.optim, **optim), TrainSettings(),
                    seed=args.seed, device=args.device, progress=False)
        ev = evaluate_pretraining(cfg, res.objective.cpu(), data, args.seed)
        print(f"{variant:45s} seed {args.seed} pretrain {time.perf_counter() - t0:4.0f}s masked L1 "
              f"{ev['val_masked_l1']:.3f} vs copy-last {ev['val_copy_last_l1']:.3f}; pretrained / random: std "
              f"{ev['std_ratio']:.2f}, within-session std {ev['within_std_ratio']:.2f}, effective rank "
              f"{ev['eff_rank_ratio']:.2f}; probes "
              f"grating {ev['probe_grating_pretrained']:.3f} vs random {ev['probe_grating_random']:.3f}, movie "
              f"{ev['probe_movie_pretrained']:.3f} vs random {ev['probe_movie_random']:.3f}", flush=True)
        paired, lines = paired_probe_lines(session_probes(res.objective.encoder, data),
                                           session_probes(random_init_encoder(cfg, len(vocab), args.seed), data))
        for line in lines:  # "val" lines are the ones to choose on
            print(f"{variant:45s} seed {args.seed} probes per session, {line}", flush=True)
        if args.probe_csv is not None:
            paired.assign(variant=variant, seed=args.seed, pool=args.pool).to_csv(
                args.probe_csv, mode="a", header=not args.probe_csv.exists(), index=False)
        with tempfile.TemporaryDirectory() as tmp:  # one saved encoder: kept under --save-encoder, else temporary
            keep = args.save_encoder is not None
            path = (args.save_encoder / f"{variant.replace('/', '_')}-seed{args.seed}.pt" if keep
                    else Path(tmp) / "encoder.pt")
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"encoder": res.objective.encoder.state_dict(), "vocab": vocab.ids, "variant": variant,
                        "seed": args.seed, "pool": args.pool}, path)
            for t in tasks:
                curve = finetune(cfg, t, down, args.steps, args.seed, path, args.keep_pretrained_units, **ft)
                print(f"{variant:45s} {t:8s} {curve}", flush=True)


if __name__ == "__main__":
    main()
