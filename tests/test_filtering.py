"""Regularity filtering: statistics on known distributions, knees, partition, stages."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from poyocap import filtering, paths, stages
from poyocap.data import synthetic
from poyocap.data.validate import neuron_moments


def test_moments_match_known_distributions():
    rng = np.random.default_rng(0)
    n = 400_000
    cols = np.stack([rng.gamma(4.0, size=n), rng.lognormal(0, 0.25, size=n), rng.standard_t(10, size=n),
                     rng.normal(size=n)], axis=1)
    skew, kurt, ok = neuron_moments(cols, kurtosis="pearson")
    # gamma(k): skew 2/sqrt(k), excess 6/k; lognormal(s): skew (e^{s^2}+2) sqrt(e^{s^2}-1); t(10): excess 1
    s2 = 0.25 ** 2
    assert ok.all()
    assert skew[0] == pytest.approx(1.0, abs=0.03) and kurt[0] == pytest.approx(3 + 1.5, abs=0.15)
    assert skew[1] == pytest.approx((np.exp(s2) + 2) * np.sqrt(np.exp(s2) - 1), abs=0.03)
    assert kurt[2] == pytest.approx(4.0, abs=0.25) and abs(skew[2]) < 0.05
    assert kurt[3] == pytest.approx(3.0, abs=0.05)
    _, excess, _ = neuron_moments(cols, kurtosis="excess")
    assert np.allclose(excess, kurt - 3)
    with pytest.raises(ValueError):
        neuron_moments(cols, kurtosis="fisher")


def test_moments_handle_nan_flat_and_short_traces():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    x[:, 1] = 0.2  # flat
    x[:450, 2] = np.nan  # only 50 finite frames
    x[10, 0] = np.nan
    valid = np.ones(500, bool)
    valid[20:30] = False
    skew, kurt, ok = neuron_moments(x, valid)
    assert ok.tolist() == [True, False, False] and np.isfinite(skew[0]) and np.isnan(kurt[1:]).all()
    ref = stats.skew(np.delete(x[valid, 0], np.flatnonzero(np.isnan(x[valid, 0]))))
    assert skew[0] == pytest.approx(ref)


def test_knee_on_a_known_elbow():
    flat = [1.0, 1.1, 1.2, 1.3]
    steep = [5.0, 9.0, 14.0, 20.0, 27.0, 35.0]
    # the knee sits at the elbow: the last flat point or the first steep one, never inside either segment
    assert filtering.knee_threshold(np.array(steep + flat)) in (1.3, 5.0)
    x = np.linspace(0, 1, 50)
    assert filtering.knee_threshold(np.where(x < 0.6, 0.1 * x, 0.06 + 5 * (x - 0.6))) == pytest.approx(
        0.1 * x[x < 0.6][-1], abs=0.02)
    # concave (a jump early, then a plateau): kneed marks the first point after the jump; the regular segment
    # ends one point earlier - exactly the last regular value
    assert filtering.knee_threshold(np.array([1.0, 1.1, 1.2, 1.3, 20, 21, 22, 23, 24, 25, 26])) == 1.3
    assert filtering.knee_threshold(np.array([3.0, 3.2, 3.3, 3.5, 40, 45, 50, 52, 54, 55])) == 3.5
    with pytest.raises(filtering.KneeNotFoundError):
        filtering.knee_threshold(np.ones(10))
    with pytest.raises(filtering.KneeNotFoundError):
        filtering.knee_threshold(np.array([1.0, 2.0]))


def _neurons(means: dict[str, tuple[float, float]]) -> pd.DataFrame:
    rows = []
    for line, (s, k) in means.items():
        for m in range(2):
            for i in range(5):
                rows.append({"unit_id": f"{line}/{m}/{i}", "cre_line": line, "mouse_id": f"{line}-m{m}",
                             "session_id": f"{line}-s{m}", "skewness": s + 0.01 * i, "kurtosis": k + 0.05 * i,
                             "ok": True})
    return pd.DataFrame(rows)


REGULAR = {"A": (1.5, 6.0), "B": (1.7, 6.5), "C": (1.9, 7.0), "D": (2.0, 7.5)}
HEAVY = {"E": (4.0, 30.0), "F": (6.0, 55.0), "G": (8.5, 90.0), "H": (11.0, 130.0), "I": (14.0, 180.0)}


def test_partition_finds_the_regular_group_and_roundtrips(tmp_path):
    neurons = _neurons({**REGULAR, **HEAVY})
    p = filtering.compute_partition(neurons)
    assert set(p.predictable_lines) == set(REGULAR) and set(p.unpredictable_lines) == set(HEAVY)
    again = filtering.Partition.load(p.save(tmp_path / "p.json"))
    assert again == p
    assert json.loads((tmp_path / "p.json").read_text())["method"] == "computed"
    paper = filtering.compute_partition(_neurons({"Sst-IRES-Cre": (2, 7), "Cux2-CreERT2": (6, 60),
                                                  "Emx1-IRES-Cre": (7, 70)}), method="paper")
    assert paper.predictable_lines == ("Sst-IRES-Cre",) and paper.thresholds == filtering.PAPER_THRESHOLDS


def test_partition_fails_loudly():
    with pytest.raises(filtering.KneeNotFoundError):
        filtering.compute_partition(_neurons({k: (2.0, 7.0) for k in "ABCDEF"}))
    with pytest.raises(filtering.EmptyGroupError):
        filtering.Partition(predictable_lines=(), unpredictable_lines=("A",), thresholds={}, method="computed",
                            source="synthetic", kurtosis_convention="pearson", sensitivity=1.0)
    with pytest.raises(filtering.EmptyGroupError):
        filtering.Partition(predictable_lines=("A",), unpredictable_lines=(), thresholds={}, method="computed",
                            source="synthetic", kurtosis_convention="pearson", sensitivity=1.0)
    with pytest.raises(FileNotFoundError, match="notebook 02"):
        filtering.Partition.load("/nonexistent/partition.json")


def test_bootstrap_and_sensitivity_on_clear_groups():
    neurons = _neurons({**REGULAR, **HEAVY})
    boot = filtering.bootstrap_stability(neurons, 30, seed=0)
    p = dict(zip(boot["cre_line"], boot["p_predictable"]))
    assert all(p[l] == 1.0 for l in REGULAR) and all(p[l] == 0.0 for l in HEAVY)
    sweep = filtering.sensitivity_sweep(neurons, (0.5, 1.0))
    assert (sweep["n_predictable"] == 4).all()


def test_filtering_stage_on_smoke(smoke_cfg, smoke_recordings):
    result = stages.filtering_stage(smoke_cfg, smoke_recordings, progress=False)
    p = result.partition
    assert p.predictable_lines and p.unpredictable_lines and p.source == "synthetic"
    assert stages.load_partition(smoke_cfg) == p
    with pytest.MonkeyPatch.context() as mp:  # a new generator version: the saved partition is stale
        mp.setattr(synthetic, "SYNTHETIC_VERSION", synthetic.SYNTHETIC_VERSION + 1)
        with pytest.raises(ValueError, match="rerun notebook 02"):
            stages.load_partition(smoke_cfg)
    with pytest.raises(ValueError, match="data differs"):  # ... or another data config
        stages.load_partition(smoke_cfg.with_overrides(data={"cell_count_scale": 0.5}))
    assert set(result.lines["cre_line"]) == {r.cre_line for r in smoke_recordings}
    assert (result.bootstrap["p_predictable"].between(0, 1)).all()
    header = (paths.results_dir("smoke") / "filtering_thresholds.md").read_text()
    assert "SYNTHETIC DATA" in header and "pearson" in header
