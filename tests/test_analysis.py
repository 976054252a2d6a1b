"""Analyses (notebook 07): each function on a case with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from poyocap.analysis.curves import monotone_trend, ratio_ci, slope_per_decade, steps_to_reach
from poyocap.analysis.fisher import empirical_fisher_per_sample, linear_fisher, linear_fisher_vs_neurons
from poyocap.analysis.landscape import (filter_normalised_directions, loss_surface, roughness, trajectory_plane)
from poyocap.analysis.transfer import linear_cka, relative_change_per_module


def gaussian_population(n: int, t: int, ds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Two stimuli ds apart, tuning slopes f' and correlated Gaussian noise: true I = f'^T Sigma^-1 f'."""
    rng = np.random.default_rng(seed)
    slopes = rng.normal(0, 1, n)
    a = rng.normal(0, 1, (n, n))
    sigma = a @ a.T / n + np.eye(n)
    chol = np.linalg.cholesky(sigma)
    r1 = rng.normal(size=(t, n)) @ chol.T
    r2 = slopes * ds + rng.normal(size=(t, n)) @ chol.T
    return r1, r2, float(slopes @ np.linalg.solve(sigma, slopes))


def test_linear_fisher_bias_correction_recovers_the_true_information():
    estimates, plug_in = [], []
    for seed in range(40):
        r1, r2, true = gaussian_population(20, 60, ds=0.5, seed=seed)
        estimates.append(linear_fisher(r1, r2, 0.5))
        plug_in.append(linear_fisher(r1, r2, 0.5, bias_corrected=False))
    # same population every seed? no: each seed draws its own; compare each to its own truth
    truths = [gaussian_population(20, 60, ds=0.5, seed=s)[2] for s in range(40)]
    rel = np.array(estimates) / np.array(truths)
    rel_plug = np.array(plug_in) / np.array(truths)
    assert abs(rel.mean() - 1) < 0.1  # unbiased
    assert rel_plug.mean() > 1.2  # the plug-in estimate overestimates with N = 20, T = 60
    with pytest.raises(ValueError, match="trials"):
        linear_fisher(np.zeros((5, 20)), np.zeros((5, 20)), 1.0)


def test_linear_fisher_grows_with_neurons_for_independent_informative_cells():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    responses = rng.normal(size=(400, 40)) + labels[:, None] * 0.3  # every cell: f' ds = 0.3, unit variance
    info = linear_fisher_vs_neurons(responses, labels, (0, 1), 1.0, [5, 10, 20, 500], n_trials=150, n_draws=10)
    assert np.isnan(info[-1])  # more neurons than recorded
    assert info[0] < info[1] < info[2] and info[2] == pytest.approx(20 * 0.09, rel=0.25)  # I = N (0.3)^2


def test_empirical_fisher_of_a_gaussian_model_is_the_known_trace():
    # loss = 0.5 (x - mu)^2 with x ~ N(mu0, 1): grad = mu - x, E[grad^2] = (mu - mu0)^2 + 1
    model = nn.Linear(1, 1, bias=False)
    nn.init.constant_(model.weight, 2.0)
    rng = np.random.default_rng(0)
    samples = [{"x": torch.tensor(float(v))} for v in rng.normal(0.0, 1.0, 4000)]
    fisher = empirical_fisher_per_sample(model, lambda s: 0.5 * (s["x"] - model.weight.sum()) ** 2, samples)
    assert fisher == pytest.approx(2.0**2 + 1.0, rel=0.06)


def test_roughness_is_zero_for_a_quadratic_and_large_for_a_noisy_surface():
    a = b = np.linspace(-1, 1, 11)
    aa, bb = np.meshgrid(a, b, indexing="ij")
    bowl = 3 + 2 * aa**2 + 0.5 * aa * bb + bb**2 - 0.3 * aa
    assert roughness(bowl, a, b)["sigma"] < 1e-10
    noisy = bowl + np.random.default_rng(0).normal(0, 0.5, bowl.shape)
    r = roughness(noisy, a, b)
    assert 0.3 < r["sigma"] < 0.6 and 0 < r["sigma_rel"] < 1


def test_loss_surface_and_directions_restore_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    x = torch.randn(16, 3)
    before = [p.detach().clone() for p in model.parameters()]
    d1, d2 = filter_normalised_directions(list(model.parameters()), seed=0)
    assert torch.allclose(d1[0].norm(dim=1), before[0].norm(dim=1).to(d1[0].dtype), atol=1e-6)  # per filter
    assert torch.count_nonzero(d1[1]) == 0  # biases are not moved
    grid = np.linspace(-1, 1, 5)
    surface = loss_surface(model, lambda: float(model(x).pow(2).mean()), d1, d2, grid, grid)
    assert surface.shape == (5, 5) and surface[2, 2] == pytest.approx(float(model(x).pow(2).mean()))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_trajectory_plane_spans_a_straight_path():
    final = [torch.zeros(3), torch.zeros(2, 2)]
    direction = torch.tensor([1.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    snaps = [[(t * direction)[:3], (t * direction)[3:].view(2, 2)] for t in (3.0, 2.0, 1.0, 0.0)]
    d1, _, coords = trajectory_plane(snaps, final)
    v = torch.cat([d.reshape(-1) for d in d1]).double()
    assert abs(float(v @ direction.double()) / float(direction.norm())) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(np.abs(coords[:, 1]), 0, atol=1e-6)


def test_curve_summaries():
    assert steps_to_reach([0, 100, 200], [0.1, 0.3, 0.5], 0.4) == pytest.approx(150)
    assert np.isnan(steps_to_reach([0, 100], [0.1, 0.2], 0.9)) and steps_to_reach([0, 10], [0.5, 0.6], 0.4) == 0
    x = np.array([1e3, 1e4, 1e5, 1e6])
    fit = slope_per_decade(x, 0.2 + 0.02 * np.log10(x) + np.array([0.001, -0.001, 0.001, -0.001]))
    assert fit["slope"] == pytest.approx(0.02, abs=0.002) and fit["ci95"] > 0 and fit["n"] == 4
    r = ratio_ci([2.0, 2.2, 1.8], [1.0, 1.1, 0.9])
    assert r["ratio"] == pytest.approx(2.0) and r["ci_low"] < 2.0 < r["ci_high"]
    assert monotone_trend([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1])["rho"] == pytest.approx(-1.0)


def test_relative_change_and_cka():
    before = {"cross.w": torch.ones(4, 4), "blocks.0.w": torch.ones(2), "unit_emb.weight": torch.ones(3, 2)}
    after = {"cross.w": torch.ones(4, 4) * 1.1, "blocks.0.w": torch.ones(2),
             "unit_emb.weight": torch.cat([torch.ones(3, 2), torch.full((5, 2), 9.0)])}  # 5 new units
    change = relative_change_per_module(before, after)
    assert change["cross"] == pytest.approx(0.1) and change["blocks"] == 0 and change["unit_emb"] == 0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10))
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(200, 10))) < 0.15


def test_per_session_probe_is_the_window_weighted_mean_of_the_session_scores():
    from poyocap.evaluate import per_session_probe, per_session_probe_scores

    rng = np.random.default_rng(0)

    def split(n_per_session):  # two sessions, the label readable from feature 0 in session 0 only
        session = np.repeat([0, 1], n_per_session)
        direction = rng.integers(0, 2, session.size)
        features = rng.normal(size=(session.size, 3))
        features[session == 0, 0] += 4.0 * direction[session == 0]
        return {"features": features, "direction": direction, "session": session}

    train, test = split(60), split(20)
    test["session"][:5] = 2  # a session without training windows is skipped
    scores = per_session_probe_scores(train, test)
    assert set(scores) == {0, 1} and scores[0][1] == 15 and scores[1][1] == 20
    assert scores[0][0] > 0.9 and scores[1][0] < 0.8
    weighted = (scores[0][0] * 15 + scores[1][0] * 20) / 35
    assert per_session_probe(train, test) == pytest.approx(weighted)
    with pytest.raises(ValueError, match="no session"):
        per_session_probe(train, {**test, "session": np.full_like(test["session"], 7)})
