"""What the decoders issue changed: learning-rate groups, the session embedding, model selection that never picks
step 0, movie-loss presets, multi-query readout, the mean-frame prior, per-ROI normalisation, prediction diversity."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from poyocap import losses
from poyocap.config import Config, OptimConfig
from poyocap.data.splits import SPLIT_CODE
from poyocap.data.windows import UnitVocab, WindowDataset, WindowTable, training_stats
from poyocap.finetune import GratingDecoder, MovieDecoder, load_pretrained
from poyocap.model.encoder import CalciumEncoder
from poyocap.data.profiles import response_profiles
from poyocap.model.readouts import MovieUNet, QueryReadout, SessionCentring
from poyocap.model.unit_init import profile_embeddings
from poyocap.tasks import get_task, prediction_diversity
from poyocap.train import TrainSettings, train

sys.path.insert(0, str(Path(__file__).parent))
from test_model import ListDataset, make_batch  # noqa: E402
from test_recording import make as make_recording  # noqa: E402

GRATINGS = {"start": np.array([0.1]), "stop": np.array([0.5]), "direction_deg": np.array([0]),
            "temporal_freq_hz": np.array([1])}

CFG = Config.for_scale("smoke")


def test_parameter_groups_trunk_head_and_unit_embeddings(tmp_path):
    enc = CalciumEncoder(CFG.encoder, 5)
    torch.save({"encoder": enc.state_dict(), "vocab": [f"s/{i}" for i in range(5)]}, tmp_path / "enc.pt")
    model, vocab, _ = load_pretrained(tmp_path / "enc.pt", CFG, ["t/0", "t/1"], GratingDecoder,
                                      encoder_lr_scale=0.1, head_lr_scale=3.0, n_sessions=2, unit_lr_scale=0.01)
    trunk, head, units = model.param_groups(1e-3)
    assert trunk["lr"] == pytest.approx(1e-4) and head["lr"] == pytest.approx(3e-3)
    assert units["lr"] == pytest.approx(1e-5)
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert ids(units) == {id(model.encoder.unit_emb.weight)}  # new units' rows included, in their own group
    assert id(model.readout.query.session_emb.weight) in ids(head)
    assert id(model.encoder.latent_emb) in ids(trunk)
    named = dict(model.named_parameters())
    assert ids(trunk) | ids(head) | ids(units) == {id(p) for p in named.values()}
    assert not ids(trunk) & ids(head) and not ids(units) & (ids(trunk) | ids(head))


def test_session_centring_removes_each_sessions_constant():
    torch.manual_seed(0)
    centre = SessionCentring(3, 4)
    offsets = torch.tensor([[5.0, 0, 0, 0], [0, -3.0, 0, 0], [0, 0, 0, 0]])
    for _ in range(200):  # training mode: running means from the batches
        session = torch.tensor([0, 0, 1, 1])
        z = offsets[session][:, None] + 0.1 * torch.randn(4, 2, 4)
        centre(z, session)
    centre.eval()
    session = torch.tensor([0, 1, 2])
    z = offsets[session][:, None] + 0.1 * torch.randn(3, 2, 4)
    out = centre(z, session)
    assert out[:2].abs().mean() < 0.15  # the seen sessions' constants are gone
    assert torch.equal(out[2], z[2])  # a session never seen in training is not shifted
    before = centre.mean.clone()
    centre(z, session)
    assert torch.equal(centre.mean, before)  # evaluation never updates the means
    assert {"mean", "seen"} <= set(centre.state_dict())  # buffers: saved with the model, restored on resume


def test_profile_embeddings_group_units_by_response():
    rng = np.random.default_rng(0)
    tuning = np.eye(8)[[0, 0, 0, 4, 4, 4]] * 2 + 0.05 * rng.standard_normal((6, 8))  # two preferred directions
    profiles = np.vstack([tuning, np.full((1, 8), np.nan), np.ones((1, 8))])  # + never seen, + flat (no SD)
    emb, usable = profile_embeddings(profiles, dim=16, std=0.02, noise=0.0)
    assert usable.tolist() == [True] * 6 + [False, False]
    cos = torch.nn.functional.cosine_similarity(emb[:6, None], emb[None, :6], dim=-1)
    assert cos[0, 1] > 0.9 and cos[3, 4] > 0.9 and cos[0, 3] < 0.0  # alike start alike, unlike apart
    assert float(emb[:6].pow(2).mean().sqrt()) == pytest.approx(0.02, rel=1e-4)  # the random init's size
    assert torch.equal(emb[6:], torch.zeros(2, 16))  # no profile: nothing informative (caller keeps random rows)
    with pytest.raises(ValueError, match="n_units, n_conditions"):
        profile_embeddings(np.zeros(5), dim=4)


def test_response_profiles_average_training_windows_per_condition():
    rec = make_recording(dff=np.zeros((40, 2), np.float32), timestamps=np.arange(40) / 30.0, unit_ids=["s1/a", "s1/b"],
                         grating_trials=GRATINGS, movie_frames=np.full(40, -1), movie_repeat=np.full(40, -1), movie=None)
    rec.dff[0:4, 0] = 1.0  # unit 0 responds in the first window
    rec.dff[10:14, 1] = 3.0  # unit 1 in the second
    table = WindowTable(session=np.zeros(4, np.int64), t0=np.array([0, 10, 20, 30]), t1=np.array([4, 14, 24, 34]),
                        split=np.array([SPLIT_CODE["train"]] * 3 + [SPLIT_CODE["test"]]),
                        direction=np.array([2, 5, 2, 5]), frame=np.full(4, -1), frame_time=np.zeros(4))
    ids, prof = response_profiles([rec], table, "direction")
    assert ids == rec.unit_ids and prof.shape == (2, 2)  # directions 2 and 5 seen in training
    assert np.allclose(prof[0], [0.5, 0.0]) and np.allclose(prof[1], [0.0, 3.0])  # test window left out
    with pytest.raises(ValueError, match="condition"):
        response_profiles([rec], table, "orientation")


def test_response_init_writes_the_units_rows_and_only_them():
    cfg = CFG.with_overrides(finetune=dict(unit_init="response"))
    task = get_task("gratings", cfg)
    rec = make_recording()
    table = WindowTable(session=np.zeros(4, np.int64), t0=np.arange(4) * 30, t1=np.arange(4) * 30 + 30,
                        split=np.full(4, SPLIT_CODE["train"]), direction=np.array([0, 1, 2, 3]), frame=np.full(4, -1),
                        frame_time=np.zeros(4))
    vocab = UnitVocab(["other/0"] + list(rec.unit_ids))
    model = task.build(CalciumEncoder(cfg.encoder, len(vocab)), n_sessions=1)
    before = model.encoder.unit_emb.weight.detach().clone()
    task.initialise(model, [rec], table, vocab)
    after = model.encoder.unit_emb.weight.detach()
    assert torch.equal(after[0], before[0])  # a unit of another pool keeps its row
    assert not torch.equal(after[1:], before[1:])
    assert float(after[1:].pow(2).mean().sqrt()) == pytest.approx(0.02, rel=0.3)  # same size as a random row
    random_task = get_task("gratings", CFG.with_overrides(finetune=dict(unit_init="random")))
    model2 = random_task.build(CalciumEncoder(cfg.encoder, len(vocab)), n_sessions=1)
    kept = model2.encoder.unit_emb.weight.detach().clone()
    random_task.initialise(model2, [rec], table, vocab)
    assert torch.equal(model2.encoder.unit_emb.weight, kept)


def test_frozen_warmup_freezes_the_trunk_but_trains_unit_embeddings():
    torch.manual_seed(0)
    model = GratingDecoder(CalciumEncoder(CFG.encoder, 40), encoder_lr_scale=0.1)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    res = train(model, ListDataset(8), OptimConfig(steps=3, batch_size=4, lr=1e-2),
                TrainSettings(frozen_first_group_steps=3), seed=0, device="cpu", progress=False)
    after = res.objective.encoder.state_dict()
    assert all(torch.equal(before[k], v) for k, v in after.items() if k != "unit_emb.weight")
    assert not torch.equal(before["unit_emb.weight"], after["unit_emb.weight"])


def test_session_embedding_is_used_and_checked():
    torch.manual_seed(0)
    model = GratingDecoder(CalciumEncoder(CFG.encoder, 40), n_sessions=3).eval()
    batch = make_batch(b=2)
    with pytest.raises(ValueError, match="session_index"):
        model.predict(batch)
    a = model.predict({**batch, "session_index": torch.tensor([0, 0])})
    b = model.predict({**batch, "session_index": torch.tensor([2, 2])})
    assert not torch.allclose(a, b)
    with pytest.raises(IndexError, match="not registered"):
        model.predict({**batch, "session_index": torch.tensor([0, 3])})
    model.train()
    loss, _ = model({**batch, "direction": torch.tensor([1, 2]), "session_index": torch.tensor([0, 1])})
    loss.backward()
    grad = model.readout.query.session_emb.weight.grad
    assert grad[:2].abs().sum() > 0 and grad[2].abs().sum() == 0  # only the sessions in the batch


def test_step_zero_is_never_selected():
    torch.manual_seed(0)
    model = GratingDecoder(CalciumEncoder(CFG.encoder, 40))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    scores = iter([1.0, 0.2, 0.1])  # the untrained model scores best on validation
    res = train(model, ListDataset(8), OptimConfig(steps=4, batch_size=4, lr=1e-2, warmup_steps=1),
                TrainSettings(eval_every=2), seed=0, device="cpu", progress=False,
                eval_fn=lambda m, step: {"val_score": next(scores)}, select_key="val_score")
    ev = res.history[res.history.kind == "eval"]
    assert list(ev.step) == [0, 2, 4]
    kept = res.objective.state_dict()
    assert any(not torch.equal(start[k], kept[k]) for k in start)  # the step-2 state, not the initial one


def test_loss_presets():
    pred, target = torch.rand(3, 16, 32), torch.rand(3, 16, 32)
    total, terms = losses.MovieLoss(None, preset="l1_ssim")(pred, target)
    torch.testing.assert_close(total, losses.l1(pred, target) + losses.ssim_loss(pred, target))
    assert set(terms) == {"l1", "ssim"}
    assert losses.MovieLoss(None, preset="l1_ssim").spec.startswith("1 L1 + 1 (1-SSIM)")
    assert losses.MovieLoss(None).spec.startswith("50 focal + 50 L1 + 50 FFT + 0.1 (1-SSIM)")
    mse, _ = losses.MovieLoss(None, preset="mse")(pred, target)
    torch.testing.assert_close(mse, ((pred - target) ** 2).mean())
    with pytest.raises(ValueError, match="unknown movie loss preset"):
        losses.MovieLoss(None, preset="nope")


def test_multi_query_readout_and_movie_decoder_shapes():
    torch.manual_seed(0)
    ro = QueryReadout(32, heads=2, n_queries=4).eval()
    out = ro(torch.randn(3, 8, 32), torch.rand(3, 8), torch.rand(3, 2))
    assert out.shape == (3, 8, 32)  # 2 times x 4 queries
    assert not torch.allclose(out[:, 0], out[:, 1])  # different queries read different things
    model = MovieDecoder(CalciumEncoder(CFG.encoder, 40), (16, 32), losses.MovieLoss(None, preset="l1_ssim"),
                         channels=8, n_queries=4, n_sessions=2).eval()
    batch = {**make_batch(b=2), "frame_time": torch.tensor([0.1, 0.2]), "session_index": torch.tensor([0, 1])}
    assert model.predict(batch).shape == (2, 16, 32)


def test_mean_frame_prior_is_the_untrained_output():
    net = MovieUNet(16, (16, 32), channels=8)
    frame = torch.rand(16, 32) * 0.9 + 0.05
    net.set_prior(frame)
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.zeros_(net.head.bias)
    torch.testing.assert_close(net(torch.randn(4, 16)), frame.expand(4, -1, -1), atol=1e-5, rtol=0)


def test_normalisation_uses_training_frames_only():
    from poyocap.data.arrays import recording_from_arrays

    dff = np.full((200, 3), 100.0)
    dff[:100] = np.array([1.0, 2.0, 3.0]) + np.random.default_rng(0).standard_normal((100, 3))
    rec = recording_from_arrays(dff, metadata={"session_id": "s", "cre_line": "Cux2-CreERT2"}, rate_hz=30.0)
    table = WindowTable(session=np.zeros(4, np.int64), t0=np.array([0, 50, 100, 150]), t1=np.array([50, 100, 150, 200]),
                        split=np.array([SPLIT_CODE["train"]] * 2 + [SPLIT_CODE["test"]] * 2),
                        direction=-np.ones(4, np.int64), frame=-np.ones(4, np.int64), frame_time=np.zeros(4))
    mu, sd = training_stats(rec, table, 0, np.arange(3))
    np.testing.assert_allclose(mu, rec.dff[:100].mean(0), rtol=1e-5)
    np.testing.assert_allclose(sd, rec.dff[:100].std(0), rtol=1e-4)
    vocab = UnitVocab(rec.unit_ids)
    test = WindowDataset([rec], table, "test", vocab, max_units=8, normalize=True)
    assert float(test[0]["values"].mean()) > 50  # test frames scaled by training statistics, not their own
    train_ds = WindowDataset([rec], table, "train", vocab, max_units=8, normalize=True)
    assert abs(float(train_ds[0]["values"].mean())) < 0.5


def test_prediction_diversity():
    target = torch.rand(10, 4, 8)
    assert prediction_diversity(target, target) == pytest.approx(1.0)
    assert prediction_diversity(target.mean(0, keepdim=True).expand_as(target), target) == pytest.approx(0.0)
    assert prediction_diversity(0.5 * target, target) == pytest.approx(0.5)


def test_ssim_loss_is_float32_under_bf16_autocast():
    """The paper's and the demo's movie loss contain 1 - SSIM: under bf16 autocast (every CUDA run) its Gaussian
    filters ran in bf16 and E[x^2] - E[x]^2 cancelled to <= 0 (SSIM -inf, NaN gradients)."""
    torch.manual_seed(0)
    target = torch.rand(4, 32, 64)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1).requires_grad_()
    expected = losses.ssim_loss(pred, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = losses.ssim_loss(pred, target)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
    got.backward()
    assert torch.isfinite(pred.grad).all()


def test_unet_memory_layout_changes_nothing_but_speed():
    """The U-Net's memory layouts (default: convolutions channels-last, norms contiguous) give the same frames and
    gradients."""
    torch.manual_seed(0)
    unet = MovieUNet(24, (16, 32), channels=16)
    assert unet.layout == "mixed"
    vec = torch.randn(5, 24)
    outs, grads = [], []
    for layout in ("mixed", "channels_last", "contiguous"):
        unet.layout = layout
        unet.zero_grad()
        out = unet(vec)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(unet.stages[0][1].weight.grad.clone())
    assert outs[0].shape == (5, 16, 32)
    for out, grad in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(outs[0], out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grads[0], grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("hw", [(32, 64), (12, 20), (8, 16)])
def test_ssim_frames_equals_pytorch_msssim(hw):
    """The loss's matrix-product SSIM is pytorch_msssim's SSIM per frame, in value and in gradient (including
    frames smaller than the window along an axis, which pytorch_msssim leaves unfiltered)."""
    import warnings

    from pytorch_msssim import ssim

    g = torch.Generator().manual_seed(1)
    target = torch.rand(6, *hw, generator=g)
    pred = (0.7 * target + 0.3 * torch.rand(6, *hw, generator=g)).requires_grad_()
    ours = losses.ssim_frames(pred, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pytorch_msssim warns when it skips an axis
        ref = ssim(pred[:, None], target[:, None], data_range=1.0, size_average=False, win_size=11, win_sigma=1.5)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    (grad_ours,) = torch.autograd.grad(ours.sum(), pred)
    (grad_ref,) = torch.autograd.grad(ref.sum(), pred)
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-6, rtol=1e-4)
    assert float(losses.ssim_frames(target, target).min()) == pytest.approx(1.0, abs=1e-6)


def test_effective_rank_known_answers():
    from poyocap.model.pretrain import effective_rank

    g = torch.Generator().manual_seed(0)
    assert effective_rank(torch.randn(20000, 8, generator=g)) == pytest.approx(8.0, rel=0.02)
    line = torch.randn(500, 1, generator=g) * torch.randn(1, 8, generator=g)
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(5.0 * line) == pytest.approx(effective_rank(line))  # scale-free


def test_shared_eval_target_is_the_dropout_free_latent():
    from dataclasses import replace

    from poyocap.config import PretrainConfig
    from poyocap.model.pretrain import TwinMaskedPretrainer

    torch.manual_seed(0)
    enc = CalciumEncoder(replace(CFG.encoder, dropout=0.5), 40)
    batch = make_batch(b=3)
    for target, clean in (("shared", False), ("shared_eval", True)):
        obj = TwinMaskedPretrainer(enc, PretrainConfig(target=target)).train()
        v = obj.views(batch)
        enc.eval()
        with torch.no_grad():
            z_clean = enc(batch)[1]
        enc.train()
        assert torch.allclose(v["target"], z_clean) == clean
        assert obj.encoder.training  # the objective is left in training mode


def _probe_setup(head_init: str):
    """A smoke grating decoder on one recording whose 20 training windows hold 4 directions, made separable by the
    dF/F of one unit per direction."""
    cfg = CFG.with_overrides(finetune=dict(head_init=head_init))
    task = get_task("gratings", cfg)
    rng = np.random.default_rng(1)
    dff = rng.normal(0, 0.1, size=(600, 4)).astype(np.float32)
    directions = np.tile(np.arange(4), 5)
    for i, d in enumerate(directions):
        dff[i * 30:(i + 1) * 30, d] += 2.0
    rec = make_recording(dff=dff, timestamps=np.arange(600) / 30.0, movie_frames=np.full(600, -1),
                         movie_repeat=np.full(600, -1))
    table = WindowTable(session=np.zeros(20, np.int64), t0=np.arange(20) * 30, t1=np.arange(20) * 30 + 30,
                        split=np.full(20, SPLIT_CODE["train"]), direction=directions, frame=np.full(20, -1),
                        frame_time=np.zeros(20))
    vocab = UnitVocab(list(rec.unit_ids))
    vocab.session_rows([rec.session_id])
    torch.manual_seed(0)
    model = task.build(CalciumEncoder(cfg.encoder, len(vocab)), n_sessions=1)
    return task, model, rec, table, vocab


def test_linear_probe_head_starts_the_head_as_the_fitted_probe():
    from poyocap.finetune import linear_probe_head

    task, model, rec, table, vocab = _probe_setup("linear_probe")
    ds = task.dataset([rec], table, "train", vocab)
    head = model.readout.classify[1]
    random_head = head.weight.detach().clone()
    probe_acc = linear_probe_head(model, ds)
    assert not torch.equal(head.weight, random_head)
    pred, target = task.predict(model, ds)
    model_acc = float((pred == target).float().mean())
    assert model_acc == pytest.approx(probe_acc, abs=1 / 20)  # the head computes the probe's decision function
    assert model_acc > 0.25  # above chance on these separable windows, before any training step
    assert model.centring is None or bool((model.centring.seen > 0).all())  # centring statistics were filled
    with pytest.raises(TypeError, match="GratingDecoder"):
        linear_probe_head(torch.nn.Linear(2, 2), ds)


def test_head_init_random_leaves_the_head_alone_and_linear_probe_changes_it():
    task, model, rec, table, vocab = _probe_setup("random")
    before = model.readout.classify[1].weight.detach().clone()
    task.initialise(model, [rec], table, vocab)
    assert torch.equal(model.readout.classify[1].weight, before)
    task, model, rec, table, vocab = _probe_setup("linear_probe")
    before = model.readout.classify[1].weight.detach().clone()
    task.initialise(model, [rec], table, vocab)
    assert not torch.equal(model.readout.classify[1].weight, before)


def test_strip_starts_where_the_true_movie_changes_most():
    from poyocap.plotting import strip_start

    frames = torch.full((64, 4, 8), 0.5)
    frames[30:42] = (torch.arange(12) % 2).float()[:, None, None]  # frames 30-41 flicker 0 / 1: 11 changes of 1
    assert strip_start(frames, 12) == 30  # the cuts into and out of the stretch change by 0.5 only
    assert strip_start(frames[:10], 12) == 0  # fewer frames than the strip
    still = torch.ones(64, 4, 8)
    assert strip_start(still, 12) == 0
