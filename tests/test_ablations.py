"""Ablation table (notebook 06): every row builds and trains a step, the pools keep downstream mice out and are
size-matched, the CEBRA wrapper fits and embeds multi-session data, the table's statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from poyocap import filtering
from poyocap.cebra_embed import CebraSettings, fit_cebra, training_frames
from poyocap.data.splits import SPLIT_CODE, build_splits, make_pools
from poyocap.data.windows import UnitVocab, collate
from poyocap.methods import ABLATIONS
from poyocap.model.baselines import MLPEncoder, MLPPixelDecoder, build_encoder
from poyocap.model.encoder import CalciumEncoder
from poyocap.model.pretrain import TwinMaskedPretrainer
from poyocap.stages import ablations
from poyocap.stages.ablations import SIZE_MATCHED, ablation_pools, match_units, pool_data
from poyocap.tasks import get_task

PREDICTABLE = ("Sst-IRES-Cre", "Vip-IRES-Cre", "Pvalb-IRES-Cre", "Ntsr1-Cre_GN220")


@pytest.fixture(scope="module")
def partition(smoke_recordings):
    lines = sorted({r.cre_line for r in smoke_recordings})
    units = tuple(u for r in smoke_recordings for u in r.unit_ids[::3])  # a label-free set from every line
    return filtering.Partition(predictable_lines=PREDICTABLE, unpredictable_lines=tuple(sorted(set(lines) - set(
        PREDICTABLE))), thresholds={}, method="paper", source="synthetic", kurtosis_convention="pearson",
        sensitivity=1.0, predictable_units=units)


@pytest.fixture(scope="module")
def pools(smoke_cfg, smoke_recordings, partition):
    return ablation_pools(smoke_cfg, smoke_recordings, partition)


def test_registry_rows_are_the_issue_rows_with_the_paper_values():
    names = [m.name for m in ABLATIONS]
    assert names[0] == "POYO-CAP" and len(names) == len(set(names)) == 15
    paper = {m.name: m.paper for m in ABLATIONS}
    assert paper["MLP encoder -> MLP decoder"] == {"ssim": 0.449}
    assert paper["Inhibitory-only SSL"] == {"ssim": 0.544, "acc": 0.537}
    pools_used = {m.options.get("pool") for m in ABLATIONS if m.init == "pretrained"}
    assert pools_used == {"predictable", "reverse", "mixed", "inhibitory", "time_shuffled", "label_free", "in_domain"}


def test_pools_never_hold_a_downstream_mouse(smoke_recordings, partition, pools):
    split = make_pools(smoke_recordings, partition.predictable_lines)
    by_id = {r.session_id: r for r in smoke_recordings}
    downstream_mice = {by_id[s].mouse_id for s in split.downstream}
    for name, recs in pools.items():
        mice = {r.mouse_id for r in recs}
        if name == "in_domain":
            assert mice == downstream_mice
        else:
            assert not mice & downstream_mice, name
    assert {r.cell_class for r in pools["inhibitory"]} == {"inhibitory"}
    assert all(r.cre_line not in PREDICTABLE for r in pools["reverse"])


def test_size_matched_pools_match_rois_and_training_windows(smoke_cfg, pools):
    target_units = sum(r.n_units for r in pools["predictable"])
    target_windows = len(pool_data(smoke_cfg, pools["predictable"])[1]["train"])
    for name in SIZE_MATCHED:
        assert sum(r.n_units for r in pools[name]) == target_units, name
        _, data = pool_data(smoke_cfg, pools[name], target_windows)
        assert len(data["train"]) == target_windows, name  # fewer sessions: a denser stride, then an exact subset
    mixed = pools["mixed"]
    assert {r.cre_line in PREDICTABLE for r in mixed} == {True, False}  # both halves


def test_match_units_is_exact_and_keeps_ids(smoke_recordings):
    recs = smoke_recordings[:5]
    total = sum(r.n_units for r in recs)
    cut = match_units(recs, total // 2, seed=0)
    assert sum(r.n_units for r in cut) == total // 2
    for r in cut:
        assert r.dff.shape[1] == len(r.unit_ids) and r.unit_ids[0].startswith(r.session_id)
    assert match_units(recs, total + 10, seed=0) == list(recs)


def test_time_shuffled_pool_keeps_marginals_and_breaks_alignment(pools):
    for orig, shuffled in zip(pools["predictable"], pools["time_shuffled"]):
        assert np.allclose(np.sort(orig.dff[:, 0]), np.sort(shuffled.dff[:, 0]), equal_nan=True)
        assert not np.allclose(orig.dff[:, 0], shuffled.dff[:, 0], equal_nan=True)


def _batch(cfg, recs, task_name: str, vocab: UnitVocab):  # noqa: ANN001, ANN202
    task = get_task(task_name, cfg)
    table = task.windows(recs)
    ds = task.dataset(recs, table, "train", vocab, train=True)
    return task, table, collate([ds[i] for i in range(4)])


@pytest.mark.parametrize("method", [m for m in ABLATIONS if m.init == "scratch" and "input" not in m.options]
                         + [m for m in ABLATIONS if "decoder" in m.options], ids=lambda m: m.slug)
def test_every_encoder_and_decoder_variant_trains_a_step(smoke_cfg, pools, method):
    recs = pools["in_domain"][:3]
    vocab = UnitVocab([u for r in recs for u in r.unit_ids])
    vocab.session_rows([r.session_id for r in recs])
    for task_name in method.tasks:
        task, table, batch = _batch(smoke_cfg, recs, task_name, vocab)
        encoder = build_encoder(method.options.get("encoder", "poyo"), smoke_cfg.encoder, len(vocab))
        model = task.build(encoder, n_sessions=len(recs), variant=method.options.get("decoder", {}))
        if method.options.get("decoder", {}).get("pixel_decoder") == "mlp":
            assert isinstance(model.unet, MLPPixelDecoder)
        if method.options.get("decoder", {}).get("inject") is False:
            assert len(model.unet.injections) == 0
        task.initialise(model, recs, table, vocab)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        before = [p.detach().clone() for p in model.parameters()]
        loss, _ = model(batch)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize("overrides", [m.options["pretrain"] for m in ABLATIONS if "pretrain" in m.options])
def test_every_pretraining_objective_variant_trains_a_step(smoke_cfg, pools, overrides):
    cfg = smoke_cfg.with_overrides(pretrain=overrides)
    vocab, data = pool_data(cfg, pools["predictable"])
    objective = TwinMaskedPretrainer(CalciumEncoder(cfg.encoder, len(vocab)), cfg.pretrain)
    loss, _ = objective(collate([data["train"][i] for i in range(4)]))
    loss.backward()
    assert torch.isfinite(loss)


def test_mlp_encoder_matches_the_encoder_interface(smoke_cfg, pools):
    recs = pools["in_domain"][:2]
    vocab = UnitVocab([u for r in recs for u in r.unit_ids])
    vocab.session_rows([r.session_id for r in recs])
    _, _, batch = _batch(smoke_cfg, recs, "gratings", vocab)
    enc = build_encoder("mlp", smoke_cfg.encoder, len(vocab)).eval()
    z1, z_l, lat_t = enc(batch)
    n_bins = round(float(batch["window_s"][0]) / smoke_cfg.encoder.latent_step_s)
    assert isinstance(enc, MLPEncoder) and z_l.shape == (4, n_bins, smoke_cfg.encoder.dim) and lat_t.shape == (4, n_bins)
    poked = dict(batch, values=batch["values"].clone())
    poked["values"][~batch["mask"]] = 99.0  # padding never counts
    assert torch.allclose(enc(poked)[1], z_l)
    assert enc.register_units(3) == range(len(vocab), len(vocab) + 3)
    with pytest.raises(ValueError, match="encoder must be"):
        build_encoder("transformer", smoke_cfg.encoder, 4)


@pytest.mark.parametrize("mode", ["behavior", "time"])
def test_cebra_fits_training_frames_and_embeds_every_session(smoke_cfg, pools, mode):
    recs = pools["in_domain"][:2]
    splits = build_splits(recs, smoke_cfg.data.novel_frames_fraction)
    settings = CebraSettings(mode=mode, output_dimension=4, num_hidden_units=8, max_iterations=5, batch_size=64)
    out, curve = fit_cebra(recs, splits, settings, seed=0)
    assert len(curve) == 5 and np.isfinite(curve).all()
    for r, e in zip(recs, out):
        assert e.dff.shape == (r.n_frames, 4) and e.session_id == r.session_id
        assert e.unit_ids == [f"{r.session_id}/cebra{k}" for k in range(4)]
        assert np.array_equal(e.movie_frames, r.movie_frames)
    again, _ = fit_cebra(recs, splits, settings, seed=0)  # cebra seeds its samplers from OS entropy: we don't
    assert all(np.array_equal(a.dff, b.dff) for a, b in zip(out, again))
    idx = training_frames(recs[0], splits[0], movie_only=True)
    assert (splits[0].stim_label[idx] == SPLIT_CODE["train"]).all() and (recs[0].movie_frames[idx] >= 0).all()
    with pytest.raises(ValueError, match="CEBRA mode"):
        fit_cebra(recs, splits, CebraSettings(mode="nope", max_iterations=1), seed=0)  # type: ignore[arg-type]


def test_table_statistics_and_interpretability_line():
    stage = ablations.AblationStage(
        cfg=__import__("poyocap.config", fromlist=["Config"]).Config.for_scale("smoke"),
        per_seed=pd.DataFrame([
            {"method": "POYO-CAP", "task": "movie", "seed": 0, "ssim": 0.30},
            {"method": "Scratch (downstream)", "task": "movie", "seed": 0, "ssim": 0.20}]),
        items={("POYO-CAP", "movie", 0): np.full(50, 0.3) + np.linspace(-0.01, 0.01, 50),
               ("Scratch (downstream)", "movie", 0): np.full(50, 0.2) + np.linspace(-0.01, 0.01, 50)},
        pools=pd.DataFrame(), cebra_curves={}, pretraining=pd.DataFrame(),
        references=pd.DataFrame([{"method": "Reference: ridge (per session)", "task": "movie", "score": 0.25,
                                  "role": "reference"}]), seeds=(0,), extended=False)
    table = ablations.ablation_table(stage)
    poyo = table[table["method"] == "POYO-CAP"].iloc[0]
    scratch = table[table["method"] == "Scratch (downstream)"].iloc[0]
    assert poyo["ssim_mean"] == pytest.approx(0.30) and 0 < poyo["ssim_ci95"] < 0.01  # bootstrap CI over items
    assert scratch["ssim_p_vs_poyocap"] < 0.01 and poyo["paper_ssim"] == 0.593
    line = ablations.interpretability(table, stage.references)
    assert line.startswith("ROWS CANNOT BE INTERPRETED YET") and "Scratch (downstream) movie 0.200 < 0.250" in line
    assert "POYO-CAP" not in line


def test_quick_ablations_cut_every_fine_tuning_budget_by_the_same_fraction():
    from poyocap.config import Config
    from poyocap.stages.ablations import QUICK_STEP_FRACTION, ablation_config

    cfg = Config.for_scale("demo")
    quick = ablation_config(cfg, extended=False)
    for task in ("movie", "gratings"):
        full, cut = cfg.finetune.task_optim(task).steps, quick.finetune.task_optim(task).steps
        assert cut == round(full * QUICK_STEP_FRACTION)
    assert quick.finetune.task_optim("movie").steps != quick.finetune.task_optim("gratings").steps
    assert ablation_config(cfg, extended=True) == cfg
