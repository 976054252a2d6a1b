"""Notebook 06: baselines and ablations (:data:`poyocap.methods.ABLATIONS`), all on the main table's protocol.

Every row shares the downstream test windows, the seeds, the fine-tuning step budget, model selection on
validation and the evaluation code with notebooks 04-05 (it runs through :func:`poyocap.stages.finetune.run_method`).
What a row changes is its pretraining pool (:func:`ablation_pools`), its pretraining objective, its encoder or
decoder, or its input (CEBRA embeddings, :mod:`poyocap.cebra_embed`).

Budget: without ``extended`` the table runs the first seed only, with ``QUICK_STEP_FRACTION`` of the pretraining and
fine-tuning steps for *every* row, POYO-CAP and scratch included (so the rows stay comparable with each other, not
with the main table); ``extended`` runs every seed at the config's full budget.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import filtering, paths
from ..cebra_embed import CebraSettings, embedded_recordings, fit_cebra
from ..config import Config, stable_digest
from ..data.recording import Recording
from ..data.splits import build_splits, make_pools
from ..evaluate import mean_ci, paired_bootstrap, paired_t
from ..methods import ABLATIONS, Method, get_method
from ..parallel import memo, prefill, run_threads
from ..plotting import save_table

from .common import artifact_dir, keep_evenly, load_cached, load_recordings, step_budget, table_header
from .filtering import load_partition
from .finetune import FinetuneSetup, Pool, finetune_setup, reference_result, run_method, time_shuffled
from .pretrain import PRETRAIN_STRIDE_S, PretrainRun, PretrainStage, pool_datasets, pretrain_run

#: fraction of the pretraining and fine-tuning steps of every row in the quick (non-extended) table: 15 rows and 8
#: pretrainings must fit the demo's 10 minutes on 2 cores
QUICK_STEP_FRACTION = 1 / 3
#: pools matched to POYO-CAP's pretraining data in ROIs and training windows
SIZE_MATCHED = ("reverse", "mixed", "time_shuffled")
#: CEBRA iterations and batch size per scale (the loss curve in notebook 06 shows whether it plateaued); on 2 CPU
#: cores one iteration of the 18-session behaviour model takes ~0.25 s at batch 128
CEBRA_BUDGET = {"smoke": (30, 64), "demo": (250, 128), "paper": (10000, 512)}
REFERENCE = ABLATIONS[0].name


@dataclass
class AblationStage:
    cfg: Config  # the config the rows ran with (reduced steps unless extended)
    per_seed: pd.DataFrame  # one row per (method, task, seed)
    items: dict  # (method, task, seed) -> per-test-item scores
    pools: pd.DataFrame  # pretraining pool sizes
    cebra_curves: dict[str, np.ndarray]
    pretraining: pd.DataFrame  # per pretrained row: collapse measures and probes
    references: pd.DataFrame  # linear references of the same test windows (main table's)
    seeds: tuple[int, ...]
    extended: bool


def ablation_config(cfg: Config, extended: bool) -> Config:
    """The config every row runs with: ``cfg`` (extended), or ``QUICK_STEP_FRACTION`` of its steps."""
    if extended:
        return cfg

    def fraction(steps: int) -> int:
        return max(2, int(round(steps * QUICK_STEP_FRACTION)))

    def cut(optim):  # noqa: ANN001, ANN202
        steps = fraction(optim.steps)
        return replace(optim, steps=steps, warmup_steps=min(optim.warmup_steps, steps // 4))

    movie_steps = fraction(cfg.finetune.movie_steps) if cfg.finetune.movie_steps else 0
    return cfg.with_overrides(pretrain={"optim": cut(cfg.pretrain.optim)},
                              finetune={"optim": cut(cfg.finetune.optim), "movie_steps": movie_steps})


# ------------------------------------------------------------------------------------------------------ pools
def subset_units(rec: Recording, keep: np.ndarray) -> Recording:
    """``rec`` with only the ROIs ``keep`` (indices, sorted)."""
    keep = np.sort(np.asarray(keep, dtype=int))
    roi_valid = None if rec.roi_valid is None else rec.roi_valid[:, keep]
    return dataclasses.replace(rec, dff=rec.dff[:, keep], unit_ids=[rec.unit_ids[i] for i in keep],
                               valid=rec.valid.copy(), roi_valid=roi_valid)


def match_units(recs: Sequence[Recording], n_units: int, seed: int) -> list[Recording]:
    """Drop ROIs at random, evenly across sessions, until about ``n_units`` remain (unchanged if already fewer)."""
    total = sum(r.n_units for r in recs)
    if total <= n_units:
        return list(recs)
    rng = np.random.default_rng(seed)
    share = np.array([r.n_units for r in recs]) * n_units / total
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share)[:n_units - counts.sum()]] += 1  # largest remainders: exactly n_units
    return [subset_units(r, rng.choice(r.n_units, size=k, replace=False)) for r, k in zip(recs, counts) if k > 0]


def ablation_pools(cfg: Config, recordings: Sequence[Recording], partition: filtering.Partition
                   ) -> dict[str, list[Recording]]:
    """Every pretraining pool of the table; none holds a downstream mouse except ``in_domain`` (the downstream
    mice's own recordings, of which only the training windows are pretrained on).

    predictable: POYO-CAP's pool. reverse: the unpredictable lines' held-out mice. mixed: half of POYO-CAP's ROI
    count from each of those two. inhibitory: predictable lines of inhibitory cell class. time_shuffled: the
    predictable pool, every trace circularly shifted. label_free: the neurons of non-downstream mice below both
    per-neuron knees (any line). Pools in :data:`SIZE_MATCHED` are cut to POYO-CAP's ROI count here (their
    training windows in :func:`pool_data`).
    """
    pools = make_pools(recordings, partition.predictable_lines)
    by_id = {r.session_id: r for r in recordings}
    predictable = [by_id[s] for s in pools.pretrain]
    reverse = [by_id[s] for s in pools.reverse]
    n_units = sum(r.n_units for r in predictable)
    seed = cfg.seed
    out: dict[str, list[Recording]] = {"predictable": predictable}
    if reverse:
        out["reverse"] = match_units(reverse, n_units, seed)
        out["mixed"] = match_units(reverse, n_units // 2, seed) + match_units(predictable, n_units - n_units // 2,
                                                                            seed + 1)
    out["inhibitory"] = [r for r in predictable if r.cell_class == "inhibitory"]
    out["time_shuffled"] = time_shuffled(predictable, seed=seed)
    allowed = set(partition.predictable_units)
    label_free = []
    for r in [by_id[s] for s in pools.pretrain + pools.reverse]:
        keep = [i for i, u in enumerate(r.unit_ids) if u in allowed]
        if keep:
            label_free.append(subset_units(r, np.asarray(keep)))
    out["label_free"] = label_free
    out["in_domain"] = [by_id[s] for s in pools.downstream]
    downstream_mice = {by_id[s].mouse_id for s in pools.downstream}
    for name, recs in out.items():
        if name != "in_domain" and downstream_mice & {r.mouse_id for r in recs}:
            raise AssertionError(f"pool {name!r} holds a downstream mouse")
    return {k: v for k, v in out.items() if v}


def pool_data(cfg: Config, recs: Sequence[Recording], target_windows: int = 0):  # noqa: ANN201
    """Vocabulary and datasets of a pool; with ``target_windows`` the training windows are matched to it (a
    denser stride when the pool has fewer sessions, then an even subsample down to at most the target)."""
    vocab, data = pool_datasets(cfg, recs)
    n = len(data["train"])
    if target_windows and n < target_windows:
        vocab, data = pool_datasets(cfg, recs, stride_s=PRETRAIN_STRIDE_S * n / target_windows * 0.95)
    if target_windows:
        data["train"] = keep_evenly(data["train"], target_windows)
    return vocab, data


def pool_sizes(name: str, recs: Sequence[Recording], n_windows: int) -> dict[str, Any]:
    return {"pool": name, "sessions": len(recs), "mice": len({r.mouse_id for r in recs}),
            "rois": sum(r.n_units for r in recs), "train_windows": n_windows,
            "lines": ", ".join(sorted({filtering.short_name(r.cre_line) for r in recs}))}


def pretrain_key(method: Method, seed: int) -> tuple[str, str, int]:
    """What names one pretraining of the table: ``method``'s pool, its objective overrides and the seed (rows that
    share it share the pretraining)."""
    return method.options.get("pool", "predictable"), stable_digest(dict(method.options.get("pretrain", {}))), seed


# ------------------------------------------------------------------------------------------------------ rows
class AblationRunner:
    """Runs the rows; caches pretrainings (one serves every row with the same pool and objective) and CEBRA fits."""

    def __init__(self, cfg: Config, recordings: Sequence[Recording], progress: bool, force: bool) -> None:
        self.cfg, self.recordings, self.progress, self.force = cfg, list(recordings), progress, force
        self.partition = load_partition(cfg)
        self.pools = ablation_pools(cfg, recordings, self.partition)
        self.base: dict[str, FinetuneSetup] = {}
        self.pretrained: dict[tuple, PretrainRun] = {}
        self.cebra: dict[tuple[str, int], tuple[Pool, np.ndarray]] = {}
        self.target_windows = len(pool_datasets(cfg, self.pools["predictable"])[1]["train"])
        self.pool_rows: dict[str, dict[str, Any]] = {}

    def setup(self, task: str) -> FinetuneSetup:
        if task not in self.base:
            self.base[task] = finetune_setup(self.cfg, task, self.recordings, self.progress,
                                             pretrain=PretrainStage.of([]))
        return self.base[task]

    def pretrain(self, method: Method, seed: int, target_windows: int | None = None) -> PretrainRun:
        """The pretraining of ``method``'s pool and objective (``target_windows``: match its training windows to
        that count; default: POYO-CAP's for the pools in :data:`SIZE_MATCHED`, else all windows)."""
        name = method.options.get("pool", "predictable")
        overrides = dict(method.options.get("pretrain", {}))
        memo = pretrain_key(method, seed)
        if memo not in self.pretrained:
            pcfg = self.cfg.with_overrides(pretrain=overrides) if overrides else self.cfg
            recs = self.pools[name]
            if target_windows is None:
                target_windows = self.target_windows if name in SIZE_MATCHED else 0
            vocab, data = pool_data(pcfg, recs, target_windows)
            self.pool_rows[name] = pool_sizes(name, recs, len(data["train"]))
            key = {"pool": name, "sessions": sorted(r.session_id for r in recs),
                   "units": stable_digest(sorted(u for r in recs for u in r.unit_ids)), "n_train": len(data["train"]),
                   "probes": False}
            self.pretrained[memo] = pretrain_run(pcfg, self.partition, vocab, data, seed, self.force, self.progress,
                                                 stage="ablation_pretrain", key=key, desc=f"pretrain [{name}]",
                                                 evaluate=False)
        return self.pretrained[memo]

    def cebra_pool(self, mode: str, seed: int, task: str) -> tuple[Pool, np.ndarray]:
        if (mode, seed) not in self.cebra:
            down = self.setup(task).downstream.recordings
            iterations, batch = CEBRA_BUDGET.get(self.cfg.scale, CEBRA_BUDGET["paper"])
            settings = CebraSettings(mode=mode, max_iterations=iterations, batch_size=batch)
            out = artifact_dir(self.cfg, "ablation_cebra", ("data",), 2, f"-{mode}-seed{seed}",  # 2: one thread
                               settings=dataclasses.asdict(settings))

            def reuse() -> tuple[list[np.ndarray], np.ndarray]:
                saved = np.load(out / "embedding.npz")
                return [saved[f"s{k}"] for k in range(len(down))], saved["curve"]

            cached = load_cached(out, ("embedding.npz",), self.force, reuse)
            if cached is None:
                splits = build_splits(down, self.cfg.data.novel_frames_fraction)
                with run_threads(self.cfg):  # numbers independent of the worker count (poyocap.parallel)
                    recs, curve = fit_cebra(down, splits, settings, seed=seed)
                out.mkdir(parents=True, exist_ok=True)
                np.savez(out / "embedding.npz", curve=curve, **{f"s{k}": r.dff for k, r in enumerate(recs)})
            else:
                dffs, curve = cached
                recs = embedded_recordings(down, dffs)
            self.cebra[(mode, seed)] = (recs, curve)
        recs, curve = self.cebra[(mode, seed)]
        table = self.setup(task).task.windows(recs)
        return Pool(recs, table), curve

    def row_setup(self, method: Method, task: str, seed: int) -> FinetuneSetup:
        """The task's setup as ``method`` sees it: its pretrained encoder, its input (CEBRA embeddings)."""
        setup = dataclasses.replace(self.setup(task))
        if method.init == "pretrained":
            setup.pretrain = PretrainStage.of([self.pretrain(method, seed)])
        source = method.options.get("input", "")
        if source.startswith("cebra_"):
            pool, _ = self.cebra_pool(source.removeprefix("cebra_"), seed, task)
            setup.downstream = setup.everyone = pool
            setup.key = dict(setup.key, cebra_budget=CEBRA_BUDGET.get(self.cfg.scale))
        return setup

    def run(self, method: Method, task: str, seed: int) -> tuple[dict[str, Any], np.ndarray]:
        res = run_method(self.row_setup(method, task, seed), method, seed, self.force, self.progress)
        return res.metrics, res.per_item


def ablation_stage(cfg: Config, recordings: Sequence[Recording] | None = None, extended: bool = False,
                   progress: bool = True, force: bool = False) -> AblationStage:
    """Every row of :data:`ABLATIONS` on every task it lists, for the first seed (or all, ``extended``)."""
    acfg = ablation_config(cfg, extended)
    if recordings is None:
        recordings = load_recordings(cfg, progress=progress)
    seeds = tuple(cfg.eval.seeds) if extended else tuple(cfg.eval.seeds[:1])
    runner = AblationRunner(acfg, recordings, progress, force)
    if _prefill_rows(acfg, seeds, force, progress) > 1:
        runner.force = False  # the workers have just (re)computed every pretraining and row: read them back
    rows, items = [], {}
    for seed in seeds:
        for method in ABLATIONS:
            for task in method.tasks:
                metrics, per = runner.run(method, task, seed)
                rows.append({**metrics, "task": task})
                items[(method.name, task, seed)] = per
    pretraining = pd.DataFrame([
        {"pool": k[0], "overrides": k[1], "seed": k[2], **{m: run.evaluation.get(m, np.nan) for m in (
            "within_std_ratio", "eff_rank_ratio", "monitor_step")}}
        for k, run in runner.pretrained.items()])
    curves = {mode: curve for (mode, seed), (_, curve) in runner.cebra.items() if seed == seeds[0]}
    return AblationStage(acfg, pd.DataFrame(rows), items, pd.DataFrame(list(runner.pool_rows.values())), curves,
                         pretraining, _references(cfg, recordings, progress), seeds, extended)


def _prefill_rows(acfg: Config, seeds: Sequence[int], force: bool, progress: bool) -> int:
    """Every row's pretraining and CEBRA fit (each once), then every row's fine-tuning, in worker processes
    (:mod:`poyocap.parallel`); the stage then reads them back in table order. Returns the number of workers."""
    inputs, seen = [], set()
    for seed in seeds:
        for method in ABLATIONS:
            source = method.options.get("input", "")
            need = (("cebra", source, seed) if source.startswith("cebra_")
                    else pretrain_key(method, seed) if method.init == "pretrained" else None)
            if need is not None and need not in seen:
                seen.add(need)
                inputs.append((_ablation_input_job, (acfg, method, seed, force)))
    runs = [(_ablation_row_job, (acfg, method, task, seed, force))
            for seed in seeds for method in ABLATIONS for task in method.tasks]
    workers = prefill(acfg, inputs, "ablations: pretraining and CEBRA", progress)
    return max(workers, prefill(acfg, runs, "ablations: rows", progress))


def _worker_runner(acfg: Config, force: bool) -> AblationRunner:
    return memo(("ablations", acfg.digest(), force),
                lambda: AblationRunner(acfg, load_recordings(acfg, progress=False), progress=False, force=force))


def _ablation_input_job(acfg: Config, method: Method, seed: int, force: bool) -> None:
    """A worker's job: the pretraining (or CEBRA fit) ``method``'s rows start from."""
    runner = _worker_runner(acfg, force)
    source = method.options.get("input", "")
    if source.startswith("cebra_"):
        runner.cebra_pool(source.removeprefix("cebra_"), seed, method.tasks[0])
    else:
        runner.pretrain(method, seed)


def _ablation_row_job(acfg: Config, method: Method, task: str, seed: int, force: bool) -> None:
    """A worker's job: one row's fine-tuning; its pretraining / CEBRA fit is read from the cache (first phase)."""
    run_method(_worker_runner(acfg, False).row_setup(method, task, seed), method, seed, force, progress=False)


def _references(cfg: Config, recordings: Sequence[Recording], progress: bool) -> pd.DataFrame:
    """The main table's per-session linear references and the mean-frame floor on the same test windows (cached by
    notebooks 04-05 at the config's own budget: references have no steps)."""
    from .finetune import floor_result

    rows = []
    setups = {task: finetune_setup(cfg, task, recordings, progress, pretrain=PretrainStage.of([]))
              for task in ("movie", "gratings")}
    for task, name in (("movie", "Reference: ridge (per session)"), ("gratings", "Reference: logistic (per session)"),
                       ("movie", "Mean-frame predictor")):
        setup = setups[task]
        method = get_method(name)
        res = floor_result(setup, method) if method.role == "floor" else reference_result(setup, method, -1)
        if res is not None:
            rows.append({"method": name, "task": task, "score": res.metrics[setup.task.metric], "role": method.role})
    return pd.DataFrame(rows)


METRIC = {"movie": ("ssim", "ssim"), "gratings": ("accuracy", "acc")}


def ablation_table(stage: AblationStage) -> pd.DataFrame:
    """One row per method: per task mean, 95 % CI (Student t over seeds with >= 2 seeds, else a bootstrap over test
    items), p against POYO-CAP (paired t over seeds, or paired bootstrap over items), the paper's value."""
    cfg, df = stage.cfg, stage.per_seed
    out = []
    for method in ABLATIONS:
        row: dict[str, Any] = {"method": method.name, "pretrain_data": method.pretrain_data}
        for task in ("movie", "gratings"):
            metric, label = METRIC[task]
            own = df[(df["method"] == method.name) & (df["task"] == task)].sort_values("seed")
            if own.empty:
                continue
            ref = df[(df["method"] == REFERENCE) & (df["task"] == task)].sort_values("seed")
            per = np.mean([stage.items[(method.name, task, s)] for s in own["seed"]], axis=0)
            base = np.mean([stage.items[(REFERENCE, task, s)] for s in ref["seed"]], axis=0)
            mean, ci = mean_ci(own[metric].to_numpy(), cfg.eval.ci_level)
            if len(own) < 2:  # one seed: bootstrap over the test items
                boot = paired_bootstrap(per, np.zeros_like(per), cfg.eval.n_bootstrap, seed=0, level=cfg.eval.ci_level)
                ci = (boot["ci_high"] - boot["ci_low"]) / 2
            row.update({f"{label}_mean": mean, f"{label}_ci95": ci, f"{label}_seeds": len(own)})
            if method.name != REFERENCE:
                row[f"{label}_p_vs_poyocap"] = (paired_t(ref[metric].to_numpy(), own[metric].to_numpy())
                                                if len(own) > 1 and len(own) == len(ref) else
                                                paired_bootstrap(base, per, cfg.eval.n_bootstrap, seed=0)["p"])
        row["paper_ssim"] = method.paper.get("ssim", np.nan)
        row["paper_acc"] = method.paper.get("acc", np.nan)
        out.append(row)
    return pd.DataFrame(out)


def interpretability(table: pd.DataFrame, references: pd.DataFrame) -> str:
    """One line: can the rows be read? Only when POYO-CAP and scratch reach the per-session linear references
    (the decoders issue's bar) on every task of the table."""
    short = []
    for task, col in (("movie", "ssim_mean"), ("gratings", "acc_mean")):
        ref = references[(references["task"] == task) & (references["role"] == "reference")]
        if ref.empty or col not in table:
            continue
        bar = float(ref["score"].max())
        for name in (REFERENCE, "Scratch (downstream)"):
            score = table.loc[table["method"] == name, col]
            if len(score) and float(score.iloc[0]) < bar:
                short.append(f"{name} {task} {float(score.iloc[0]):.3f} < {bar:.3f}")
    if short:
        return ("ROWS CANNOT BE INTERPRETED YET: deep decoders below the per-session linear references ("
                + "; ".join(short) + ")")
    return "deep decoders at or above the per-session linear references: rows can be compared"


def save_ablation_table(stage: AblationStage, table: pd.DataFrame) -> None:
    ci = "Student t over seeds" if len(stage.seeds) > 1 else "bootstrap over test items (1 seed)"
    steps = step_budget(stage.cfg)
    header = table_header(
        stage.cfg, f"seeds {list(stage.seeds)}; +- = 95 % CI ({ci}); p vs POYO-CAP (same budget); {steps} for every "
                   f"row{' (quick table: a fraction of the main table budget)' if not stage.extended else ''}; "
                   "paper columns: real Allen data")
    save_table(table, paths.results_dir(stage.cfg.scale) / "ablations", header + [
        interpretability(table, stage.references)])
