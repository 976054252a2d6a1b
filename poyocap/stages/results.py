"""The paper-format main table (notebook 05) and the headline verdict it supports."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import paths
from ..config import Config
from ..evaluate import mean_ci, paired_bootstrap, paired_t
from ..methods import METHODS, REFERENCE_METHOD, Method
from ..plotting import save_table
from .common import table_header
from .finetune import FinetuneStage

#: column order of the main table (columns not listed follow)
MAIN_COLUMNS = ("method", "pretrain_data", "finetune_data", "ssim_mean", "ssim_ci95", "ssim_p_ttest_vs_poyocap",
                "ssim_p_bootstrap_vs_poyocap", "ssim_novel", "ssim_torchmetrics", "pixel_corr", "frame_id",
                "frame_id_k", "diversity", "ssim_seeds", "acc_mean", "acc_ci95",
                "acc_p_ttest_vs_poyocap", "acc_p_bootstrap_vs_poyocap", "acc_seeds", "paper_ssim", "paper_acc")
#: the headline comparison: the reference method against this baseline
HEADLINE_BASELINE = "Scratch (all lines)"
SIGNIFICANCE = 0.05


def _task_columns(cfg: Config, stage: FinetuneStage, name: str) -> dict[str, Any]:
    """Mean +- CI over seeds, extras, and the p-values against the reference method, for one method and task."""
    metric, label = stage.metric, stage.label
    df = stage.per_seed[stage.per_seed["method"] == name].sort_values("seed")
    if df.empty:
        return {}
    m, ci = mean_ci(df[metric].to_numpy(), cfg.eval.ci_level)
    row: dict[str, Any] = {f"{label}_mean": m, f"{label}_ci95": ci, f"{label}_seeds": len(df)}
    row.update({extra: float(df[extra].mean()) for extra in stage.table_extras if extra in df})
    if name == REFERENCE_METHOD:
        return row
    ref = stage.per_seed[stage.per_seed["method"] == REFERENCE_METHOD].sort_values("seed")
    if len(df) == len(ref) and len(df) > 1:
        row[f"{label}_p_ttest_vs_poyocap"] = paired_t(ref[metric].to_numpy(), df[metric].to_numpy())
    own = [stage.items[(name, s)] for s in df["seed"]]
    base = [stage.items[(REFERENCE_METHOD, s)] for s in cfg.eval.seeds if (REFERENCE_METHOD, s) in stage.items]
    if own and base and len(own[0]) == len(base[0]):
        bs = paired_bootstrap(np.mean(base, 0), np.mean(own, 0), cfg.eval.n_bootstrap, seed=0, level=cfg.eval.ci_level)
        row[f"{label}_p_bootstrap_vs_poyocap"] = bs["p"]
    return row


def _method_row(cfg: Config, method: Method, stages: list[FinetuneStage]) -> dict[str, Any] | None:
    row: dict[str, Any] = {"method": method.name, "pretrain_data": method.pretrain_data,
                           "finetune_data": method.finetune_data}
    found = False
    for stage in stages:
        cols = _task_columns(cfg, stage, method.name)
        found = found or bool(cols)
        row.update(cols)
    if not found:
        return None
    row["paper_ssim"] = method.paper.get("ssim", float("nan"))
    row["paper_acc"] = method.paper.get("acc", float("nan"))
    return row


def main_table(cfg: Config, movie: FinetuneStage | None, gratings: FinetuneStage | None) -> pd.DataFrame:
    """The paper-format table: method, pretrain / fine-tune data, SSIM +- CI, accuracy +- CI, p-values, seeds,
    and the paper's numbers beside ours; one row per registered method that has results. p-values compare each
    method with POYO-CAP: paired t-test over seeds, and a paired bootstrap over test items (per-item scores
    averaged over seeds)."""
    stages = [s for s in (movie, gratings) if s is not None]
    rows = [row for m in METHODS if (row := _method_row(cfg, m, stages)) is not None]
    table = pd.DataFrame(rows)
    table = table[[c for c in MAIN_COLUMNS if c in table] + [c for c in table if c not in MAIN_COLUMNS]]
    loss = movie.loss_spec if movie is not None else "-"
    header = table_header(cfg, f"seeds {list(cfg.eval.seeds)}; +- = 95 % Student-t CI over seeds; p: vs POYO-CAP "
                               f"(paired t over seeds; paired bootstrap over test items, {cfg.eval.n_bootstrap} "
                               f"resamples); movie loss: {loss}; SSIM: [0, 1] frames, data_range 1, Gaussian 11/1.5 "
                               f"({cfg.data.frame_height}x{cfg.data.frame_width}, not comparable with the paper's "
                               "128x256); paper columns: real Allen data (reference, not a target)")
    save_table(table, paths.results_dir(cfg.scale) / "main_results", header)
    return table


def headline(table: pd.DataFrame) -> list[str]:
    """POYO-CAP against the paper's baseline on each task: the difference, its paired-t p and the verdict
    ("beats" only when the difference is positive and p < 0.05)."""
    t = table.set_index("method")
    lines = []
    for task, col in (("movie SSIM", "ssim"), ("grating accuracy", "acc")):
        if f"{col}_mean" not in t:
            continue
        diff = t.loc[REFERENCE_METHOD, f"{col}_mean"] - t.loc[HEADLINE_BASELINE, f"{col}_mean"]
        p = t.loc[HEADLINE_BASELINE].get(f"{col}_p_ttest_vs_poyocap", float("nan"))
        verdict = "beats" if diff > 0 and p < SIGNIFICANCE else "does not beat"
        lines.append(f"{task}: {REFERENCE_METHOD} - {HEADLINE_BASELINE} = {diff:+.3f} (paired t p = {p:.3f}): "
                     f"{REFERENCE_METHOD} {verdict} scratch")
        lines += _against_references(t, task, col)
    return lines


def _against_references(t: pd.DataFrame, task: str, col: str) -> list[str]:
    """Which deep rows clear the per-session linear reference of a task (none: the comparison above is moot)."""
    roles = {m.name: m.role for m in METHODS}
    refs = [n for n in t.index if roles.get(n) == "reference" and "(per session)" in n and pd.notna(
        t.loc[n, f"{col}_mean"])]
    deep = [n for n in t.index if roles.get(n) == "method" and pd.notna(t.loc[n, f"{col}_mean"])]
    lines = []
    for ref in refs:
        bar = t.loc[ref, f"{col}_mean"]
        above = [f"{n} {t.loc[n, f'{col}_mean']:.3f}" for n in deep if t.loc[n, f"{col}_mean"] >= bar]
        lines.append(f"{task}: {ref} {bar:.3f}; deep rows at or above it: {', '.join(above) if above else 'none'}")
    return lines


#: the main table's positive control and the row it is read against (same fine-tuning, no pretraining)
POSITIVE_CONTROL = ("In-domain SSL (positive control)", "Scratch (downstream)")


def paired_comparison(stages: Sequence[FinetuneStage], a: str, b: str) -> list[str]:
    """``a`` against ``b`` on each task's headline metric, paired by seed: the mean difference, the seeds where
    ``a`` is higher, and the paired t-test p (two-sided; NaN with fewer than 2 shared seeds)."""
    lines = []
    for stage in stages:
        by = stage.per_seed.pivot_table(index="seed", columns="method", values=stage.metric)
        if a not in by or b not in by:
            continue
        both = by[[a, b]].dropna()
        diff = both[a] - both[b]
        lines.append(f"{stage.task} {stage.label}: {a} - {b} = {diff.mean():+.3f} over seeds {list(both.index)} "
                     f"({int((diff > 0).sum())} of {len(diff)} higher), paired t p = "
                     f"{paired_t(both[a].to_numpy(), both[b].to_numpy()):.3f}")
    return lines
