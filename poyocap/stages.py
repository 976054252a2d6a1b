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
            (out / "evaluation.json").write_text(json.dumps(evaluation, indent=1, sort_keys=True))
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
