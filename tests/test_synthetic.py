"""The synthetic observatory: determinism, structure, calibration ranges, caching."""

from __future__ import annotations

import numpy as np
import pytest

from poyocap.config import ALL_CRE_LINES
from poyocap.data import synthetic
from poyocap.data.movie import procedural_movie, spectral_slope
from poyocap.data.recording import GRATING_DIRECTIONS, GRATING_TEMPORAL_FREQS
from poyocap.data.synthetic import LINE_PHYSIOLOGY, SyntheticObservatory
from poyocap.data.validate import fit_decay, line_statistics, neuron_moments

INTERNEURON_LINES = ("Sst-IRES-Cre", "Vip-IRES-Cre", "Pvalb-IRES-Cre")
SPARSE_EXCITATORY = ("Emx1-IRES-Cre", "Slc17a7-IRES2-Cre", "Cux2-CreERT2")


def test_same_seed_same_arrays(smoke_cfg):
    a = SyntheticObservatory(smoke_cfg.data, seed=0)
    b = SyntheticObservatory(smoke_cfg.data, seed=0)
    spec = a.sessions[3]
    ra, rb = a.generate(spec), b.generate(b.sessions[3])
    assert np.array_equal(ra.dff, rb.dff) and np.array_equal(ra.movie_frames, rb.movie_frames)
    other = SyntheticObservatory(smoke_cfg.data, seed=1)
    assert not np.array_equal(other.generate(other.sessions[3]).dff[:, 0], ra.dff[:, 0])


def test_structure_mirrors_the_observatory(smoke_cfg, smoke_recordings):
    recs = smoke_recordings
    assert {r.cre_line for r in recs} == set(ALL_CRE_LINES)
    for line in ALL_CRE_LINES:
        assert len({r.mouse_id for r in recs if r.cre_line == line}) == smoke_cfg.data.mice_per_line
    r = recs[0]
    assert abs(r.sampling_rate_hz - 30.0) < 1e-6
    assert set(r.grating_trials["direction_deg"]) == set(GRATING_DIRECTIONS)
    assert set(r.grating_trials["temporal_freq_hz"]) == set(GRATING_TEMPORAL_FREQS)
    dur = r.grating_trials["stop"] - r.grating_trials["start"]
    assert np.allclose(dur, 2.0) and (np.diff(np.sort(r.grating_trials["start"])) >= 3.0 - 1e-9).all()
    assert r.movie_repeat.max() + 1 == smoke_cfg.data.movie_repeats
    assert r.movie.shape == (smoke_cfg.data.movie_frames, smoke_cfg.data.frame_height, smoke_cfg.data.frame_width)
    # interneuron lines have far fewer ROIs per session than excitatory lines (at equal scale)
    assert LINE_PHYSIOLOGY["Pvalb-IRES-Cre"].rois_per_session * 5 < LINE_PHYSIOLOGY["Cux2-CreERT2"].rois_per_session
    assert LINE_PHYSIOLOGY["Pvalb-IRES-Cre"].indicator == "GCaMP6s"
    assert all(LINE_PHYSIOLOGY[l].indicator == "GCaMP6f" for l in ALL_CRE_LINES if l != "Pvalb-IRES-Cre")


def test_calibration_ranges_per_line_group(smoke_recordings):
    """Interneuron lines: closer to Gaussian than the sparse excitatory lines (measured, never set); the noise SD of
    every line near the real Cux2 sample's 0.06 (p10-p90 0.050-0.073) that the imaging constants are calibrated on."""
    def line_means(line):
        sk, ku = [], []
        for r in smoke_recordings:
            if r.cre_line == line:
                s, k, _ = neuron_moments(r.dff, r.valid)
                sk.append(s)
                ku.append(k)
        return np.nanmean(np.concatenate(sk)), np.nanmean(np.concatenate(ku))

    inter = [line_means(line) for line in INTERNEURON_LINES]
    sparse = [line_means(line) for line in SPARSE_EXCITATORY]
    assert max(s for s, _ in inter) < min(s for s, _ in sparse), (inter, sparse)
    assert max(k for _, k in inter) < min(k for _, k in sparse), (inter, sparse)
    assert all(1.5 <= s <= 3.0 and 5 <= k <= 16 for s, k in inter), inter
    assert all(s >= 2.5 and k >= 18 for s, k in sparse), sparse  # smoke: 2.9-3.6 / 22-31 (real Cux2 median 3.2 / 33)
    stats = line_statistics(smoke_recordings)
    assert stats["noise_sd_dff"].between(0.045, 0.08).all()


def test_fitted_decay_tracks_the_allen_constants(smoke_recordings):
    """Excitatory lines' isolated transients decay with their Allen constants (within 25 %; measured +16-19 % at
    smoke and demo); GCaMP6s Pvalb decays slower than GCaMP6f lines. (Since the calibration the dense, low-SNR
    interneuron traces rarely show isolated transients and their fits are inflated by summation - Sst ~0.8 s vs
    0.464 s - so no bound is asserted for them.)"""
    taus = {}
    for line in ("Pvalb-IRES-Cre", "Slc17a7-IRES2-Cre", "Scnn1a-Tg3-Cre", "Cux2-CreERT2"):
        tau, n, _ = fit_decay([r for r in smoke_recordings if r.cre_line == line])
        assert n >= 5
        taus[line] = tau
        if line != "Pvalb-IRES-Cre":
            assert abs(tau - LINE_PHYSIOLOGY[line].decay_s) / LINE_PHYSIOLOGY[line].decay_s < 0.25, (line, tau)
    assert taus["Pvalb-IRES-Cre"] > 1.5 * taus["Slc17a7-IRES2-Cre"]


def test_gratings_drive_tuned_responses(smoke_recordings):
    stats = line_statistics([r for r in smoke_recordings if r.cre_line in ("Cux2-CreERT2", "Pvalb-IRES-Cre")])
    osi = dict(zip(stats["cre_line"], stats["osi"]))
    assert osi["Cux2-CreERT2"] > osi["Pvalb-IRES-Cre"]  # pooled subunits -> broad interneuron tuning


def test_procedural_movie_is_natural_and_deterministic():
    import gc

    m1 = procedural_movie(120, 24, 48, seed=3)
    gc.collect()  # freed image arrays may hand their id() to new ones: no cache may key on id()
    procedural_movie(60, 24, 48, seed=5)
    m2 = procedural_movie(120, 24, 48, seed=3)
    assert m1.dtype == np.uint8 and m1.shape == (120, 24, 48) and np.array_equal(m1, m2)
    assert not np.array_equal(m1, procedural_movie(120, 24, 48, seed=4))
    assert -2.2 < spectral_slope(m1) < -0.6  # natural images: ~1/f amplitude spectrum
    # smooth within a shot: most consecutive frames differ little
    diffs = np.abs(np.diff(m1.astype(float), axis=0)).mean(axis=(1, 2))
    assert np.median(diffs) < 10
    with pytest.raises(ValueError):
        procedural_movie(0, 24, 48)


def test_cache_regenerates_corrupt_files(smoke_cfg, tmp_path):
    obs = SyntheticObservatory(smoke_cfg.data, seed=0, cache_dir=tmp_path)
    spec = obs.sessions[0]
    first = obs.load(spec)
    path = obs._path(spec)
    assert path.exists()
    path.write_bytes(path.read_bytes()[:1000])  # truncate
    again = obs.load(spec)
    assert np.array_equal(again.dff, first.dff)


def test_cache_refuses_a_valid_file_of_another_session(smoke_cfg, tmp_path):
    """A checksum-valid cached file of session B copied over session A's is noticed and A regenerated."""
    obs = SyntheticObservatory(smoke_cfg.data, seed=0, cache_dir=tmp_path)
    a, b = obs.sessions[0], obs.sessions[1]
    first_a, _ = obs.load(a), obs.load(b)
    obs._path(a).write_bytes(obs._path(b).read_bytes())
    again = obs.load(a)
    assert again.session_id == a.session_id and np.array_equal(again.dff, first_a.dff)
    other = SyntheticObservatory(smoke_cfg.data, seed=1, cache_dir=tmp_path)  # another generator digest
    assert other.digest != obs.digest and other._path(a) != obs._path(a)


def test_allen_dff_baseline_follows_slow_drift():
    """The windowed (mode then mean) baseline tracks a 2x drift of F0; a global baseline would leave +-0.33."""
    t = np.arange(20000)[:, None]
    f = (1000.0 + 1000.0 * t / 20000.0) * np.ones((1, 2)) + np.random.default_rng(0).normal(0, 5, (20000, 2))
    dff = synthetic.allen_dff(f.astype(np.float32))
    assert np.median(np.abs(dff)) < 0.03 and np.abs(dff[3000:-3000]).max() < 0.06


def test_allen_dff_baseline_removes_bleaching():
    t = np.arange(6000)[:, None] / 30.0
    f = 1000.0 * np.exp(-t / 3000.0) * np.ones((1, 3))  # the synthetic bleaching time constant
    dff = synthetic.allen_dff(f.astype(np.float32))
    assert np.abs(dff).max() < 0.05


def test_cache_identity_covers_the_generator_parameters(smoke_cfg, monkeypatch):
    """Changing a physiological parameter changes the cache digest, so stale sessions are never reused."""
    import dataclasses

    from poyocap.data import synthetic as syn

    before = SyntheticObservatory(smoke_cfg.data, seed=0, cache_dir=None).digest
    line = "Cux2-CreERT2"
    monkeypatch.setitem(syn.LINE_PHYSIOLOGY, line, dataclasses.replace(syn.LINE_PHYSIOLOGY[line], rate_hz=9.0))
    changed = SyntheticObservatory(smoke_cfg.data, seed=0, cache_dir=None).digest
    assert changed != before
    monkeypatch.setitem(syn.IMAGING, "photons_per_frame", 1.0)
    assert SyntheticObservatory(smoke_cfg.data, seed=0, cache_dir=None).digest not in (before, changed)


def test_event_spikes_keep_the_mean_and_heavy_tails_widen_event_sizes():
    rate = np.full((200_000, 1), 3.0)  # Hz
    plain = synthetic.event_spikes(np.random.default_rng(0), rate, burst=3.0)
    heavy = synthetic.event_spikes(np.random.default_rng(0), rate, burst=3.0, burst_shape=0.3)
    expected = 3.0 / synthetic.FPS * len(rate)
    for spikes in (plain, heavy):
        assert abs(spikes.sum() / expected - 1) < 0.05  # same spike rate
    # event sizes: negative binomial variance (burst-1) + (burst-1)^2 / k beyond Poisson's (burst-1)
    assert heavy[heavy > 0].var() > 2 * plain[plain > 0].var()
    assert np.array_equal(synthetic.event_spikes(np.random.default_rng(0), rate, burst=1.0),
                          np.random.default_rng(0).poisson(rate / synthetic.FPS))


def test_firing_rates_spontaneous_fraction_and_rate_spread():
    """``spontaneous_fraction`` moves that share of each cell's mean rate into a constant, untuned rate (mean kept,
    time-varying part scaled by 1 - fraction); ``rate_log_sd`` is the log-SD of the cells' mean rates."""
    import dataclasses

    n_t, n = 3000, 400
    epoch = np.arange(n_t) // 60
    timeline = synthetic.Timeline(np.zeros(n_t, np.int64), -np.ones(n_t, np.int64), -np.ones(n_t, np.int64), {},
                                  epoch)
    stim = np.random.default_rng(1).standard_normal((n_t, n)).astype(np.float32)
    base = LINE_PHYSIOLOGY["Cux2-CreERT2"]

    def rates(**changes):
        return synthetic.firing_rates(np.random.default_rng(0), dataclasses.replace(base, **changes), stim, timeline)

    tuned, mixed, flat = (rates(spontaneous_fraction=f) for f in (0.0, 0.3, 1.0))
    np.testing.assert_allclose(mixed.mean(0), tuned.mean(0), rtol=1e-4)
    np.testing.assert_allclose(flat.mean(0), tuned.mean(0), rtol=1e-4)
    assert flat.std(0).max() < 1e-4 * flat.mean()  # all spontaneous: constant in time
    np.testing.assert_allclose(mixed.std(0), 0.7 * tuned.std(0), rtol=1e-3)
    for sd in (0.2, 0.8):
        spread = np.log(rates(rate_log_sd=sd, spontaneous_fraction=0.0).mean(0)).std()
        assert abs(spread / sd - 1) < 0.15, (sd, spread)
