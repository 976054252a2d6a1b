"""Notebook 03: latent masked pretraining on the predictable pool, one run per seed, and its evaluation.

Pretraining *counts* (:func:`pretraining_checks`) only if linear probes on its frozen latents beat the same probes
on a random-init encoder (grating direction and movie time), and the held-out latents keep at least
:data:`STD_RATIO_FLOOR` of the random-init encoder's within-session std and effective rank (no collapse; the plain
std(Z_L) over all windows is still reported, but it also counts which session a window is from).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .. import filtering, paths
from ..config import Config
from ..data.recording import Recording
from ..data.splits import Pools, build_splits, make_pools
from ..data.windows import UnitVocab, WindowDataset, grating_windows, movie_windows, pretrain_windows
from ..evaluate import latent_features, masked_reconstruction, per_session_probe
from ..model.encoder import CalciumEncoder
from ..model.pretrain import TwinMaskedPretrainer, effective_rank
from ..parallel import memo, prefill, run_threads, uses_cpu
from ..plotting import save_table
from ..repro import run_metadata, seed_everything, weights_digest
from ..train import TrainSettings, load_state_exactly, read_history, save_atomic, train
from .common import artifact_dir, is_cached, keep_every, load_cached, load_recordings, subsample, table_header
from .filtering import load_partition

#: Bump when the training or evaluation code changes what a cached run would contain.
PRETRAIN_ARTIFACT_VERSION = 5  # 4: eval rows (collapse monitor) in metrics.csv; 5: one thread per CPU run
#: std(Z_L) on held-out windows must keep at least this fraction of its value at initialisation.
STD_RATIO_FLOOR = 0.5
#: spacing of the pretraining windows (s)
PRETRAIN_STRIDE_S = 0.25
#: files a finished pretraining run leaves; all must exist for it to be reused
RUN_FILES = ("encoder.pt", "metrics.csv", "evaluation.json")
#: notebook 03's pretraining pools and their artifact folders: POYO-CAP's (the predictable lines), and the positive
#: control (in-domain SSL on the downstream mice's own training windows; the main table fine-tunes from it too)
POOL_STAGES = {"predictable": "pretrain", "in_domain": "pretrain_in_domain"}


@dataclass
class PretrainRun:
    seed: int
    out_dir: Path
    encoder: CalciumEncoder
    history: pd.DataFrame
    evaluation: dict[str, float]
    cached: bool

    @property
    def weights_digest(self) -> str:
        """Identity of the encoder's weights (fine-tuning runs started from it include it in their key)."""
        return weights_digest(self.encoder.state_dict())


@dataclass
class PretrainStage:
    runs: list[PretrainRun]  # the predictable pool's (POYO-CAP's encoders), one per seed
    summary: pd.DataFrame
    pool: pd.DataFrame
    vocab_size: int
    in_domain: list[PretrainRun] = field(default_factory=list)  # the positive control's, one per seed
    in_domain_summary: pd.DataFrame = field(default_factory=pd.DataFrame)

    @classmethod
    def of(cls, runs: Sequence[PretrainRun]) -> "PretrainStage":
        """A stage holding only ``runs`` (the encoders fine-tuning starts from; no summary): the ablation rows."""
        return cls(list(runs), pd.DataFrame(), pd.DataFrame(), 0)

    def run_for(self, pool: str, seed: int) -> PretrainRun:
        """The run of ``seed`` on ``pool`` (``predictable`` or ``in_domain``)."""
        runs = {"predictable": self.runs, "in_domain": self.in_domain}.get(pool)
        if runs is None:
            raise ValueError(f"no pretraining pool {pool!r} in notebook 03 (predictable, in_domain)")
        for run in runs:
            if run.seed == seed:
                return run
        raise KeyError(f"no {pool} pretraining run of seed {seed}")


def pretrain_data(cfg: Config, recordings: Sequence[Recording], partition: filtering.Partition,
                  pool: str = "predictable") -> tuple[Pools, list[Recording], UnitVocab, dict[str, WindowDataset]]:
    """A pool's recordings, their unit vocabulary, and the train / val / probe datasets. ``pool``: ``predictable``
    (POYO-CAP's pretraining) or ``in_domain`` (the positive control: the downstream mice, whose training windows
    only are pretrained on)."""
    if pool not in POOL_STAGES:
        raise ValueError(f"unknown pretraining pool {pool!r}; notebook 03 runs {', '.join(POOL_STAGES)}")
    pools = make_pools(recordings, partition.predictable_lines)
    ids = set(pools.pretrain if pool == "predictable" else pools.downstream)
    recs = [r for r in recordings if r.session_id in ids]
    if not recs:
        raise ValueError(f"the {pool} pool is empty: the partition names no such line present in the data")
    vocab, data = pool_datasets(cfg, recs)
    return pools, recs, vocab, data


def pool_datasets(cfg: Config, recs: Sequence[Recording], stride_s: float = PRETRAIN_STRIDE_S
                  ) -> tuple[UnitVocab, dict[str, WindowDataset]]:
    """The unit vocabulary of ``recs`` and their pretraining datasets: ``train`` / ``val`` (pretraining windows of
    each split) and the probe datasets (grating and movie windows, train / val / test). Any pool of sessions can be
    pretrained on this way (the predictable pool, or the downstream mice's own training windows as a control): the
    splits are the same per-session splits fine-tuning uses, so no test window is ever pretrained on. ``stride_s``:
    spacing of the pretraining windows (a smaller one gives a pool with fewer sessions as many windows)."""
    vocab = UnitVocab([u for r in recs for u in r.unit_ids])
    splits = build_splits(recs, cfg.data.novel_frames_fraction)
    w = cfg.data.pretrain_window_s
    table = pretrain_windows(recs, splits, w, stride_s=stride_s)

    def ds(tab, split: str, train: bool = False, every: int = 1) -> WindowDataset:  # noqa: ANN001
        return keep_every(WindowDataset(recs, tab, split, vocab, cfg.data.max_units, train=train, seed=cfg.seed,
                                        normalize=cfg.data.normalize == "zscore"),
                          every)

    gr = grating_windows(recs, splits, w)
    mv = movie_windows(recs, splits, w, cfg.data.movie_lag_s)
    mv.direction = (mv.frame * 10 // max(cfg.data.movie_frames, 1)).astype(np.int64)  # probe target: 10 time bins
    data = {
        "train": ds(table, "train", train=True), "val": ds(table, "val"),
        "probe_grating_train": ds(gr, "train"), "probe_grating_test": ds(gr, "test"),
        "probe_movie_train": ds(mv, "train", every=3), "probe_movie_test": ds(mv, "test", every=2),
        # validation windows for choosing between objectives (tools/transfer_sweep.py prints both)
        "probe_grating_val": ds(gr, "val"), "probe_movie_val": ds(mv, "val", every=2),
    }
    return vocab, data


def pretraining_checks(evaluation: Mapping[str, float]) -> dict[str, bool]:
    """The rules that decide whether a pretraining run counts (all must hold)."""
    return {
        "grating probe beats random init": bool(evaluation["probe_grating_pretrained"]
                                                > evaluation["probe_grating_random"]),
        "movie probe beats random init": bool(evaluation["probe_movie_pretrained"] > evaluation["probe_movie_random"]),
        f"within-session std(Z_L) >= {STD_RATIO_FLOOR:.0%} of init": bool(
            evaluation["within_std_ratio"] >= STD_RATIO_FLOOR),
        f"effective rank >= {STD_RATIO_FLOOR:.0%} of init": bool(evaluation["eff_rank_ratio"] >= STD_RATIO_FLOOR),
    }


def within_session_spread(features: dict[str, np.ndarray]) -> tuple[float, float]:
    """Input-dependent spread of pooled latents ``features["features"] (N, S*D)``: each session's mean is removed
    first (what stays is how windows of one session differ), then the mean per-dimension std and the effective
    rank. The plain std over all windows also counts *which session* a window comes from, and a pretraining that
    turns Z_L into a session code scores well on it while discarding the stimulus (measured: docs/pretraining.md)."""
    x = features["features"].astype(np.float64).copy()
    for s in np.unique(features["session"]):
        x[features["session"] == s] -= x[features["session"] == s].mean(0)
    return float(x.std(0).mean()), effective_rank(torch.from_numpy(x))


def pretraining_verdicts(summary: pd.DataFrame) -> list[str]:
    """One line per seed: COUNTS / DOES NOT COUNT and each check."""
    lines = []
    for _, row in summary.iterrows():
        checks = pretraining_checks(row)
        verdict = "COUNTS" if all(checks.values()) else "DOES NOT COUNT"
        lines.append(f"seed {int(row['seed'])}: {verdict}  "
                     + "; ".join(f"{k}: {'yes' if v else 'no'}" for k, v in checks.items()))
    return lines


def random_init_encoder(cfg: Config, n_units: int, seed: int) -> CalciumEncoder:
    """The random-init encoder a pretraining run of ``seed`` starts from (the probes' baseline)."""
    seed_everything(seed)
    return CalciumEncoder(cfg.encoder, n_units)


def random_init_evaluation(cfg: Config, data: dict[str, WindowDataset], seed: int, n_units: int
                           ) -> dict[str, float]:
    """The random-init side of :func:`evaluate_pretraining`: std(Z_L) of the encoder the run started from (the same
    seed), its probes and held-out spread. Needs no pretrained weights, so a stage can compute it beside the
    pretraining (:func:`random_init_result`)."""
    random_enc = random_init_encoder(cfg, n_units, seed)
    with torch.no_grad():
        init_objective = TwinMaskedPretrainer(random_enc, cfg.pretrain)
        out = {"std_zl_init": masked_reconstruction(init_objective, data["val"])["std_zl"]}
    out.update(_probe_encoder(random_enc, data, "random"))
    return out


def _probe_encoder(encoder: CalciumEncoder, data: dict[str, WindowDataset], name: str) -> dict[str, float]:
    """Linear probes (grating direction, movie time) on ``encoder``'s frozen latents, and the held-out grating
    windows' within-session spread and effective rank."""
    out = {}
    for probe in ("grating", "movie"):
        tr = latent_features(encoder, data[f"probe_{probe}_train"])
        te = latent_features(encoder, data[f"probe_{probe}_test"])
        out[f"probe_{probe}_{name}"] = per_session_probe(tr, te)
        if probe == "grating":  # held-out grating windows: the collapse measures
            out[f"within_std_{name}"], out[f"eff_rank_{name}"] = within_session_spread(te)
    return out


def evaluate_pretraining(cfg: Config, objective: TwinMaskedPretrainer, data: dict[str, WindowDataset],
                         seed: int, random: Mapping[str, float] | None = None) -> dict[str, float]:
    """Held-out masked reconstruction vs copy-last, aux accuracy, std(Z_L) vs init, linear probes vs random init.
    ``random``: :func:`random_init_evaluation` of this seed when already computed."""
    out = {f"val_{k}": v for k, v in masked_reconstruction(objective, data["val"]).items()}
    if random is None:
        random = random_init_evaluation(cfg, data, seed, objective.encoder.n_units)
    out["std_zl_init"] = random["std_zl_init"]
    out["std_ratio"] = out["val_std_zl"] / out["std_zl_init"]
    out.update(_probe_encoder(objective.encoder, data, "pretrained"))
    out.update({k: v for k, v in random.items() if k != "std_zl_init"})
    out["within_std_ratio"] = out["within_std_pretrained"] / out["within_std_random"]
    out["eff_rank_ratio"] = out["eff_rank_pretrained"] / out["eff_rank_random"]
    out["pretraining_counts"] = float(all(pretraining_checks(out).values()))
    return out


def random_init_result(cfg: Config, partition: filtering.Partition, data: dict[str, WindowDataset], seed: int,
                       n_units: int, force: bool = False, stage: str = "pretrain") -> dict[str, float]:
    """:func:`random_init_evaluation` of ``seed`` on ``data``, cached beside the pretraining runs of ``stage``
    (written atomically: the stage's worker for it and a pretraining that needs it first may both compute it - the
    same numbers)."""
    path = run_dir(cfg, partition, seed, f"{stage}_random_init") / "random_init.json"
    if path.exists() and not force:
        return json.loads(path.read_text())
    with run_threads(cfg):
        result = random_init_evaluation(cfg, data, seed, n_units)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return result


def collapse_monitor(data: dict[str, WindowDataset], n_windows: int = 256
                     ) -> Callable[[TwinMaskedPretrainer, int], dict[str, float]]:
    """The eval-mode collapse curve logged during pretraining: within-session std and effective rank of the
    encoder's latents on a fixed, evenly spaced subset of the held-out grating windows (step 0 = the init)."""
    def measure(objective: TwinMaskedPretrainer, step: int) -> dict[str, float]:
        monitor = subsample(data["probe_grating_test"], n_windows)  # a copy: the probe set stays whole
        std, rank = within_session_spread(latent_features(objective.encoder, monitor))
        return {"within_std": std, "eff_rank": rank}

    return measure


def monitor_summary(history: pd.DataFrame) -> dict[str, float]:
    """The collapse monitor's last within-session std and effective rank relative to its step-0 (init) values."""
    ev = history[history["kind"] == "eval"].sort_values("step") if "kind" in history else pd.DataFrame()
    if ev.empty or "within_std" not in ev:
        return {}
    first, last = ev.iloc[0], ev.iloc[-1]
    return {"within_std_ratio": float(last["within_std"] / first["within_std"]),
            "eff_rank_ratio": float(last["eff_rank"] / first["eff_rank"]), "monitor_step": float(last["step"])}


def run_dir(cfg: Config, partition: filtering.Partition, seed: int, stage: str = "pretrain",
            key: Mapping[str, Any] | None = None) -> Path:
    """The artifact directory of one pretraining run (``stage`` / ``key``: see :func:`pretrain_run`)."""
    return artifact_dir(cfg, stage, ("data", "encoder", "pretrain"), PRETRAIN_ARTIFACT_VERSION,
                        f"-seed{seed}", predictable_lines=list(partition.predictable_lines), **(key or {}))


def _pretrain_data_memo(cfg: Config, pool: str) -> tuple:
    """A worker's (partition, vocab, datasets) of ``pool``, built once per worker."""
    def build() -> tuple:
        partition = load_partition(cfg)
        _, _, vocab, data = pretrain_data(cfg, load_recordings(cfg, progress=False), partition, pool)
        return partition, vocab, data

    return memo(("pretrain", cfg.digest(), pool), build)


def _pretrain_job(cfg: Config, seed: int, force: bool, pool: str) -> None:
    """A worker's job: one seed of ``pool``'s pretraining, written to its artifact directory."""
    partition, vocab, data = _pretrain_data_memo(cfg, pool)
    pretrain_run(cfg, partition, vocab, data, seed, force, progress=False, **_pool_run_args(pool))


def _random_init_job(cfg: Config, seed: int, force: bool, pool: str) -> None:
    """A worker's job: the random-init evaluation of one seed on ``pool`` (the pretraining's probes compare
    against it)."""
    partition, vocab, data = _pretrain_data_memo(cfg, pool)
    random_init_result(cfg, partition, data, seed, len(vocab), force, POOL_STAGES[pool])


def _pool_run_args(pool: str) -> dict[str, Any]:
    """:func:`pretrain_run`'s arguments for ``pool``: its artifact folder; the in-domain runs skip the probes
    (the costly part: ``tools/transfer_sweep.py --pool downstream`` measures them) and keep the collapse monitor."""
    return {"stage": POOL_STAGES[pool], "desc": f"pretrain [{pool}]", "evaluate": pool == "predictable"}


def pretrain_run(cfg: Config, partition: filtering.Partition, vocab: UnitVocab, data: dict[str, WindowDataset],
                 seed: int, force: bool = False, progress: bool = True, stage: str = "pretrain",
                 key: Mapping[str, Any] | None = None, desc: str = "pretrain", evaluate: bool = True) -> PretrainRun:
    """One seed: reuse the finished run of this config, or train (resuming an interrupted one) and evaluate.
    ``stage`` / ``key``: another artifact folder and what else names the run's inputs (the ablation pools).
    ``evaluate=False``: no probes (the costly part), only the collapse monitor's ratios (:func:`monitor_summary`)."""
    out = run_dir(cfg, partition, seed, stage, key)
    seed_everything(seed)
    objective = TwinMaskedPretrainer(CalciumEncoder(cfg.encoder, len(vocab)), cfg.pretrain)
    def reuse() -> PretrainRun:
        saved = torch.load(out / "encoder.pt", map_location="cpu", weights_only=False)["objective"]
        history = read_history(out / "metrics.csv")
        evaluation = json.loads((out / "evaluation.json").read_text())
        load_state_exactly(objective, saved)
        return PretrainRun(seed, out, objective.encoder, history, evaluation, cached=True)

    cached = load_cached(out, RUN_FILES, force, reuse)
    if cached is not None:
        return cached
    settings = TrainSettings(snapshot_every=cfg.pretrain.snapshot_every, checkpoint_every=cfg.pretrain.checkpoint_every,
                             eval_every=cfg.pretrain.snapshot_every)
    with run_threads(cfg):  # one thread per CPU run: numbers independent of the worker count (poyocap.parallel)
        result = train(objective, data["train"], cfg.pretrain.optim, settings, seed=seed, out_dir=out,
                       device="cpu" if uses_cpu(cfg) else None, config=cfg.to_dict(), progress=progress,
                       desc=f"{desc} seed {seed}", resume=not force, eval_fn=collapse_monitor(data))
        objective = result.objective.cpu()
        evaluation = (evaluate_pretraining(cfg, objective, data, seed,
                                           random_init_result(cfg, partition, data, seed, len(vocab), force, stage))
                      if evaluate else monitor_summary(result.history))
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=1))  # keeps the column order
    save_atomic({"objective": objective.state_dict(), "encoder": objective.encoder.state_dict(),
                 "encoder_cfg": cfg.to_dict()["encoder"], "vocab": vocab.ids,
                 "predictable_lines": list(partition.predictable_lines),
                 "metadata": run_metadata(cfg, seed=seed)}, out / "encoder.pt")
    return PretrainRun(seed, out, objective.encoder, result.history, evaluation, cached=False)


def pretrain_stage(cfg: Config, recordings: Sequence[Recording] | None = None, progress: bool = True,
                   force: bool = False, save: bool = True) -> PretrainStage:
    """One pretraining run per seed on the predictable pool, and one on the downstream mice's own training windows
    (the positive control, in-domain SSL); each reused from the artifact dir unless the config changed or
    ``force``; runs not cached run side by side in worker processes (:mod:`poyocap.parallel`). The predictable
    runs are evaluated (probes vs random init, collapse), the in-domain ones keep their collapse monitor; encoder
    checkpoints for fine-tuning. ``save``: write the summary tables."""
    if recordings is None:
        recordings = load_recordings(cfg, progress=progress)
    partition = load_partition(cfg)
    prepared = {pool: pretrain_data(cfg, recordings, partition, pool) for pool in POOL_STAGES}
    todo = [(pool, seed) for pool, stage in POOL_STAGES.items() for seed in cfg.eval.seeds
            if not is_cached(run_dir(cfg, partition, seed, stage), RUN_FILES, force)]
    # the random-init evaluations first (short, needed by the predictable runs' evaluations), then the pretrainings:
    # on 2 workers notebook 03's 3 seeds take ~1.6 job lengths instead of 2 (the random half of each evaluation
    # runs while the other worker trains)
    jobs = ([(_random_init_job, (cfg, seed, force, pool)) for pool, seed in todo if _pool_run_args(pool)["evaluate"]]
            + [(_pretrain_job, (cfg, seed, force, pool)) for pool, seed in todo])
    if prefill(cfg, jobs, "pretraining seeds", progress) > 1:
        force = False  # the workers have just (re)computed them: read them back
    runs = {pool: [pretrain_run(cfg, partition, vocab, data, seed, force, progress, **_pool_run_args(pool))
                   for seed in cfg.eval.seeds] for pool, (_, _, vocab, data) in prepared.items()}
    summary = pd.DataFrame([_summary_row(r) for r in runs["predictable"]])
    in_domain = pd.DataFrame([_summary_row(r) for r in runs["in_domain"]])
    if save:
        results = paths.results_dir(cfg.scale)
        save_table(summary, results / "pretraining_summary", table_header(
            cfg, f"pretrain pool: {', '.join(filtering.short_name(l) for l in partition.predictable_lines)}; "
                 f"seeds {list(cfg.eval.seeds)}; probes: logistic regression on frozen Z_L, test split"))
        save_table(in_domain, results / "pretraining_in_domain", table_header(
            cfg, f"positive control: pretrained on the downstream mice's own training windows; seeds "
                 f"{list(cfg.eval.seeds)}; collapse monitor (held-out grating windows) at the last step vs step 0"))
    pools, _, vocab, _ = prepared["predictable"]
    return PretrainStage(runs["predictable"], summary, pd.DataFrame(pools.summary(recordings)), len(vocab),
                         runs["in_domain"], in_domain)


def _summary_row(run: PretrainRun) -> dict[str, Any]:
    train_rows = run.history[run.history["kind"] == "train"]
    return {"seed": run.seed, "steps": int(train_rows["step"].max()),
            "final_recon": float(train_rows["recon"].tail(10).mean()), **run.evaluation}
