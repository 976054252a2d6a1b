"""Readouts, movie losses, evaluation metrics, across-seed statistics, loading a pretrained encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from poyocap import evaluate, losses
from poyocap.config import Config
from poyocap.finetune import GratingDecoder, MovieDecoder, load_pretrained
from poyocap.model.encoder import CalciumEncoder
from poyocap.model.readouts import MovieUNet, QueryReadout


@pytest.mark.parametrize("scale", ["smoke", "demo", "paper"])
def test_unet_output_shapes_at_each_scale(scale):
    cfg = Config.for_scale(scale)
    hw = (cfg.data.frame_height, cfg.data.frame_width)
    net = MovieUNet(32, hw, channels=16)
    out = net(torch.randn(2, 32))
    assert out.shape == (2, *hw) and (out >= 0).all() and (out <= 1).all()
    with pytest.raises(ValueError):
        MovieUNet(32, (30, 60))


def test_injection_flag_changes_parameter_count_as_expected():
    dim, ch = 32, 16
    with_inj = MovieUNet(dim, (32, 64), channels=ch, inject=True)
    without = MovieUNet(dim, (32, 64), channels=ch, inject=False)
    expected = 0
    size, c = (2, 4), ch
    for s in range(4):
        c = max(8, ch // 2 ** (s + 1))
        size = (size[0] * 2, size[1] * 2)
        expected += (dim + 1) * c * size[0] * size[1] + (2 * c + 1) * c  # Linear(dim, C h w) + 1x1 conv fuse
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(with_inj) - n(without) == expected
    assert len(with_inj.injections) == 4 and len(without.injections) == 0
    # the injected vector reaches the output through the injections too: zero the start map's weights and only
    # the injections carry the latent (without them the output no longer depends on it)
    for net in (with_inj, without):
        torch.nn.init.zeros_(net.start.weight)
    a, b = torch.randn(1, dim), torch.randn(1, dim)
    with torch.no_grad():
        assert not torch.allclose(with_inj(a), with_inj(b))
        torch.testing.assert_close(without(a), without(b))


def test_query_readout_shapes_and_values():
    torch.manual_seed(0)
    ro = QueryReadout(32, heads=2).eval()
    z, lat_t = torch.randn(3, 8, 32), torch.rand(3, 8)
    out = ro(z, lat_t, torch.rand(3, 2))
    assert out.shape == (3, 2, 32)
    with torch.no_grad():
        # one latent: attention has nothing to choose, the output is query + out(v(z)) through the MLP
        one = ro(z[:, :1], lat_t[:, :1], torch.rand(3, 1))
        x = ro.query + ro.attn.out(ro.attn.project_context(z[:, :1])[1].transpose(1, 2).reshape(3, 1, 32))
        torch.testing.assert_close(one, x + ro.ffn(x))
        # queries at different times read different mixtures of the latents
        assert not torch.allclose(out[:, 0], out[:, 1])


def test_loss_terms_have_known_values():
    t = torch.full((2, 16, 32), 0.5)
    p = t + 0.1
    assert losses.l1(p, t).item() == pytest.approx(0.1, abs=1e-6)
    assert losses.focal(p, t).item() == pytest.approx(0.1, abs=1e-6)  # equal errors: focal == L1
    hard = t.clone()
    hard[0, 0, 0] = 1.5  # one hard pixel weighs more under focal than under L1
    assert losses.focal(hard, t).item() > losses.l1(hard, t).item()
    # a constant offset only changes the DC coefficient: |FFT| differs by 0.1 * sqrt(HW) at one bin per image
    assert losses.fft(p, t).item() == pytest.approx(0.1 * np.sqrt(16 * 32) / (16 * 32), rel=1e-4)
    assert losses.ssim_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    loss = losses.MovieLoss(None)
    total, terms = loss(p, t)
    assert set(terms) == {"focal", "l1", "fft", "ssim"} and "perceptual off" in loss.spec
    expected = 50 * terms["focal"] + 50 * terms["l1"] + 50 * terms["fft"] + 0.1 * terms["ssim"]
    assert total.item() == pytest.approx(expected, rel=1e-5)


def test_perceptual_term_with_a_stub_backbone():
    conv = torch.nn.Conv2d(3, 4, 1, bias=False)
    torch.nn.init.ones_(conv.weight)
    stub = losses.Perceptual(lambda x: [conv(x)])
    t = torch.zeros(1, 8, 8)
    assert stub(t, t).item() == pytest.approx(0.0, abs=1e-8)
    # all channels equal -> unit-normalised features are identical in direction; opposite signs give |a-b|^2 = 4
    p = torch.ones(1, 8, 8)
    assert stub(p, t).item() == pytest.approx(4.0, rel=1e-5)
    with_lp = losses.MovieLoss(stub)
    _, terms = with_lp(p[None][0], t)
    assert "perceptual" in terms and "LPIPS" in with_lp.spec


def test_ssim_matches_skimage_on_different_frames():
    """Headline SSIM against scikit-image's reference (Gaussian 11 / 1.5, population covariance, data_range 1)."""
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 32, 64, generator=g)
    b = (0.6 * a + 0.4 * torch.rand(3, 32, 64, generator=g)).clamp(0, 1)
    ours = evaluate.ssim_per_frame(a, b)
    ref = [structural_similarity(a[i].double().numpy(), b[i].double().numpy(), data_range=1.0, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False) for i in range(3)]
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert 0.5 < ours.mean() < 0.95


def test_metric_definitions():
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.random((20, 16, 32)).astype(np.float32))
    assert np.allclose(evaluate.ssim_per_frame(frames, frames), 1.0, atol=1e-5)
    assert np.allclose(evaluate.pixel_correlation(frames, frames), 1.0)
    perm = rng.permutation(20)
    exact, near = evaluate.frame_identification(frames[perm], perm, np.arange(20), frames, k=0)
    assert exact.all() and near.all()
    shifted = np.roll(perm, 1)  # claim the wrong identities -> no exact hits
    exact, _ = evaluate.frame_identification(frames[perm], shifted, np.arange(20), frames, k=0)
    assert not exact.any()
    m = evaluate.confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 2]), n=3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    tm = evaluate.ssim_torchmetrics(frames, frames)
    assert tm == pytest.approx(1.0, abs=1e-4)


def test_ci_and_paired_tests_against_scipy():
    a = np.array([0.60, 0.58, 0.61])
    b = np.array([0.52, 0.55, 0.50])
    m, h = evaluate.mean_ci(a)
    lo, hi = stats.t.interval(0.95, 2, loc=a.mean(), scale=stats.sem(a))
    assert m == pytest.approx(a.mean()) and h == pytest.approx((hi - lo) / 2)
    assert evaluate.paired_t(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert np.isnan(evaluate.paired_t(a[:1], b[:1]))
    boot = evaluate.paired_bootstrap(a + 1, a, n_boot=200)
    assert boot["diff"] == pytest.approx(1.0) and boot["p"] == 0.0 and boot["ci_low"] == pytest.approx(1.0)
    x = np.random.default_rng(1).normal(size=500)
    assert evaluate.paired_bootstrap(x, x, 500)["p"] == 1.0


def test_load_pretrained_asserts_exactly_the_new_keys(tmp_path):
    cfg = Config.for_scale("smoke")
    enc = CalciumEncoder(cfg.encoder, 5)
    path = tmp_path / "encoder.pt"
    torch.save({"encoder": enc.state_dict(), "vocab": [f"s/{i}" for i in range(5)]}, path)
    model, vocab, missing = load_pretrained(path, cfg, ["s/4", "t/0", "t/1"], GratingDecoder)
    assert missing and all(k.startswith("readout.") for k in missing)
    assert len(vocab) == 7 and model.encoder.n_units == 7
    assert torch.equal(model.encoder.unit_emb.weight[:5], enc.unit_emb.weight)
    assert torch.equal(model.encoder.latent_emb, enc.latent_emb)
    movie, _, missing_m = load_pretrained(path, cfg, [], MovieDecoder, frame_hw=(16, 32),
                                          loss=losses.MovieLoss(None), channels=8)
    assert any(k.startswith("unet.") for k in missing_m) and not any(k.startswith("encoder.") for k in missing_m)
    torch.save({"encoder": {**enc.state_dict(), "extra.weight": torch.zeros(1)},
                "vocab": [f"s/{i}" for i in range(5)]}, tmp_path / "bad.pt")
    with pytest.raises(RuntimeError, match="unexpected"):
        load_pretrained(tmp_path / "bad.pt", cfg, [], GratingDecoder)


def test_frozen_encoder_warmup_and_lower_encoder_lr():
    from poyocap.config import OptimConfig
    from poyocap.train import TrainSettings, train

    cfg = Config.for_scale("smoke")
    torch.manual_seed(0)
    model = GratingDecoder(CalciumEncoder(cfg.encoder, 40), encoder_lr_scale=0.1)
    groups = model.param_groups(1e-3)
    assert groups[0]["lr"] == pytest.approx(1e-4) and groups[1]["lr"] == pytest.approx(1e-3)
    assert len(groups[0]["params"]) == len(list(model.encoder.parameters())) - 1  # all but the unit embeddings
    assert len(groups) == 3 and groups[2]["params"] == [model.encoder.unit_emb.weight]

    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_model import ListDataset

    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.readout.state_dict().items()}
    res = train(model, ListDataset(8), OptimConfig(steps=3, batch_size=4, lr=1e-2),
                TrainSettings(frozen_first_group_steps=3), seed=0, device="cpu", progress=False)
    assert all(torch.equal(enc_before[k], v) for k, v in res.objective.encoder.state_dict().items()
               if k != "unit_emb.weight")  # unit embeddings train from the start (tests/test_decoders.py)
    assert any(not torch.equal(head_before[k], v) for k, v in res.objective.readout.state_dict().items())


def test_a_run_test_evaluation_is_saved_and_reused(tmp_path):
    """Reusing a cached run reads its saved test evaluation instead of predicting again (notebook 05 reuses 04)."""
    import pandas as pd

    from poyocap.stages.finetune import RunResult, load_test_result, save_test_result

    assert load_test_result(tmp_path, None) is None  # nothing saved yet: the caller evaluates
    history = pd.DataFrame({"step": [0, 10], "loss": [1.0, 0.5]})
    res = RunResult({"method": "m", "ssim": 0.31}, np.array([0.2, 0.4]), torch.rand(3, 4, 8), torch.rand(3, 4, 8),
                    history)
    save_test_result(tmp_path, res)
    back = load_test_result(tmp_path, history)
    assert back.metrics == res.metrics and np.array_equal(back.per_item, res.per_item)
    assert torch.equal(back.pred, res.pred) and torch.equal(back.target, res.target) and back.history is history
