"""One function per notebook stage: config in, cached artifacts + tables out.

The notebooks and the command line (``python -m poyocap``) both call these, so there is one code path.
Every table written here names its data source and scale in its header; figures fed by synthetic data
carry the "SYNTHETIC DATA" stamp.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from . import filtering, paths
from .config import Config, DataConfig
from .data.recording import Recording
from .data.validate import line_statistics
from .plotting import save_table
from .repro import device_description, package_versions, seed_everything


def make_config(scale: str = "demo", source: str | None = None, seeds: str | Sequence[int] | None = None,
                partition: str | None = None) -> Config:
    """The scale's preset with the notebook's parameters applied (``seeds`` as ``"0,1,2"`` or a list)."""
    cfg = Config.for_scale(scale)
    over: dict[str, Any] = {}
    if source:
        over["data"] = {"source": source}
    if seeds is not None and seeds != "":
        seq = [int(s) for s in seeds.split(",")] if isinstance(seeds, str) else [int(s) for s in seeds]
        if not seq:
            raise ValueError("seeds must name at least one seed")
        over["eval"] = {"seeds": tuple(seq)}
        over["seed"] = seq[0]
    if partition:
        over["filtering"] = {"partition": partition}
    return cfg.with_overrides(**over) if over else cfg


def source_label(cfg: Config) -> str:
    """How tables name their data: ``synthetic observatory (SYNTHETIC DATA)`` or ``Allen Brain Observatory``."""
    return ("synthetic observatory (SYNTHETIC DATA)" if cfg.data.source == "synthetic"
            else "Allen Brain Observatory (real data)")


def table_header(cfg: Config, extra: str = "") -> list[str]:
    lines = [f"data source: {source_label(cfg)}", f"scale: {cfg.scale}; config digest {cfg.digest()}"]
    if extra:
        lines.append(extra)
    return lines


# -------------------------------------------------------------------------------------------------- 00 setup
def environment_report(cfg: Config) -> pd.DataFrame:
    """Versions, device, scale, cache and output directories as a two-column table."""
    rows = [("python", platform.python_version()), ("device", device_description()),
            ("scale", cfg.scale), ("data source", cfg.data.source), ("seeds", ", ".join(map(str, cfg.eval.seeds))),
            ("cache dir", str(paths.cache_dir())), ("output root", str(paths.output_root()))]
    rows += [(name, version) for name, version in package_versions().items()]
    return pd.DataFrame(rows, columns=["item", "value"])


def config_table(cfg: Config) -> pd.DataFrame:
    """The config tree flattened to (section, field, value)."""
    rows = []
    for section, value in cfg.to_dict().items():
        if isinstance(value, dict):
            for key, v in value.items():
                rows.append((section, key, ", ".join(map(str, v)) if isinstance(v, list) else str(v)))
        else:
            rows.append(("", section, str(value)))
    return pd.DataFrame(rows, columns=["section", "field", "value"])


# --------------------------------------------------------------------------------------------------- 01 data
def load_recordings(cfg: Config, progress: bool = True) -> list[Recording]:
    """Every session of the configured source (synthetic: generated once, then read from the cache)."""
    data: DataConfig = cfg.data
    if data.source == "synthetic":
        from .data.synthetic import SyntheticObservatory

        return SyntheticObservatory(data, seed=0, cache_dir=paths.cache_dir()).load_all(progress=progress)
    from .data.allen import AllenObservatory

    obs = AllenObservatory(paths.cache_dir() / "allen", cre_lines=data.cre_lines,
                           max_sessions_per_line=data.max_sessions_per_line,
                           frame_hw=(data.frame_height, data.frame_width))
    return obs.load_all(progress=progress)


def sessions_table(recordings: Sequence[Recording]) -> pd.DataFrame:
    """Lines x mice x sessions x cells."""
    df = pd.DataFrame([r.summary() for r in recordings])
    return (df.groupby("cre_line", sort=False)
              .agg(mice=("mouse_id", "nunique"), sessions=("session_id", "count"), rois=("n_units", "sum"),
                   rois_per_session=("n_units", "mean"), indicator=("indicator", "first"),
                   cell_class=("cell_class", "first"), depth_um=("depth_um", "median"),
                   minutes_per_session=("duration_s", lambda s: s.mean() / 60.0),
                   grating_trials=("n_grating_trials", "mean"), nan_frames=("n_nan_frames", "sum"))
              .reset_index())


@dataclass
class DataStage:
    recordings: list[Recording]
    sessions: pd.DataFrame
    line_stats: pd.DataFrame


def data_stage(cfg: Config, progress: bool = True) -> DataStage:
    """Load/generate the observatory, write the sessions table and the per-line validation statistics."""
    seed_everything(cfg.seed)
    recordings = load_recordings(cfg, progress=progress)
    sessions = sessions_table(recordings)
    stats = line_statistics(recordings, kurtosis=cfg.filtering.kurtosis_convention)
    out = paths.results_dir(cfg.scale)
    save_table(sessions, out / "data_sessions", table_header(cfg))
    save_table(stats, out / "data_line_statistics", table_header(
        cfg, "decay_fit_s: mean isolated transient fit; decay_allen_s: Allen event-decay constant (FACTS.md)"))
    return DataStage(recordings, sessions, stats)


# ---------------------------------------------------------------------------------------------- 02 filtering
def partition_path(cfg: Config) -> Path:
    """Where the Partition artifact of this scale/source/method lives."""
    name = f"partition_{cfg.data.source}_{cfg.filtering.partition}.json"
    return paths.artifacts_dir(cfg.scale, "filtering") / name


def load_partition(cfg: Config) -> filtering.Partition:
    """The Partition written by notebook 02 for this config."""
    return filtering.Partition.load(partition_path(cfg))


@dataclass
class FilteringStage:
    neurons: pd.DataFrame
    lines: pd.DataFrame
    partition: filtering.Partition
    bootstrap: pd.DataFrame
    sensitivity: pd.DataFrame
    agreement: pd.DataFrame
    comparison: pd.DataFrame


def filtering_stage(cfg: Config, recordings: Sequence[Recording] | None = None,
                    progress: bool = True) -> FilteringStage:
    """Statistics, knee thresholds, partition, bootstrap and S-sensitivity; saves the Partition artifact."""
    seed_everything(cfg.seed)
    fc = cfg.filtering
    if recordings is None:
        recordings = load_recordings(cfg, progress=progress)
    neurons = filtering.neuron_statistics(recordings, kurtosis=fc.kurtosis_convention)
    lines = filtering.line_table(neurons)
    partition = filtering.compute_partition(
        neurons, method=fc.partition, source=cfg.data.source, kurtosis_convention=fc.kurtosis_convention,
        sensitivity=fc.knee_sensitivity, config=cfg.to_dict(),
    )
    boot = filtering.bootstrap_stability(neurons, fc.n_bootstrap, fc.knee_sensitivity, seed=cfg.seed,
                                         progress=progress)
    sens = filtering.sensitivity_sweep(neurons, fc.sensitivity_grid)
    agree = filtering.label_free_agreement(neurons, partition)
    lines = lines.merge(boot[["cre_line", "p_predictable"]], on="cre_line").merge(
        agree[["cre_line", "frac_neurons_predictable"]], on="cre_line")
    lines["predictable"] = lines["cre_line"].isin(partition.predictable_lines)
    lines["paper_predictable"] = lines["cre_line"].isin(filtering.PAPER_PREDICTABLE_LINES)
    comparison = filtering_comparison(partition)
    partition.save(partition_path(cfg))
    out = paths.results_dir(cfg.scale)
    kurt = f"kurtosis convention: {fc.kurtosis_convention} (normal = {3 if fc.kurtosis_convention == 'pearson' else 0})"
    save_table(lines, out / "filtering_lines", table_header(cfg, kurt))
    save_table(comparison, out / "filtering_thresholds", table_header(cfg, kurt))
    save_table(sens, out / "filtering_sensitivity", table_header(cfg, kurt))
    return FilteringStage(neurons, lines, partition, boot, sens, agree, comparison)


def filtering_comparison(partition: filtering.Partition) -> pd.DataFrame:
    """Our thresholds and lines beside the paper's (real Allen data)."""
    ours = [filtering.short_name(l) for l in partition.predictable_lines]
    paper = [filtering.short_name(l) for l in filtering.PAPER_PREDICTABLE_LINES]
    match = set(partition.predictable_lines) == set(filtering.PAPER_PREDICTABLE_LINES)
    return pd.DataFrame([
        {"quantity": "skewness threshold", "ours": round(partition.thresholds["skewness"], 3),
         "paper": filtering.PAPER_THRESHOLDS["skewness"]},
        {"quantity": "kurtosis threshold", "ours": round(partition.thresholds["kurtosis"], 3),
         "paper": filtering.PAPER_THRESHOLDS["kurtosis"]},
        {"quantity": "predictable lines", "ours": ", ".join(sorted(ours)), "paper": ", ".join(sorted(paper))},
        {"quantity": "partition matches the paper", "ours": "yes" if match else "no", "paper": "-"},
        {"quantity": "method", "ours": partition.method, "paper": "knee (kneed) on per-line means"},
        {"quantity": "label-free skewness threshold (per neuron)",
         "ours": round(partition.neuron_thresholds.get("skewness", float("nan")), 3), "paper": "-"},
        {"quantity": "label-free kurtosis threshold (per neuron)",
         "ours": round(partition.neuron_thresholds.get("kurtosis", float("nan")), 3), "paper": "-"},
        {"quantity": "label-free predictable neurons", "ours": len(partition.predictable_units), "paper": "-"},
    ])


# ---------------------------------------------------------------------------------------------- 03 pretrain
@dataclass
class PretrainRun:
    seed: int
    out_dir: Path
    encoder: Any  # CalciumEncoder
    history: pd.DataFrame
    evaluation: dict[str, float]
    cached: bool


@dataclass
class PretrainStage:
    runs: list[PretrainRun]
    summary: pd.DataFrame
    pool: pd.DataFrame
    vocab_size: int


def pretrain_data(cfg: Config, recordings: Sequence[Recording], partition: filtering.Partition):
    """Pretrain-pool recordings, their unit vocabulary, splits, and the train/val/probe datasets."""
    from .data.splits import build_splits, make_pools
    from .data.windows import UnitVocab, WindowDataset, grating_windows, movie_windows, pretrain_windows

    pools = make_pools(recordings, partition.predictable_lines)
    recs = [r for r in recordings if r.session_id in pools.pretrain]
    if not recs:
        raise ValueError("the pretrain pool is empty: the partition names no predictable line present in the data")
    vocab = UnitVocab([u for r in recs for u in r.unit_ids])
    splits = build_splits(recs, cfg.data.novel_frames_fraction)
    w = cfg.data.pretrain_window_s
    table = pretrain_windows(recs, splits, w, stride_s=0.25)
    mu = cfg.data.max_units

    import numpy as np

    def ds(tab, split, train=False, every=1):  # noqa: ANN001, ANN202
        d = WindowDataset(recs, tab, split, vocab, mu, train=train, seed=cfg.seed)
        if every > 1:
            d.table = d.table.select(np.arange(len(d.table)) % every == 0)
        return d

    gr = grating_windows(recs, splits, w)
    mv = movie_windows(recs, splits, w, cfg.data.movie_lag_s)
    n_frames = cfg.data.movie_frames
    mv.direction = (mv.frame * 10 // max(n_frames, 1)).astype(np.int64)  # probe target: 10 movie-time bins
    data = {
        "train": ds(table, "train", train=True), "val": ds(table, "val"),
        "probe_grating_train": ds(gr, "train"), "probe_grating_test": ds(gr, "test"),
        "probe_movie_train": ds(mv, "train", every=3), "probe_movie_test": ds(mv, "test", every=2),
    }
    return pools, recs, vocab, data


#: Bump when the training or evaluation code changes what a cached run would contain.
PRETRAIN_ARTIFACT_VERSION = 2


def _pretrain_dir(cfg: Config, partition: filtering.Partition, seed: int) -> Path:
    import hashlib
    import json

    d = cfg.to_dict()
    payload = {k: d[k] for k in ("data", "encoder", "pretrain")}
    payload["version"] = PRETRAIN_ARTIFACT_VERSION
    payload["predictable_lines"] = list(partition.predictable_lines)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    return paths.artifacts_dir(cfg.scale, "pretrain") / f"{digest}-seed{seed}"


def evaluate_pretraining(cfg: Config, task: Any, data: dict, seed: int) -> dict[str, float]:
    """Held-out masked reconstruction vs copy-last, aux accuracy, std(Z_L) vs init, linear probes vs random init."""
    import torch

    from .evaluate import latent_features, masked_reconstruction, per_session_probe
    from .model.encoder import CalciumEncoder

    out = {f"val_{k}": v for k, v in masked_reconstruction(task, data["val"]).items()}
    seed_everything(seed)
    random_enc = CalciumEncoder(cfg.encoder, task.encoder.n_units)  # the same init the run started from
    with torch.no_grad():
        out["std_zl_init"] = masked_reconstruction(type(task)(random_enc, cfg.pretrain), data["val"])["std_zl"]
    out["std_ratio"] = out["val_std_zl"] / out["std_zl_init"]
    for name, enc in (("pretrained", task.encoder), ("random", random_enc)):
        for probe in ("grating", "movie"):
            tr = latent_features(enc, data[f"probe_{probe}_train"])
            te = latent_features(enc, data[f"probe_{probe}_test"])
            out[f"probe_{probe}_{name}"] = per_session_probe(tr, te)
    out["pretraining_counts"] = float(
        out["probe_grating_pretrained"] > out["probe_grating_random"]
        and out["probe_movie_pretrained"] > out["probe_movie_random"] and out["std_ratio"] >= 0.5)
    return out


def pretrain_stage(cfg: Config, recordings: Sequence[Recording] | None = None, progress: bool = True,
                   force: bool = False) -> PretrainStage:
    """One pretraining run per seed on the predictable pool (reused from the artifact dir unless the config
    changed or ``force``); evaluation of each run; encoder checkpoints for fine-tuning."""
    import json

    import torch

    from .model.encoder import CalciumEncoder
    from .model.pretrain import TwinMaskedPretrainer
    from .repro import run_metadata
    from .train import save_atomic, settings_from, train

    if recordings is None:
        recordings = load_recordings(cfg, progress=progress)
    partition = load_partition(cfg)
    pools, recs, vocab, data = pretrain_data(cfg, recordings, partition)
    runs = []
    for seed in cfg.eval.seeds:
        out = _pretrain_dir(cfg, partition, seed)
        enc_path = out / "encoder.pt"
        seed_everything(seed)
        encoder = CalciumEncoder(cfg.encoder, len(vocab))
        task = TwinMaskedPretrainer(encoder, cfg.pretrain)
        cached = enc_path.exists() and not force
        if cached:
            saved = torch.load(enc_path, map_location="cpu", weights_only=False)
            task.load_state_dict(saved["task"])
            history = pd.read_csv(out / "metrics.csv")
        else:
            settings = settings_from(cfg.pretrain, snapshot_every=cfg.pretrain.snapshot_every)
            # resume=True: an interrupted run of the same config (same directory) continues where it stopped
            result = train(task, data["train"], settings, seed=seed, out_dir=out, device="cpu" if cfg.scale != "paper"
                           else None, config=cfg.to_dict(), progress=progress, desc=f"pretrain seed {seed}",
                           resume=not force)
            history = result.history
            task = result.task.cpu()
        evaluation = evaluate_pretraining(cfg, task, data, seed) if not cached else json.loads(
            (out / "evaluation.json").read_text())
        if not cached:
            (out / "evaluation.json").write_text(json.dumps(evaluation, indent=1))  # keep column order
            save_atomic({"task": task.state_dict(), "encoder": task.encoder.state_dict(),
                         "encoder_cfg": cfg.to_dict()["encoder"], "vocab": vocab.ids,
                         "predictable_lines": list(partition.predictable_lines),
                         "metadata": run_metadata(cfg, seed=seed)}, enc_path)
        runs.append(PretrainRun(seed, out, task.encoder, history, evaluation, cached))
    rows = []
    for r in runs:
        train_rows = r.history[r.history["kind"] == "train"]
        rows.append({"seed": r.seed, "steps": int(train_rows["step"].max()),
                     "final_recon": float(train_rows["recon"].tail(10).mean()), **r.evaluation})
    summary = pd.DataFrame(rows)
    res = paths.results_dir(cfg.scale)
    save_table(summary, res / "pretraining_summary", table_header(
        cfg, f"pretrain pool: {', '.join(filtering.short_name(l) for l in partition.predictable_lines)}; "
             f"seeds {list(cfg.eval.seeds)}; probes: logistic regression on frozen Z_L, test split"))
    pool = pd.DataFrame(pools.summary(recordings))
    return PretrainStage(runs, summary, pool, len(vocab))


# ------------------------------------------------------------------------------------------ 04-05 fine-tuning
#: method -> (pretraining data, fine-tuning data) as the main table names them
METHODS = {
    "POYO-CAP": ("predictable lines", "unpredictable lines (downstream mice)"),
    "Scratch (all lines)": ("none", "all lines (pretrain + downstream mice)"),
    "Scratch (downstream)": ("none", "unpredictable lines (downstream mice)"),
}
PAPER_MAIN = {"POYO-CAP": {"ssim": 0.593, "acc": 0.555}, "Scratch (all lines)": {"ssim": 0.528, "acc": 0.492}}
FINETUNE_ARTIFACT_VERSION = 1


@dataclass
class FinetuneStage:
    task: str  # "movie" | "gratings"
    per_seed: pd.DataFrame  # one row per (method, seed): test metrics
    items: dict  # (method, seed) -> per-test-item score array (aligned across methods)
    histories: dict  # (method, seed) -> training history
    examples: dict  # method -> predictions for the first test items (first seed)
    targets: Any  # the matching true frames (movie) / all true labels (gratings)
    confusion: dict  # method -> summed confusion matrix over seeds (gratings)
    loss_spec: str
    n_test: int


def time_shuffled(recordings: Sequence[Recording], seed: int) -> list[Recording]:
    """Each ROI's dF/F circularly shifted by its own random offset (>= 30 s): keeps every trace's statistics,
    destroys its alignment with the stimulus (the "time-shuffled neurons" floor)."""
    import dataclasses

    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for r in recordings:
        shifts = rng.integers(900, max(901, r.n_frames - 900), size=r.n_units)
        dff = np.stack([np.roll(r.dff[:, j], int(s)) for j, s in enumerate(shifts)], axis=1)
        out.append(dataclasses.replace(r, dff=dff, valid=None))
    return out


def _windows(cfg: Config, recs: Sequence[Recording], task: str):
    from .data.splits import build_splits
    from .data.windows import grating_windows, movie_windows

    sp = build_splits(recs, cfg.data.novel_frames_fraction)
    if task == "movie":
        return movie_windows(recs, sp, cfg.data.movie_window_s, cfg.data.movie_lag_s)
    return grating_windows(recs, sp, cfg.data.pretrain_window_s)


def _dataset(cfg: Config, recs, table, split: str, vocab, train: bool, task: str, every: int = 1):  # noqa: ANN001
    import numpy as np

    from .data.windows import WindowDataset

    ds = WindowDataset(recs, table, split, vocab, cfg.data.max_units, train=train, with_images=(task == "movie"),
                       seed=cfg.seed)
    if every > 1:
        ds.table = ds.table.select(np.arange(len(ds.table)) % every == 0)
    return ds


def _subsampled(ds: Any, max_windows: int) -> Any:
    """Keep every k-th window so that at most ``max_windows`` remain (same windows for every method)."""
    import numpy as np

    if max_windows > 0 and len(ds) > max_windows:
        every = int(np.ceil(len(ds) / max_windows))
        ds.table = ds.table.select(np.arange(len(ds.table)) % every == 0)
    return ds


def _predict(model: Any, dataset: Any, task: str, batch_size: int = 128):
    import torch

    from .train import eval_batches

    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for batch in eval_batches(dataset, batch_size):
            out = model.predict(batch)
            preds.append(out if task == "movie" else out.argmax(-1))
            targets.append(batch["image"] if task == "movie" else batch["direction"])
    model.train()
    return torch.cat(preds), torch.cat(targets)


def _score_items(task: str, pred: Any, target: Any):
    """Per-item headline score: SSIM per frame (movie) or correct (gratings)."""
    from .evaluate import ssim_per_frame

    if task == "movie":
        return ssim_per_frame(pred, target)
    return (pred == target).cpu().numpy().astype(float)


def finetune_stage(cfg: Config, task: str, recordings: Sequence[Recording] | None = None, progress: bool = True,
                   force: bool = False, floors: bool = True) -> FinetuneStage:
    """POYO-CAP vs scratch (all lines; downstream only), every seed, on the downstream pool's test windows.

    Budget: scratch runs get the pretraining's steps added (``finetune.steps + pretrain.steps``); every run keeps
    the checkpoint with the best validation score. Movie floors: the mean training frame, and a POYO-CAP model
    fed time-shuffled neurons (first seed only). Runs are cached per config/method/seed.
    """
    import hashlib
    import json

    import numpy as np
    import torch

    from .data.splits import make_pools
    from .data.windows import UnitVocab
    from .evaluate import (confusion_matrix, frame_identification, pixel_correlation, ssim_per_frame,
                           ssim_torchmetrics)
    from .finetune import load_pretrained, mean_frame
    from .losses import MovieLoss, load_lpips
    from .model.encoder import CalciumEncoder
    from .train import TrainSettings, train

    if task not in ("movie", "gratings"):
        raise ValueError("task must be 'movie' or 'gratings'")
    if recordings is None:
        recordings = load_recordings(cfg, progress=progress)
    partition = load_partition(cfg)
    pools = make_pools(recordings, partition.predictable_lines)
    down = [r for r in recordings if r.session_id in pools.downstream]
    pre = [r for r in recordings if r.session_id in pools.pretrain]
    if not down:
        raise ValueError("the downstream pool is empty")
    perceptual = load_lpips() if task == "movie" else None
    loss = MovieLoss(perceptual) if task == "movie" else None
    loss_spec = loss.spec if loss is not None else "cross-entropy (8 directions)"
    pretrain = pretrain_stage(cfg, recordings, progress=progress)  # cached encoders (trains them if missing)
    d = cfg.to_dict()
    key = json.dumps({k: d[k] for k in ("data", "encoder", "pretrain", "finetune")} | {
        "lines": list(partition.predictable_lines), "task": task, "loss": loss_spec,
        "version": FINETUNE_ARTIFACT_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    root = paths.artifacts_dir(cfg.scale, f"finetune_{task}")
    down_table = _windows(cfg, down, task)
    build, kw = _decoder(task, cfg, loss)
    fc = cfg.finetune
    rows, items, histories, examples, confusion = [], {}, {}, {}, {}
    targets_out: Any = None

    def run(method: str, seed: int, train_recs, train_table, vocab_init, eval_recs, eval_table  # noqa: ANN001
            ) -> tuple[dict, Any, Any]:
        out = root / f"{digest}-{method.replace(' ', '_').replace('(', '').replace(')', '')}-seed{seed}"
        seed_everything(seed)
        if vocab_init == "pretrained":
            enc_path = next(r.out_dir for r in pretrain.runs if r.seed == seed) / "encoder.pt"
            model, vocab, _ = load_pretrained(enc_path, cfg, [u for r in train_recs for u in r.unit_ids], build, **kw)
            steps = fc.steps
        else:
            vocab = UnitVocab([u for r in train_recs for u in r.unit_ids])
            model = build(CalciumEncoder(cfg.encoder, len(vocab)), **kw)
            steps = fc.steps + cfg.pretrain.steps  # scratch gets the pretraining's budget too
        train_ds = _dataset(cfg, train_recs, train_table, "train", vocab, True, task)
        val_ds = _subsampled(_dataset(cfg, eval_recs, eval_table, "val", vocab, False, task), fc.max_eval_windows // 4)
        test_ds = _subsampled(_dataset(cfg, eval_recs, eval_table, "test", vocab, False, task), fc.max_eval_windows)

        def val_fn(m, step):  # noqa: ANN001, ANN202
            p, t = _predict(m, val_ds, task)
            return {"val_score": float(np.mean(_score_items(task, p, t)))}

        settings = TrainSettings(steps=steps, batch_size=fc.batch_size, lr=fc.lr, weight_decay=fc.weight_decay,
                                 warmup_steps=fc.warmup_steps, grad_clip=fc.grad_clip, eval_every=fc.eval_every,
                                 frozen_first_group_steps=fc.frozen_warmup_steps if vocab_init == "pretrained" else 0)
        cached = (out / "eval.npz").exists() and not force
        if cached:
            state = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
            model.load_state_dict(state)
            hist = pd.read_csv(out / "metrics.csv")
        else:
            res = train(model, train_ds, settings, seed=seed, out_dir=out, device="cpu" if cfg.scale != "paper"
                        else None, eval_fn=val_fn, select_key="val_score", config=cfg.to_dict(), progress=progress,
                        desc=f"{task} {method} seed {seed}", resume=not force)
            model, hist = res.task.cpu(), res.history
            torch.save(model.state_dict(), out / "model.pt")
        pred, target = _predict(model, test_ds, task)
        metrics = {"method": method, "seed": seed, "steps": steps, "n_test": len(test_ds)}
        per = _score_items(task, pred, target)
        if task == "movie":
            metrics.update(ssim=float(per.mean()), ssim_torchmetrics=ssim_torchmetrics(pred, target),
                           pixel_corr=float(pixel_correlation(pred, target).mean()))
            frames = test_ds.table.frame
            cand = np.unique(frames)
            movie = torch.from_numpy(eval_recs[0].movie[cand].astype(np.float32) / 255.0)
            exact, near = frame_identification(pred, frames, cand, movie, k=cfg.eval.frame_id_k)
            metrics.update(frame_id=float(exact.mean()), frame_id_k=float(near.mean()))
            novel_ds = _subsampled(_dataset(cfg, eval_recs, eval_table, "novel", vocab, False, task),
                                   fc.max_eval_windows)
            if len(novel_ds):
                pn, tn = _predict(model, novel_ds, task)
                metrics["ssim_novel"] = float(ssim_per_frame(pn, tn).mean())
        else:
            metrics["accuracy"] = float(per.mean())
            metrics["confusion"] = confusion_matrix(pred.cpu().numpy(), target.cpu().numpy())
        np.savez(out / "eval.npz", per_item=per)
        metrics["_per_item"] = per
        return metrics, (pred, target), hist

    all_recs = pre + down
    plans = [("POYO-CAP", down, down_table, "pretrained"),
             ("Scratch (all lines)", all_recs, _windows(cfg, all_recs, task), "scratch"),
             ("Scratch (downstream)", down, down_table, "scratch")]
    for seed in cfg.eval.seeds:
        for method, recs, table, init in plans:
            metrics, (pred, target), hist = run(method, seed, recs, table, init, down, down_table)
            if "confusion" in metrics:
                confusion[method] = confusion.get(method, 0) + metrics.pop("confusion")
            items[(method, seed)] = metrics.pop("_per_item")
            rows.append(metrics)
            histories[(method, seed)] = hist
            if seed == cfg.eval.seeds[0]:
                examples[method] = pred[:64] if task == "movie" else pred
                targets_out = target[:64] if task == "movie" else target
    if floors and task == "movie":
        from .data.splits import SPLIT_CODE

        train_frames = np.unique(down_table.frame[down_table.split == SPLIT_CODE["train"]])
        train_ds_frames = down[0].movie[train_frames]
        test_ref = _subsampled(_dataset(cfg, down, down_table, "test", UnitVocab([u for r in down for u in r.unit_ids]),
                                        False, task), fc.max_eval_windows)
        mf = torch.from_numpy(mean_frame(train_ds_frames).astype(np.float32) / 255.0)
        target = _targets(test_ref)
        pred = mf[None].expand_as(target)
        per = _score_items(task, pred, target)
        rows.append({"method": "Mean-frame predictor", "seed": -1, "steps": 0, "n_test": len(test_ref),
                     "ssim": float(per.mean()), "ssim_torchmetrics": ssim_torchmetrics(pred, target),
                     "pixel_corr": float("nan"), "frame_id": float("nan"), "frame_id_k": float("nan")})
        items[("Mean-frame predictor", -1)] = per
        shuffled = time_shuffled(down, seed=cfg.eval.seeds[0])
        shuffled_table = _windows(cfg, shuffled, task)  # same stimulus schedule as down_table
        metrics, _, hist = run("Time-shuffled neurons", cfg.eval.seeds[0], shuffled, shuffled_table, "pretrained",
                               shuffled, shuffled_table)
        items[("Time-shuffled neurons", cfg.eval.seeds[0])] = metrics.pop("_per_item")
        rows.append(metrics)
        histories[("Time-shuffled neurons", cfg.eval.seeds[0])] = hist
    per_seed = pd.DataFrame(rows)
    return FinetuneStage(task, per_seed, items, histories, examples, targets_out, confusion, loss_spec,
                         int(per_seed["n_test"].iloc[0]))


def _targets(dataset: Any):
    """The true frames of a movie dataset, in order (no model involved)."""
    import torch

    from .train import eval_batches

    return torch.cat([b["image"] for b in eval_batches(dataset, 256)])


def _decoder(task: str, cfg: Config, loss: Any):
    from .finetune import GratingDecoder, MovieDecoder

    if task == "movie":
        return MovieDecoder, {"frame_hw": (cfg.data.frame_height, cfg.data.frame_width), "loss": loss,
                              "channels": cfg.finetune.unet_channels,
                              "encoder_lr_scale": cfg.finetune.encoder_lr_scale}
    return GratingDecoder, {"encoder_lr_scale": cfg.finetune.encoder_lr_scale}


def main_table(cfg: Config, movie: FinetuneStage | None, gratings: FinetuneStage | None) -> pd.DataFrame:
    """The paper-format table: method, pretrain / fine-tune data, SSIM +- CI, accuracy +- CI, p-values, seeds,
    and the paper's numbers beside ours. p-values compare each method with POYO-CAP: paired t-test over seeds,
    and a paired bootstrap over test items (per-item scores averaged over seeds)."""
    import numpy as np

    from .evaluate import mean_ci, paired_bootstrap, paired_t

    seeds = list(cfg.eval.seeds)
    rows = []
    names = list(METHODS) + (["Mean-frame predictor", "Time-shuffled neurons"] if movie is not None else [])
    for name in names:
        row: dict[str, Any] = {"method": name, "pretrain_data": METHODS.get(name, ("-", "-"))[0],
                               "finetune_data": METHODS.get(name, ("-", "-"))[1]}
        for stage, metric, label in ((movie, "ssim", "ssim"), (gratings, "accuracy", "acc")):
            if stage is None:
                continue
            df = stage.per_seed[stage.per_seed["method"] == name].sort_values("seed")
            if df.empty:
                continue
            m, ci = mean_ci(df[metric].to_numpy(), cfg.eval.ci_level)
            row[f"{label}_mean"], row[f"{label}_ci95"] = m, ci
            row[f"{label}_seeds"] = len(df)
            if stage is movie:
                for extra in ("ssim_novel", "ssim_torchmetrics", "pixel_corr", "frame_id", "frame_id_k"):
                    if extra in df:
                        row[extra] = float(df[extra].mean())
            ref = stage.per_seed[stage.per_seed["method"] == "POYO-CAP"].sort_values("seed")
            if name != "POYO-CAP" and len(df) == len(ref) and len(df) > 1:
                row[f"{label}_p_ttest_vs_poyocap"] = paired_t(ref[metric].to_numpy(), df[metric].to_numpy())
            own = [stage.items[(name, s)] for s in df["seed"]]
            base = [stage.items[("POYO-CAP", s)] for s in seeds if ("POYO-CAP", s) in stage.items]
            if name != "POYO-CAP" and own and base and len(own[0]) == len(base[0]):
                bs = paired_bootstrap(np.mean(base, 0), np.mean(own, 0), cfg.eval.n_bootstrap, seed=0,
                                      level=cfg.eval.ci_level)
                row[f"{label}_p_bootstrap_vs_poyocap"] = bs["p"]
        paper = PAPER_MAIN.get(name, {})
        row["paper_ssim"] = paper.get("ssim", float("nan"))
        row["paper_acc"] = paper.get("acc", float("nan"))
        rows.append(row)
    table = pd.DataFrame(rows)
    order = ["method", "pretrain_data", "finetune_data", "ssim_mean", "ssim_ci95", "ssim_p_ttest_vs_poyocap",
             "ssim_p_bootstrap_vs_poyocap", "ssim_novel", "ssim_torchmetrics", "pixel_corr", "frame_id", "frame_id_k",
             "ssim_seeds", "acc_mean", "acc_ci95", "acc_p_ttest_vs_poyocap", "acc_p_bootstrap_vs_poyocap", "acc_seeds",
             "paper_ssim", "paper_acc"]
    table = table[[c for c in order if c in table] + [c for c in table if c not in order]]
    loss = movie.loss_spec if movie is not None else "-"
    header = table_header(cfg, f"seeds {seeds}; +- = 95 % Student-t CI over seeds; p: vs POYO-CAP (paired t over "
                               f"seeds; paired bootstrap over test items, {cfg.eval.n_bootstrap} resamples); movie loss: "
                               f"{loss}; SSIM: [0, 1] frames, data_range 1, Gaussian 11/1.5 ({cfg.data.frame_height}x"
                               f"{cfg.data.frame_width}, not comparable with the paper's 128x256); paper columns: real "
                               "Allen data (reference, not a target)")
    save_table(table, paths.results_dir(cfg.scale) / "main_results", header)
    return table
