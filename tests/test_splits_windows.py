"""Pools, leak-free splits and token windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from poyocap.data.splits import SPLIT_CODE, build_splits, check_pools, make_pools, split_session
from poyocap.data.windows import (UnitVocab, WindowDataset, collate, flatten_tokens, grating_windows,
                                  movie_windows, pretrain_windows)

PRED = ("Sst-IRES-Cre", "Vip-IRES-Cre", "Pvalb-IRES-Cre")


def test_pools_by_line_and_mouse(smoke_recordings):
    pools = make_pools(smoke_recordings, PRED)
    by_id = {r.session_id: r for r in smoke_recordings}
    assert {by_id[s].cre_line for s in pools.pretrain} == set(PRED)
    assert not {by_id[s].cre_line for s in pools.downstream} & set(PRED)
    assert not {by_id[s].cre_line for s in pools.reverse} & set(PRED)
    mice = [{by_id[s].mouse_id for s in getattr(pools, p)} for p in ("pretrain", "downstream", "reverse")]
    assert not (mice[0] & mice[1]) and not (mice[0] & mice[2]) and not (mice[1] & mice[2])
    assert len(pools.reverse) > 0 and len(pools.downstream) > 0
    assert sum(map(len, (pools.pretrain, pools.downstream, pools.reverse))) == len(smoke_recordings)


def test_pool_check_catches_shared_mouse(smoke_recordings):
    pools = make_pools(smoke_recordings, PRED)
    from dataclasses import replace

    broken = replace(pools, reverse=pools.reverse + (pools.downstream[0],))
    with pytest.raises(AssertionError, match="appears in pools"):
        check_pools(broken, smoke_recordings)


def test_label_free_pools_keep_mice_apart(smoke_recordings):
    units = [smoke_recordings[0].unit_ids[0], smoke_recordings[-1].unit_ids[0]]
    pools = make_pools(smoke_recordings, (), predictable_units=units)
    assert pools.pretrain_units == frozenset(units)
    check_pools(pools, smoke_recordings)
    assert smoke_recordings[0].session_id in pools.pretrain


def test_split_fractions_and_repeats(smoke_recordings):
    rec = smoke_recordings[0]
    sp = split_session(rec)
    counts = np.bincount(sp.trial_split, minlength=3)
    assert counts.tolist() == [24, 8, 8]  # 5 blocks of 8 trials: 3 / 1 / 1 (70/10/20 rounded, each split >= 1)
    big = split_session(rec, grating_block=1)
    assert np.bincount(big.trial_split, minlength=3).tolist() == [28, 4, 8]  # single trials: exactly 70/10/20
    chrono = np.argsort(rec.grating_trials["start"])
    blocks = sp.trial_split[chrono].reshape(-1, 8)
    assert (blocks == blocks[:, :1]).all(), "trials are split in blocks of consecutive trials"
    lab = sp.stim_label
    rep = rec.movie_repeat
    assert set(lab[(rep >= 0) & (rep <= 7)]) <= {SPLIT_CODE["train"], SPLIT_CODE["novel"]}
    assert set(lab[rep == 8]) <= {SPLIT_CODE["val"], SPLIT_CODE["novel"]}
    assert set(lab[rep == 9]) <= {SPLIT_CODE["test"], SPLIT_CODE["novel"]}
    a, b = sp.novel_frames
    assert b > a and (lab[(rec.movie_frames >= a) & (rec.movie_frames < b)] == SPLIT_CODE["novel"]).all()
    assert np.array_equal(split_session(rec).trial_split, sp.trial_split)  # seeded


def _assert_no_leak(table, splits, recordings):
    for i in range(len(table)):
        s = int(table.split[i])
        if s < 0:
            continue
        sp = splits[int(table.session[i])]
        lo = max(0, int(table.t0[i]) - sp.tail_frames)
        seen = set(np.unique(sp.stim_label[lo:int(table.t1[i])])) - {-1}
        assert seen == {s}, (i, s, seen)


def test_windows_never_see_another_splits_stimulus(smoke_recordings):
    recs = smoke_recordings[:3]
    splits = build_splits(recs, novel_fraction=0.1)
    for table in (pretrain_windows(recs, splits, 1.0, 0.25), grating_windows(recs, splits, 1.0),
                  movie_windows(recs, splits, 0.3, 0.1)):
        _assert_no_leak(table, splits, recs)
        for code in (SPLIT_CODE["train"], SPLIT_CODE["val"], SPLIT_CODE["test"]):
            assert (table.split == code).sum() > 0
    mv = movie_windows(recs, splits, 0.3, 0.1)
    novel_frames = set(range(*splits[0].novel_frames))
    train_frames = set(mv.frame[mv.split == SPLIT_CODE["train"]].tolist())
    assert not (train_frames & novel_frames), "a training window decodes a novel frame"
    assert set(mv.frame[mv.split == SPLIT_CODE["novel"]].tolist()) <= novel_frames


def test_datasets_hold_only_their_own_split_and_train_never_overlaps_test(smoke_recordings):
    recs = smoke_recordings[:3]
    splits = build_splits(recs, novel_fraction=0.1)
    vocab = UnitVocab([u for r in recs for u in r.unit_ids])
    for table in (grating_windows(recs, splits, 1.0), movie_windows(recs, splits, 0.3, 0.1),
                  pretrain_windows(recs, splits, 1.0, 0.25)):
        sets = {s: WindowDataset(recs, table, s, vocab, max_units=8) for s in ("train", "val", "test")}
        for name, ds in sets.items():
            assert len(ds) and (ds.table.split == SPLIT_CODE[name]).all()
        tr, te = sets["train"].table, sets["test"].table
        for si in range(len(recs)):
            a = [(t0, t1) for s, t0, t1 in zip(tr.session, tr.t0, tr.t1) if s == si]
            b = [(t0, t1) for s, t0, t1 in zip(te.session, te.t0, te.t1) if s == si]
            frames_a = np.zeros(recs[si].n_frames, bool)
            for t0, t1 in a:
                frames_a[t0:t1] = True
            assert not any(frames_a[t0:t1].any() for t0, t1 in b), "a test window shares frames with training"


def test_movie_window_ends_lag_after_its_frame_and_labels_are_direction_over_45(smoke_recordings):
    rec = smoke_recordings[0]
    splits = build_splits([rec], novel_fraction=0.1)
    fps = rec.sampling_rate_hz
    mv = movie_windows([rec], splits, 0.3, 0.1)
    onset = mv.t0 + np.round(mv.frame_time * fps).astype(int)  # the decoded frame's onset
    assert (rec.movie_frames[onset] == mv.frame).all()
    assert (mv.t1 - 1 - onset == round(0.1 * fps)).all(), "the window ends lag_s *after* the frame's onset"
    assert ((mv.t1 - mv.t0) == round(0.3 * fps)).all()
    gr = grating_windows([rec], splits, 1.0)
    assert (gr.direction == rec.grating_trials["direction_deg"] // 45).all()
    assert sorted(set(gr.direction.tolist())) == list(range(8))
    assert (rec.timestamps[gr.t0] >= rec.grating_trials["start"] - 1e-9).all()


def test_pretrain_window_labels(smoke_recordings):
    recs = smoke_recordings[:1]
    splits = build_splits(recs, novel_fraction=0.1)
    table = pretrain_windows(recs, splits, 1.0, 0.5)
    labelled = table.direction >= 0
    assert labelled.any() and (~labelled).any() and table.direction.max() <= 7


def test_dataset_shapes_padding_and_unit_dropout(smoke_recordings):
    recs = [r for r in smoke_recordings if r.cre_line in ("Pvalb-IRES-Cre", "Cux2-CreERT2")]
    vocab = UnitVocab([u for r in recs for u in r.unit_ids])
    splits = build_splits(recs, novel_fraction=0.1)
    table = movie_windows(recs, splits, 0.3, 0.1)
    ds = WindowDataset(recs, table, "train", vocab, max_units=8, train=True, with_images=True)
    loader = DataLoader(ds, batch_size=16, shuffle=False, collate_fn=collate)
    sizes = set()
    for batch in loader:
        b, n_t, n_u = batch["values"].shape
        assert n_t == 9 and n_u <= 8
        assert batch["unit_index"].shape == (b, n_u) and batch["times"].shape == (b, n_t)
        assert batch["mask"].shape == (b, n_t, n_u) and batch["image"].shape[1:] == recs[0].movie.shape[1:]
        n_real = batch["mask"].sum((1, 2))
        sizes.update(n_real.tolist())
        assert (batch["values"][~batch["mask"]] == 0).all()
        assert batch["times"].max() < 0.3 + 1e-6
        flat = flatten_tokens(batch)
        assert flat["values"].shape == flat["unit_index"].shape == flat["times"].shape == (b, n_t * n_u)
        k = 3 * n_u + 2  # token of frame 3, unit 2
        assert flat["unit_index"][0, k] == batch["unit_index"][0, 2] and flat["times"][0, k] == batch["times"][0, 3]
    assert len(sizes) > 1, "variable neuron counts should need padding"
    item = ds[0]
    assert item["values"].shape == (9, min(8, recs[ds.table.session[0]].n_units))
    ds_eval = WindowDataset(recs, table, "test", vocab, max_units=8, train=False)
    big_eval = [i for i in range(len(ds_eval)) if recs[ds_eval.table.session[i]].n_units > 8][0]
    before = ds_eval[big_eval]["unit_index"].clone()
    ds_eval.set_epoch(7)
    assert torch.equal(before, ds_eval[big_eval]["unit_index"]), "evaluation windows keep a fixed unit subset"
    ds.set_epoch(1)
    big = [i for i in range(len(ds)) if recs[ds.table.session[i]].n_units > 8][0]
    a = ds[big]["unit_index"].clone()
    ds.set_epoch(2)
    assert not torch.equal(a, ds[big]["unit_index"]), "training draws new unit subsets per epoch"


def test_unit_vocab_appends_without_moving_rows():
    v = UnitVocab(["a/1", "a/2"])
    assert v.extend(["a/2", "b/1"]) == [1, 2] and len(v) == 3 and v.lookup(["a/1"]).tolist() == [0]
    with pytest.raises(KeyError):
        v.lookup(["zz"])


def test_dataset_rejects_bad_arguments(smoke_recordings):
    recs = smoke_recordings[:1]
    vocab = UnitVocab(recs[0].unit_ids)
    table = grating_windows(recs, build_splits(recs, 0.1), 1.0)
    with pytest.raises(ValueError):
        WindowDataset(recs, table, "training", vocab, 8)
    with pytest.raises(ValueError):
        WindowDataset(recs, table, "train", vocab, 0)


def test_in_domain_pretraining_never_sees_a_downstream_test_or_validation_frame(smoke_cfg, smoke_recordings):
    """The positive control pretrains on the downstream mice's own windows (``pool_datasets``): its training windows
    must share no frame with the fine-tuning task's validation or test windows of the same sessions."""
    from poyocap.stages.pretrain import pool_datasets
    from poyocap.tasks import get_task

    recs = smoke_recordings[:3]
    _, data = pool_datasets(smoke_cfg, recs)
    pre = data["train"].table
    for name in ("movie", "gratings"):
        held = get_task(name, smoke_cfg).windows(recs)
        for si, rec in enumerate(recs):
            seen = np.zeros(rec.n_frames, bool)
            for t0, t1 in zip(pre.t0[pre.session == si], pre.t1[pre.session == si]):
                seen[t0:t1] = True
            for code in (SPLIT_CODE["val"], SPLIT_CODE["test"]):
                own = (held.session == si) & (held.split == code)
                assert own.any()
                assert not any(seen[a:b].any() for a, b in zip(held.t0[own], held.t1[own])), (name, code)


def test_collapse_monitor_leaves_the_probe_set_whole(smoke_cfg, smoke_recordings):
    """The pretraining collapse monitor subsamples the held-out grating windows for itself only."""
    from poyocap.model.encoder import CalciumEncoder
    from poyocap.model.pretrain import TwinMaskedPretrainer
    from poyocap.stages.pretrain import collapse_monitor, pool_datasets

    vocab, data = pool_datasets(smoke_cfg, smoke_recordings[:6])
    n = len(data["probe_grating_test"])
    measure = collapse_monitor(data, n_windows=max(2, n // 3))
    out = measure(TwinMaskedPretrainer(CalciumEncoder(smoke_cfg.encoder, len(vocab)), smoke_cfg.pretrain), 0)
    assert set(out) == {"within_std", "eff_rank"} and len(data["probe_grating_test"]) == n
