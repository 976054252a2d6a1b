"""Notebook 07: the paper's explanations of why predictable neurons help (:mod:`poyocap.analysis`), run on the
pipeline's artifacts: the ablation table's pretrainings (predictable vs size-matched reverse pool, the same budget,
reused from notebook 06's cache), the main table's fine-tuned models (notebooks 04-05), and small extra runs for
scaling and the kurtosis dose-response (reduced grids unless ``extended``).

Every number here describes a pretraining that does not count unless notebook 03's checks pass (the table header
says so), and it comes from synthetic data at the demo scale.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .. import filtering
from ..analysis import curves, fisher, landscape, transfer
from ..config import Config
from ..data.recording import Recording
from ..data.windows import UnitVocab, collate
from ..evaluate import latent_features, per_session_probe
from ..methods import ABLATIONS, get_method
from ..model.encoder import CalciumEncoder
from ..model.pretrain import TwinMaskedPretrainer
from ..repro import seed_everything
from .ablations import AblationRunner, ablation_config
from .analyses_runs import dose_response_table, neuron_scaling_table, scaling_table
from .common import load_recordings, step_budget, subsample
from .pretrain import PretrainRun, pool_datasets

POOLS = ("predictable", "reverse")  # the two pretraining pools every comparison uses (size-matched)


@dataclass
class AnalysesStage:
    cfg: Config
    rows: list[dict[str, Any]] = field(default_factory=list)  # the analyses table
    fisher_curves: pd.DataFrame | None = None
    efficiency: pd.DataFrame | None = None
    surfaces: dict = field(default_factory=dict)  # (pool, plane) -> (alphas, betas, surface, path or None)
    scaling: pd.DataFrame | None = None
    dose: pd.DataFrame | None = None
    neurons: pd.DataFrame | None = None
    transfer: pd.DataFrame | None = None


def _pool_method(pool: str):  # noqa: ANN202
    return next(m for m in ABLATIONS if m.options.get("pool") == pool and "pretrain" not in m.options)


def _objective(cfg: Config, run: PretrainRun, n_units: int) -> TwinMaskedPretrainer:
    """The whole trained objective of ``run`` (encoder, mask token, auxiliary head), eval mode."""
    obj = TwinMaskedPretrainer(CalciumEncoder(cfg.encoder, n_units), cfg.pretrain)
    obj.load_state_dict(torch.load(run.out_dir / "encoder.pt", map_location="cpu", weights_only=False)["objective"])
    return obj.eval()


def _snapshots(cfg: Config, run: PretrainRun, n_units: int, seed: int) -> list[tuple[int, TwinMaskedPretrainer]]:
    """(step, objective) for the initialisation (step 0, re-created from the seed) and every saved snapshot."""
    seed_everything(seed)
    out = [(0, TwinMaskedPretrainer(CalciumEncoder(cfg.encoder, n_units), cfg.pretrain).eval())]
    for path in sorted((run.out_dir / "snapshots").glob("step_*.pt")):
        obj = TwinMaskedPretrainer(CalciumEncoder(cfg.encoder, n_units), cfg.pretrain)
        obj.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))
        out.append((int(path.stem.split("_")[1]), obj.eval()))
    return out


def fisher_rows(cfg: Config, runner: AblationRunner, seed: int, n_samples: int) -> list[dict[str, Any]]:
    """Empirical Fisher trace of the pretraining loss per window, each pool's data, at the shared random init and
    at each pool's own pretrained encoder (eval mode: no dropout noise in the gradient)."""
    rows = []
    for pool in POOLS:
        run = runner.pretrain(_pool_method(pool), seed)
        vocab, data = pool_datasets(cfg, runner.pools[pool])
        samples = [collate([data["val"][i]]) for i in np.linspace(0, len(data["val"]) - 1, n_samples).astype(int)]
        seed_everything(seed)
        init = TwinMaskedPretrainer(CalciumEncoder(cfg.encoder, len(vocab)), cfg.pretrain).eval()
        for state, obj in (("random init", init), ("pretrained", _objective(cfg, run, len(vocab)))):
            value = fisher.empirical_fisher_per_sample(obj, lambda s, o=obj: o(s)[0], samples)
            rows.append({"pool": pool, "encoder": state, "fisher_trace_per_window": value})
    return rows


def linear_fisher_table(cfg: Config, recordings: Sequence[Recording], partition: filtering.Partition,
                        neuron_counts: Sequence[int], n_trials: int) -> pd.DataFrame:
    """Bias-corrected linear Fisher information about direction (0 vs 45 deg, ds = pi/4 rad; mean dF/F over the
    first second of each trial; ``n_trials`` per direction, or all a session has if fewer) per session, averaged
    within predictable and unpredictable lines, vs neuron count (counts a session cannot support are left out)."""
    rows = []
    for rec in recordings:
        trials = rec.grating_trials
        ok = np.isfinite(trials["direction_deg"])
        start = np.searchsorted(rec.timestamps, trials["start"][ok])
        resp = np.stack([np.nanmean(rec.dff[s:s + int(rec.sampling_rate_hz)], 0) for s in start])
        labels = np.round(trials["direction_deg"][ok]).astype(int)
        t = min(n_trials, int(min((labels == 0).sum(), (labels == 45).sum())))  # fewer repeats at small scales
        info = fisher.linear_fisher_vs_neurons(resp, labels, (0, 45), np.pi / 4, neuron_counts, t,
                                               n_draws=10, seed=cfg.seed)
        group = "predictable" if rec.cre_line in partition.predictable_lines else "unpredictable"
        rows += [{"group": group, "session": rec.session_id, "neurons": n, "linear_fisher": v}
                 for n, v in zip(neuron_counts, info)]
    df = pd.DataFrame(rows, columns=["group", "session", "neurons", "linear_fisher"]).dropna()
    return (df.groupby(["group", "neurons"])["linear_fisher"].agg(["mean", "count"]).reset_index()
            .rename(columns={"count": "sessions"}))


def _downstream_probe_sets(cfg: Config, runner: AblationRunner) -> tuple[Any, Any, Any, UnitVocab]:
    """The common downstream probe: grating windows of the downstream mice (train, at most 600, and test), their
    pool (for the response-profile unit init every encoder gets) and vocabulary (downstream units only)."""
    setup = runner.setup("gratings")
    down = setup.downstream
    vocab = UnitVocab(down.units())
    vocab.session_rows([r.session_id for r in down.recordings])
    train = subsample(setup.task.dataset(down.recordings, down.table, "train", vocab), 600)
    test = setup.task.dataset(down.recordings, down.table, "test", vocab)
    return train, test, down, vocab


def downstream_probe(cfg: Config, encoder: CalciumEncoder, probe_sets: tuple[Any, Any, Any, UnitVocab]) -> float:
    """Grating-direction probe (per session, frozen Z_L) on the downstream mice through ``encoder``'s trunk, their
    unit embeddings set from response profiles - the same deterministic init for every encoder
    (:meth:`poyocap.tasks.DownstreamTask.initialise`), so only the trunk differs between encoders."""
    from ..tasks import get_task

    train, test, down, vocab = probe_sets
    enc = copy.deepcopy(encoder)
    enc.unit_emb = torch.nn.Embedding(len(vocab), enc.unit_emb.weight.shape[1])
    holder = torch.nn.Module()
    holder.encoder = enc
    get_task("gratings", cfg.with_overrides(finetune={"unit_init": "response", "head_init": "random"})).initialise(
        holder, down.recordings, down.table, vocab)
    return per_session_probe(latent_features(enc, train), latent_features(enc, test))


def efficiency_table(cfg: Config, runner: AblationRunner, seeds: Sequence[int]) -> pd.DataFrame:
    """Downstream probe accuracy at every weight snapshot of each pool's pretraining (step 0 = the init)."""
    rows = []
    probe_sets = _downstream_probe_sets(cfg, runner)  # the same windows for every seed and pool
    for seed in seeds:
        for pool in POOLS:
            run = runner.pretrain(_pool_method(pool), seed)
            n_units = run.encoder.n_units
            for step, obj in _snapshots(cfg, run, n_units, seed):
                rows.append({"pool": pool, "seed": seed, "step": step,
                             "probe": downstream_probe(cfg, obj.encoder, probe_sets)})
    return pd.DataFrame(rows)


def efficiency_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Steps each pool needs to reach a common score: halfway from the init's probe to the best probe any pool
    reached (the same threshold for both pools, from the common downstream probe - never a pool's own loss)."""
    init = table[table["step"] == 0]["probe"].mean()
    if table["probe"].max() <= init:  # no pool improved the probe: no common score to reach
        return {"threshold": float("nan"), "steps_predictable": float("nan"), "steps_reverse": float("nan"),
                "ratio": float("nan")}
    threshold = init + 0.5 * (table["probe"].max() - init)
    steps = {pool: [curves.steps_to_reach(g["step"], g["probe"], threshold) for _, g in
                    table[table["pool"] == pool].groupby("seed")] for pool in POOLS}
    ok = all(np.isfinite(v).all() for v in steps.values())
    ratio = curves.ratio_ci(steps["reverse"], steps["predictable"]) if ok else {"ratio": np.nan}
    return {"threshold": float(threshold), **{f"steps_{p}": float(np.nanmean(v)) for p, v in steps.items()},
            **ratio}


def landscape_surfaces(cfg: Config, runner: AblationRunner, seed: int, grid: int, span: float = 1.0
                       ) -> dict[tuple[str, str], tuple]:
    """Each pool's pretraining loss (a fixed batch of its held-out windows, eval mode) on the trajectory-PCA plane
    and on a filter-normalised random plane through its final weights."""
    out = {}
    for pool in POOLS:
        run = runner.pretrain(_pool_method(pool), seed)
        vocab, data = pool_datasets(cfg, runner.pools[pool])
        batch = collate([data["val"][i] for i in np.linspace(0, len(data["val"]) - 1, 32).astype(int)])
        obj = _objective(cfg, run, len(vocab))
        params = [p for p in obj.parameters() if p.requires_grad]
        names = [n for n, p in obj.named_parameters() if p.requires_grad]
        snaps = _snapshots(cfg, run, len(vocab), seed)
        traj = [[dict(o.named_parameters())[n] for n in names] for _, o in snaps]
        d1, d2, path = landscape.trajectory_plane(traj, params)
        scale = max(np.abs(path).max(), 1e-6) * 1.2  # the plane's extent covers the whole path
        torch.manual_seed(0)
        loss = lambda o=obj, b=batch: float(o(b)[0])  # noqa: E731
        ab = np.linspace(-scale, scale, grid)
        out[(pool, "trajectory PCA")] = (ab, ab, landscape.loss_surface(obj, loss, d1, d2, ab, ab), path)
        r1, r2 = landscape.filter_normalised_directions(params, seed=seed)
        ab = np.linspace(-span, span, grid)
        out[(pool, "filter-normalised random")] = (ab, ab, landscape.loss_surface(obj, loss, r1, r2, ab, ab), None)
    return out


def transfer_table(cfg: Config, runner: AblationRunner, seed: int) -> pd.DataFrame:
    """Per pretrained row of the ablation table (gratings): relative change of each encoder module in fine-tuning,
    the readout's bias norm relative to the scratch model's, and the linear CKA of pretrained vs fine-tuned latents
    (both with the fine-tuned unit embeddings, so only the trunk differs)."""
    setup = runner.setup("gratings")
    scratch = get_method("Scratch (downstream)")
    down = setup.downstream

    def bias_norm(state: dict) -> float:
        return float(sum((v.double() ** 2).sum() for k, v in state.items()
                         if not k.startswith("encoder.") and k.endswith("bias")) ** 0.5)

    scratch_state = torch.load(setup.run_dir(scratch, seed) / "model.pt", map_location="cpu", weights_only=False)
    rows = []
    for method in ABLATIONS:
        if method.init != "pretrained" or "gratings" not in method.tasks or "decoder" in method.options:
            continue
        run = runner.pretrain(method, seed)
        path = runner.row_setup(method, "gratings", seed).run_dir(method, seed) / "model.pt"
        if not path.exists():
            continue
        tuned = torch.load(path, map_location="cpu", weights_only=False)
        enc_tuned = {k.removeprefix("encoder."): v for k, v in tuned.items() if k.startswith("encoder.")}
        change = transfer.relative_change_per_module(run.encoder.state_dict(), enc_tuned)
        before = CalciumEncoder(cfg.encoder, enc_tuned["unit_emb.weight"].shape[0])
        before.load_state_dict({**run.encoder.state_dict(), "unit_emb.weight": enc_tuned["unit_emb.weight"]})
        after = CalciumEncoder(cfg.encoder, enc_tuned["unit_emb.weight"].shape[0])
        after.load_state_dict(enc_tuned)
        cka = _latent_cka(before, after, run, down, setup.task)
        rows.append({"method": method.name, **{f"change_{k}": v for k, v in change.items() if k != "unit_emb"},
                     "readout_bias_vs_scratch": bias_norm(tuned) / max(bias_norm(scratch_state), 1e-12),
                     "cka_pretrained_vs_finetuned": cka})
    return pd.DataFrame(rows)


def _latent_cka(before: CalciumEncoder, after: CalciumEncoder, run: PretrainRun, down: Any, task: Any) -> float:
    """Linear CKA of step-pooled Z_L on the downstream grating test windows, in the fine-tuned model's vocabulary
    (pretraining units first, downstream units appended, as :func:`poyocap.finetune.load_pretrained` builds it)."""
    saved = torch.load(run.out_dir / "encoder.pt", map_location="cpu", weights_only=False)
    vocab = UnitVocab(saved["vocab"])
    vocab.extend(down.units())
    vocab.session_rows([r.session_id for r in down.recordings])
    test = task.dataset(down.recordings, down.table, "test", vocab)
    return transfer.linear_cka(latent_features(before, test)["features"], latent_features(after, test)["features"])


#: reduced grids of the quick (non-extended) notebook 07, and the full ones
GRIDS = {"quick": {"dims": (16, 32, 64), "bins": 3, "landscape": 7, "fisher_samples": 24, "fractions": (0, 1, 2)},
         "extended": {"dims": (16, 32, 64, 128), "bins": 5, "landscape": 15, "fisher_samples": 64,
                      "fractions": (0, 0.5, 1, 2, 4)}}


def analyses_stage(cfg: Config, recordings: Sequence[Recording] | None = None, extended: bool = False,
                   progress: bool = True) -> AnalysesStage:
    """Every analysis on notebook 06's budget (its cached pretrainings and fine-tunings are reused)."""
    if recordings is None:
        recordings = load_recordings(cfg, progress=progress)
    acfg = ablation_config(cfg, extended)
    grid = GRIDS["extended" if extended else "quick"]
    seeds = tuple(cfg.eval.seeds) if extended else tuple(cfg.eval.seeds[:1])
    runner = AblationRunner(acfg, recordings, progress, force=False)
    out = AnalysesStage(acfg)
    fisher_df = pd.DataFrame([r for s in seeds for r in fisher_rows(acfg, runner, s, grid["fisher_samples"])])
    out.fisher_curves = linear_fisher_table(acfg, recordings, runner.partition, (2, 4, 8, 16), n_trials=12)
    out.efficiency = efficiency_table(acfg, runner, seeds)
    out.surfaces = landscape_surfaces(acfg, runner, seeds[0], grid["landscape"])
    out.scaling = scaling_table(acfg, recordings, grid["dims"], seeds, progress)
    out.dose = dose_response_table(acfg, recordings, runner, grid["bins"], seeds)
    out.neurons = neuron_scaling_table(acfg, runner, grid["fractions"], seeds)
    out.transfer = transfer_table(acfg, runner, seeds[0])
    out.rows = summary_rows(out, fisher_df)
    return out


def _row(analysis: str, ours: str, paper: str, definition: str, **extra: Any) -> dict[str, Any]:
    return {"analysis": analysis, "ours": ours, "paper (real data)": paper, "definition": definition, **extra}


def summary_rows(stage: AnalysesStage, fisher_df: pd.DataFrame) -> list[dict[str, Any]]:
    """The analyses table: one row per measure, ours beside the paper's, with the definition used."""
    rows = []
    f = fisher_df.groupby(["pool", "encoder"])["fisher_trace_per_window"].mean()
    for enc in ("random init", "pretrained"):
        p, r = f[("predictable", enc)], f[("reverse", enc)]
        rows.append(_row(f"Fisher information per data point ({enc})", f"{p:.3g} vs {r:.3g} ({p / r:.2f}x)",
                         "64.51 vs 33.47 (1.93x)", "authors' reading: mean over windows of ||grad_theta L_pretrain||^2,"
                         " predictable vs size-matched unpredictable (reverse) pool"))
    lf = stage.fisher_curves
    wide = lf.pivot(index="neurons", columns="group", values="mean").dropna()
    # the largest neuron count that at least half of each group's sessions can supply (small interneuron sessions
    # drop out at large counts, and a mean over the few that remain describes those sessions, not the group)
    most = lf.groupby("group")["sessions"].transform("max")
    supported = lf[lf["sessions"] >= 0.5 * most].groupby("neurons")["group"].nunique()
    counts = [n for n in wide.index if supported.get(n, 0) == 2]
    if counts:
        n = int(max(counts))
        p, u = wide.loc[n, "predictable"], wide.loc[n, "unpredictable"]
        every = "; ".join(f"{int(k)}: {r.predictable:.3g} vs {r.unpredictable:.3g}" for k, r in wide.iterrows())
        rows.append(_row(f"Linear Fisher information, direction 0 vs 45 deg ({n} neurons)",
                         f"{p:.3g} vs {u:.3g} rad^-2 ({p / u:.2f}x); by neuron count {every}", "-",
                         "bias-corrected (Kanitscheider et al. 2015), <= 12 trials per direction, mean dF/F 0-1 s, "
                         "mean over sessions and 10 neuron draws; the largest count >= half of each group's "
                         "sessions supply"))
    eff = efficiency_summary(stage.efficiency)
    last = int(stage.efficiency["step"].max())

    def steps(v: float) -> str:
        return f"{v:.0f} steps" if np.isfinite(v) else f"not reached in {last} steps"

    rows.append(_row("Training efficiency (steps to a common downstream probe score)",
                     f"predictable {steps(eff['steps_predictable'])}, reverse {steps(eff['steps_reverse'])} "
                     f"(ratio reverse / predictable {eff['ratio']:.2f})", "1.98x",
                     f"steps to grating probe accuracy {eff['threshold']:.3f} (halfway from the init's to the best, "
                     "snapshots every 50 steps, linear interpolation)"))
    for plane in ("trajectory PCA", "filter-normalised random"):
        sig = {pool: landscape.roughness(z, a, b) for (pool, pl), (a, b, z, _) in stage.surfaces.items()
               if pl == plane}
        if len(sig) == 2:
            p, r = sig["predictable"], sig["reverse"]
            rows.append(_row(f"Loss-landscape roughness sigma_L ({plane})",
                             f"{p['sigma']:.3g} vs {r['sigma']:.3g} ({r['sigma'] / max(p['sigma'], 1e-12):.2f}x "
                             f"rougher); relative {p['sigma_rel']:.3f} vs {r['sigma_rel']:.3f}",
                             "14.85 vs 2048 (138x)", "std of the residual of a quadratic fit to the pretraining loss "
                             "on the plane; relative = / surface range"))
    for cond, g in stage.scaling.groupby("condition", sort=False):
        fit = curves.slope_per_decade(g["encoder_params"], g["accuracy"])
        rows.append(_row(f"Scaling slope, {cond}", f"{fit['slope']:+.3f} +- {fit['ci95']:.3f} per decade "
                         f"({g['encoder_params'].min()}-{g['encoder_params'].max()} params)",
                         "0.018 (predictable) vs 0.005-0.013", "grating accuracy vs log10(encoder parameters), "
                         "same steps"))
    n = stage.neurons
    if n is not None and len(n):
        fit = curves.slope_per_decade(n["rois"], n["accuracy"])
        rows.append(_row("Scaling with pretraining neurons (unpredictable added)",
                         f"{fit['slope']:+.3f} per decade of ROIs ({n['rois'].min()}-{n['rois'].max()} ROIs; "
                         + ", ".join(f"{r.pool} {r.accuracy:.3f}" for r in n.groupby('pool', sort=False)
                                     .mean(numeric_only=True).reset_index().itertuples()) + ")",
                         "'scaling collapse': accuracy falls as unpredictable neurons are added",
                         "grating accuracy vs log10(pretraining ROIs), POYO-CAP's pool + unpredictable neurons"))
    trend = curves.monotone_trend(stage.dose["median_kurtosis"], stage.dose["accuracy"])
    rows.append(_row("Regularity dose-response", f"Spearman rho {trend['rho']:+.2f} (p {trend['p']:.2f})",
                     "- (claim predicts rho < 0)", "grating accuracy vs median kurtosis of the pretraining "
                     "neurons' bin, windows matched"))
    t = stage.transfer
    if len(t):
        poyo = t[t["method"] == "POYO-CAP"].iloc[0]
        change = [c for c in t.columns if c.startswith("change_")]
        rows.append(_row("Encoder weight change in fine-tuning (POYO-CAP)",
                         ", ".join(f"{c[7:]} {poyo[c]:.2%}" for c in change), "~0.18 %",
                         "||w_finetuned - w_pretrained|| / ||w_pretrained|| per module"))
        rows.append(_row("Readout bias norm vs scratch (POYO-CAP)", f"{poyo['readout_bias_vs_scratch']:.2f}x",
                         "x12.4", "norm of the readout / decoder biases after fine-tuning, POYO-CAP / scratch"))
        rows.append(_row("CKA pretrained vs fine-tuned latents (POYO-CAP)",
                         f"{poyo['cka_pretrained_vs_finetuned']:.3f}", "-", "linear CKA, downstream grating test "
                         "windows, the fine-tuned unit embeddings in both"))
    return rows


def save_analyses_table(stage: AnalysesStage, verdicts: Sequence[str] = ()) -> pd.DataFrame:
    """``results/<scale>/analyses.{csv,md}``; the header says whether the pretraining behind the numbers counts."""
    from .. import paths
    from ..plotting import save_table
    from .common import table_header

    table = pd.DataFrame(stage.rows)
    counts = [v for v in verdicts if "DOES NOT COUNT" in v]
    extra = ("THESE NUMBERS DESCRIBE A PRETRAINING THAT DOES NOT COUNT (notebook 03: "
             + "; ".join(v.split("  ")[0] for v in counts) + ")") if counts else "notebook 03: the pretraining counts"
    budget = f"{step_budget(stage.cfg)} (notebook 06's budget); reduced grids unless --extended"
    save_table(table, paths.results_dir(stage.cfg.scale) / "analyses", table_header(stage.cfg, budget) + [extra])
    return table
