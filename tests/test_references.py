"""Linear references on toy problems with a known linear answer."""

import numpy as np
import pytest

from poyocap.data.arrays import recording_from_arrays
from poyocap.data.splits import SPLIT_CODE
from poyocap.data.windows import UnitVocab, WindowDataset, WindowTable
from poyocap.references import RIDGE_ALPHAS, LinearReference

META = {"session_id": "s1", "cre_line": "Cux2-CreERT2"}


def _toy_movie(noise: float = 0.0):
    rng = np.random.default_rng(0)
    n_frames, repeats, h, w = 20, 10, 4, 8
    movie = rng.integers(0, 256, (n_frames, h, w), dtype=np.uint8)
    t = n_frames * repeats
    frames = np.tile(np.arange(n_frames), repeats)
    mixing = rng.normal(size=(h * w, h * w))  # 32 ROIs, an invertible linear code of the 32 pixels
    dff = (movie[frames].reshape(t, -1) / 255.0) @ mixing + noise * rng.normal(size=(t, h * w))
    rec = recording_from_arrays(dff.astype(np.float32), metadata=META, rate_hz=30.0, movie=movie,
                                movie_frames=frames, movie_repeat=np.repeat(np.arange(repeats), n_frames))
    split = np.select([np.repeat(np.arange(repeats), n_frames) < 8, np.repeat(np.arange(repeats), n_frames) == 8],
                      [SPLIT_CODE["train"], SPLIT_CODE["val"]], SPLIT_CODE["test"])
    z = np.zeros(t, np.int64)
    table = WindowTable(session=z, t0=np.arange(t), t1=np.arange(t) + 1, split=split, direction=z - 1, frame=frames,
                        frame_time=np.zeros(t))
    vocab = UnitVocab(rec.unit_ids)
    return {s: WindowDataset([rec], table, s, vocab, max_units=64) for s in ("train", "val", "test")}


def test_ridge_reference_recovers_a_linear_code():
    ds = _toy_movie()
    ref = LinearReference("movie").fit(ds["train"], ds["val"])
    pred, target = ref.predict(ds["test"])
    assert pred.shape == target.shape == (20, 4, 8)
    assert float((pred - target).abs().max()) < 0.02
    assert ref.chosen[0] == min(RIDGE_ALPHAS)  # no noise: the weakest penalty wins on validation


def test_ridge_regularisation_is_chosen_on_validation_only():
    ds = _toy_movie(noise=3.0)
    ref = LinearReference("movie").fit(ds["train"], ds["val"])
    assert ref.chosen[0] > 0.1  # heavy noise: a stronger penalty wins on validation


def test_logistic_reference_on_separable_directions():
    rng = np.random.default_rng(1)
    n_trials = 120
    onsets = 30 + np.arange(n_trials) * 90
    direction = rng.integers(0, 8, n_trials)
    code = rng.normal(size=(8, 16))
    dff = rng.normal(0, 0.1, (onsets[-1] + 120, 16)).astype(np.float32)
    for o, d in zip(onsets, direction):
        dff[o:o + 30] += code[d]
    rec = recording_from_arrays(dff, metadata=META, rate_hz=30.0,
                                trials={"onset_frame": onsets, "direction_deg": (direction * 45).astype(str)})
    z = np.zeros(n_trials, np.int64)
    split = np.where(np.arange(n_trials) % 5 == 0, SPLIT_CODE["test"],
                     np.where(np.arange(n_trials) % 5 == 1, SPLIT_CODE["val"], SPLIT_CODE["train"]))
    table = WindowTable(session=z, t0=onsets, t1=onsets + 30, split=split, direction=direction, frame=z - 1,
                        frame_time=np.zeros(n_trials))
    vocab = UnitVocab(rec.unit_ids)
    sets = {s: WindowDataset([rec], table, s, vocab, max_units=64) for s in ("train", "val", "test")}
    ref = LinearReference("gratings").fit(sets["train"], sets["val"])
    pred, target = ref.predict(sets["test"])
    assert float((pred == target).float().mean()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="task"):
        LinearReference("audio")


def test_pseudo_population_ridge_combines_sessions_matched_by_frame_and_repeat():
    """Two sessions each see half of a linear pixel code; only the pseudo-population can invert it."""
    from poyocap.references import PseudoPopulationRidge

    rng = np.random.default_rng(0)
    n_frames, repeats, h, w = 20, 10, 4, 8
    movie = rng.integers(0, 256, (n_frames, h, w), dtype=np.uint8)
    t = n_frames * repeats
    frames, rep = np.tile(np.arange(n_frames), repeats), np.repeat(np.arange(repeats), n_frames)
    mixing = rng.normal(size=(h * w, h * w))
    code = (movie[frames].reshape(t, -1) / 255.0) @ mixing
    recs = [recording_from_arrays(code[:, k * 16:(k + 1) * 16].astype(np.float32),
                                  metadata={"session_id": f"s{k}", "cre_line": "Cux2-CreERT2"}, rate_hz=30.0,
                                  movie=movie, movie_frames=frames, movie_repeat=rep) for k in range(2)]
    split = np.select([rep < 8, rep == 8], [SPLIT_CODE["train"], SPLIT_CODE["val"]], SPLIT_CODE["test"])
    order = np.r_[np.arange(t), np.arange(t)[::-1]]  # the second session's windows in another order
    table = WindowTable(session=np.repeat([0, 1], t), t0=order, t1=order + 1, split=split[order],
                        direction=np.full(2 * t, -1), frame=frames[order], frame_time=np.zeros(2 * t))
    vocab = UnitVocab(recs[0].unit_ids + recs[1].unit_ids)
    sets = {s: WindowDataset(recs, table, s, vocab, max_units=64) for s in ("train", "val", "test")}
    pseudo = PseudoPopulationRidge(recs, table).fit(SPLIT_CODE["train"], SPLIT_CODE["val"])
    pred, target = pseudo.predict(sets["test"])
    assert pred.shape == (40, 4, 8) and float((pred - target).abs().max()) < 0.02
    per_session, _ = LinearReference("movie").fit(sets["train"], sets["val"]).predict(sets["test"])
    assert float((per_session - target).abs().mean()) > 5 * float((pred - target).abs().mean())


@pytest.mark.parametrize("n, p", [(60, 12), (15, 40)])  # more windows than features, and fewer (the pseudo-population)
def test_ridge_path_equals_sklearn_ridge_at_every_alpha(n, p):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from poyocap.references import RidgePath

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, p)) * rng.uniform(0.1, 3.0, p) + rng.normal(size=p)
    x[:, 3] = 1.5  # a constant feature: StandardScaler keeps it at scale 1
    y = x @ rng.normal(size=(p, 5)) + rng.normal(size=(n, 5))
    x_new = rng.normal(size=(7, p))
    path = RidgePath(x, y)
    for alpha in RIDGE_ALPHAS:
        expected = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x, y).predict(x_new)
        np.testing.assert_allclose(path.model(alpha).predict(x_new), expected, rtol=1e-4, atol=1e-4)
