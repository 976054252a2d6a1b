"""Notebook 07's own training runs (the rest of :mod:`poyocap.stages.analyses` reuses notebook 06's): grating
accuracy vs encoder width, vs pretraining neurons with unpredictable ones added, vs the kurtosis of the pretraining
neurons. Every run goes through the ablation table's runner (same protocol, cached per config / pool / method)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import filtering
from ..config import Config
from ..data.recording import Recording
from ..data.splits import make_pools
from ..methods import ABLATIONS, Method, get_method
from ..model.encoder import CalciumEncoder
from .ablations import AblationRunner, match_units, subset_units
from .pretrain import pool_datasets


def scaling_table(cfg: Config, recordings: Sequence[Recording], dims: Sequence[int], seeds: Sequence[int],
                  progress: bool) -> pd.DataFrame:
    """Downstream grating accuracy vs encoder width (same depth, heads and steps) for POYO-CAP's pool, the mixed
    pool (size-matched) and scratch."""
    rows = []
    for dim in dims:
        dcfg = cfg.with_overrides(encoder={"dim": dim})
        runner = AblationRunner(dcfg, recordings, progress, force=False)
        n_params = sum(p.numel() for n, p in CalciumEncoder(dcfg.encoder, 1).named_parameters()
                       if not n.startswith("unit_emb"))
        for seed in seeds:
            for name in ("POYO-CAP", "Mixed SSL (size-matched)", "Scratch (downstream)"):
                metrics, _ = runner.run(get_method(name, ABLATIONS), "gratings", seed)
                rows.append({"condition": name, "dim": dim, "encoder_params": n_params, "seed": seed,
                             "accuracy": metrics["accuracy"]})
    return pd.DataFrame(rows)


def neuron_scaling_table(cfg: Config, runner: AblationRunner, fractions: Sequence[float], seeds: Sequence[int]
                         ) -> pd.DataFrame:
    """The paper's "scaling collapse": POYO-CAP's pool plus unpredictable neurons (held-out mice, ``fraction`` x the
    pool's ROI count), all windows of every session kept - more neurons *and* more data; grating accuracy after
    fine-tuning. Fraction 0 is POYO-CAP's own pretraining."""
    predictable = runner.pools["predictable"]
    split = make_pools(runner.recordings, runner.partition.predictable_lines)  # the whole reverse pool, unmatched
    by_id = {r.session_id: r for r in runner.recordings}
    reverse = [by_id[s] for s in split.reverse]
    n_pred = sum(r.n_units for r in predictable)
    rows = []
    for frac in fractions:
        name = "predictable" if frac == 0 else f"predictable+{frac:g}x_unpredictable"
        if frac and reverse:
            runner.pools[name] = predictable + match_units(reverse, int(round(frac * n_pred)), cfg.seed)
        elif frac:
            continue
        for seed in seeds:
            method = (get_method("POYO-CAP", ABLATIONS) if frac == 0 else
                      Method(f"Neurons: {name}", name, "unpredictable lines (downstream mice)", init="pretrained",
                             tasks=("gratings",), options={"pool": name}))
            metrics, _ = runner.run(method, "gratings", seed)
            rows.append({"pool": name, "unpredictable_fraction": frac,
                         "rois": sum(r.n_units for r in runner.pools[name]), "seed": seed,
                         "accuracy": metrics["accuracy"]})
    return pd.DataFrame(rows)


def kurtosis_pools(recordings: Sequence[Recording], runner: AblationRunner, n_bins: int) -> dict[str, list[Recording]]:
    """Neurons of non-downstream mice split into ``n_bins`` equal-count bins of their kurtosis (Pearson), each bin
    as a pool of recordings restricted to its neurons."""
    excluded = {r.session_id for r in runner.pools["in_domain"]}
    recs = [r for r in recordings if r.session_id not in excluded]
    stats = filtering.neuron_statistics(recs)
    stats = stats[stats["ok"]]
    edges = np.quantile(stats["kurtosis"], np.linspace(0, 1, n_bins + 1))
    bins = np.clip(np.searchsorted(edges, stats["kurtosis"], side="right") - 1, 0, n_bins - 1)
    pools = {}
    for k in range(n_bins):
        units = set(stats["unit_id"][bins == k])
        pool = []
        for r in recs:
            keep = [i for i, u in enumerate(r.unit_ids) if u in units]
            if keep:
                pool.append(subset_units(r, np.asarray(keep)))
        pools[f"kurtosis_q{k}"] = (pool, float(np.median(stats["kurtosis"][bins == k])))
    return pools


def dose_response_table(cfg: Config, recordings: Sequence[Recording], runner: AblationRunner, n_bins: int,
                        seeds: Sequence[int]) -> pd.DataFrame:
    """Pretrain on each kurtosis bin (training windows matched to the smallest bin), fine-tune the grating decoder."""
    pools = kurtosis_pools(recordings, runner, n_bins)
    for name, (pool, _) in pools.items():
        runner.pools[name] = pool
    target = min(len(pool_datasets(cfg, pool)[1]["train"]) for pool, _ in pools.values())
    rows = []
    for seed in seeds:
        for name, (pool, med) in pools.items():
            method = Method(f"Dose: {name}", name, "unpredictable lines (downstream mice)", init="pretrained",
                            tasks=("gratings",), options={"pool": name})
            runner.pretrain(method, seed, target_windows=target)
            metrics, _ = runner.run(method, "gratings", seed)
            rows.append({"bin": name, "median_kurtosis": med, "rois": sum(r.n_units for r in pool), "seed": seed,
                         "accuracy": metrics["accuracy"]})
    return pd.DataFrame(rows)
