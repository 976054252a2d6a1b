"""Validation sweep for the fine-tuned decoders (decoders issue): one scratch or pretrained model per variant,
scored on the downstream VALIDATION windows only (never test). Prints one line per variant.

    .venv/bin/python tools/decoder_sweep.py --task movie --steps 300 --variant base --variant "loss=l1ssim"

A variant is ``name`` or ``key=value,key=value`` over the fields of ``poyocap.config`` sections written as
``section.field`` (e.g. ``finetune.head_lr_scale=10,data.movie_window_s=0.5``).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import time

import numpy as np
import torch

from poyocap.config import Config
from poyocap.data.splits import make_pools
from poyocap.data.windows import UnitVocab
from poyocap.model.encoder import CalciumEncoder
from poyocap.references import LinearReference
from poyocap.repro import seed_everything
from poyocap.stages.common import load_recordings, subsample
from poyocap.tasks import get_task
from poyocap.train import TrainSettings, train

LINES = ("Ntsr1-Cre_GN220", "Pvalb-IRES-Cre", "Sst-IRES-Cre", "Vip-IRES-Cre")  # demo's computed partition


def demo_lines(recordings: list) -> list[str]:
    """The lines of ``recordings`` that are the demo's computed predictable lines."""
    prefixes = {x.split("-")[0] for x in LINES}
    return sorted({r.cre_line for r in recordings if r.cre_line.split("-")[0] in prefixes})


def demo_pools(recordings: list) -> dict[str, list]:
    """The demo's pools of ``recordings``: ``downstream`` (the fine-tuning mice; the positive control pretrains on
    their training windows) and ``predictable`` (POYO-CAP's pretraining pool), in recording order."""
    pools = make_pools(recordings, demo_lines(recordings))
    return {name: [r for r in recordings if r.session_id in ids]
            for name, ids in (("downstream", pools.downstream), ("predictable", pools.pretrain))}


def parse(variant: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if variant == "base":
        return out
    for part in variant.split(","):
        key, value = part.split("=")
        section, field = key.split(".")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        out.setdefault(section, {})[field] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="movie")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--sessions", type=int, default=0, help="use only the first N downstream sessions")
    ap.add_argument("--pool", choices=("downstream", "all"), default="downstream",
                    help="training pool: the downstream mice (Scratch (downstream)) or the predictable lines' "
                    "sessions as well (Scratch (all lines)); validation is always the downstream mice's")
    ap.add_argument("--no-train", action="store_true", help="only the references (with --references)")
    ap.add_argument("--references", action="store_true", help="also print the floor and the per-session linear "
                    "reference on the same validation windows")
    args = ap.parse_args()
    base = Config.for_scale("demo")
    loaded: dict[str, list] = {}
    for variant in args.variant or ["base"]:
        over = parse(variant)
        optim = dict(over.pop("optim", {}))
        cfg = base.with_overrides(**over) if over else base
        key = cfg.digest("data")
        if key not in loaded:
            recordings = load_recordings(cfg, progress=False)
            pools = demo_pools(recordings)
            down = pools["downstream"][: args.sessions or None]
            pre = pools["predictable"] if args.pool == "all" else []
            loaded[key] = (down, pre)
            print(f"downstream sessions {len(down)}, units {sum(r.n_units for r in down)}; training pool "
                  f"{len(pre + down)} sessions", flush=True)
        down, pre = loaded[key]
        train_recs = pre + down
        fc = cfg.finetune
        opt = dataclasses.replace(fc.task_optim(args.task, args.steps), **optim)
        task = get_task(args.task, cfg)
        table = task.windows(down)
        train_table = task.windows(train_recs) if pre else table
        vocab = UnitVocab([u for r in train_recs for u in r.unit_ids])
        seed_everything(args.seed)
        vocab.session_rows([r.session_id for r in train_recs])
        model = task.build(CalciumEncoder(cfg.encoder, len(vocab)), n_sessions=len(vocab.sessions))
        train_ds = task.dataset(train_recs, train_table, "train", vocab, train=True)
        task.initialise(model, train_recs, train_table, vocab)
        val_ds = subsample(task.dataset(down, table, "val", vocab), fc.max_eval_windows // 4)

        def extras(pred, target) -> str:  # noqa: ANN001
            """The movie's other test metrics (frame identification among the validation frames, pixel
            correlation, prediction diversity) on the validation windows."""
            if task.name != "movie":
                return ""
            m = task.test_metrics(pred, target, task.score_items(pred, target), val_ds,
                                  lambda split: (torch.zeros(0), torch.zeros(0)))
            return f" | frame_id_k {m['frame_id_k']:.3f} pixel_corr {m['pixel_corr']:.3f} diversity {m['diversity']:.2f}"

        if args.references:
            ref = LinearReference(task.name).fit(task.dataset(down, table, "train", vocab), val_ds)
            pred, target = ref.predict(val_ds)
            line = f"  reference (per session) {np.mean(task.score_items(pred, target)):.3f}{extras(pred, target)}"
            floor = task.constant_prediction(down, table, target)
            if floor is not None:
                line += f", floor {np.mean(task.score_items(floor, target)):.3f}"
            print(f"{variant}: {line}", flush=True)
        if args.no_train:
            continue

        def val_score(m, step):  # noqa: ANN001
            return {"val_score": float(np.mean(task.score_items(*task.predict(m, val_ds))))}

        t = time.perf_counter()
        res = train(model, train_ds, opt, TrainSettings(eval_every=args.eval_every, checkpoint_every=0), seed=args.seed,
                    device=args.device, eval_fn=val_score, select_key="val_score", progress=False)
        ev = res.history[res.history.kind == "eval"]
        curve = " ".join(f"{int(s)}:{v:.3f}" for s, v in zip(ev.step, ev.val_score))
        tr = res.history[res.history.kind == "train"].tail(20)
        curve += f"  | train loss (last 20 logs) {tr.loss.mean():.4f}" + (f" acc {tr.acc.mean():.3f}" if "acc" in tr else "")
        curve += extras(*task.predict(res.objective, val_ds))
        print(f"{variant:60s} n_train {len(train_ds)} n_val {len(val_ds)} {time.perf_counter() - t:6.0f}s  {curve}",
              flush=True)


if __name__ == "__main__":
    main()
