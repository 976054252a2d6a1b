"""Downstream-task objects and the stage helpers on tiny inputs."""

import numpy as np
import pytest
import torch

from poyocap.config import Config
from poyocap.data.windows import WindowTable
from poyocap.data import synthetic
from poyocap.stages.common import artifact_dir, keep_evenly, keep_every, subsample, table_header
from poyocap.tasks import GratingTask, MovieTask, get_task


class FakeDataset:
    def __init__(self, n: int) -> None:
        z = np.zeros(n, np.int64)
        self.table = WindowTable(session=z, t0=np.arange(n), t1=np.arange(n) + 3, split=z, direction=z, frame=z,
                                 frame_time=np.zeros(n))

    def __len__(self) -> int:
        return len(self.table)


def test_keep_every_and_subsample_take_evenly_spaced_windows():
    ds = keep_every(FakeDataset(10), 3)
    assert ds.table.t0.tolist() == [0, 3, 6, 9]
    ds = subsample(FakeDataset(10), 4)  # every ceil(10 / 4) = 3rd
    assert ds.table.t0.tolist() == [0, 3, 6, 9]
    assert len(subsample(FakeDataset(10), 0)) == 10 and len(subsample(FakeDataset(3), 5)) == 3
    whole = FakeDataset(10)
    assert len(subsample(whole, 4)) == 4 and len(keep_every(whole, 2)) == 5 and len(whole) == 10  # input untouched


def test_keep_evenly_takes_exactly_n_spread_windows():
    whole = FakeDataset(10)
    ds = keep_evenly(whole, 4)
    assert ds.table.t0.tolist() == [0, 3, 6, 9] and len(whole) == 10  # exactly 4, ends included, input untouched
    assert keep_evenly(whole, 7).table.t0.tolist() == [0, 2, 3, 4, 6, 8, 9]  # np.round of linspace(0, 9, 7)
    assert keep_evenly(whole, 10) is whole and keep_evenly(whole, 12) is whole


def test_artifact_dir_changes_with_inputs_only(tmp_path, monkeypatch):
    monkeypatch.setenv("POYOCAP_OUTPUT", str(tmp_path))
    cfg = Config.for_scale("smoke")
    a = artifact_dir(cfg, "x", ("data", "encoder"), 1, "-seed0", lines=["A"])
    assert a == artifact_dir(cfg, "x", ("data", "encoder"), 1, "-seed0", lines=["A"])
    assert a != artifact_dir(cfg, "x", ("data", "encoder"), 2, "-seed0", lines=["A"])  # version
    assert a != artifact_dir(cfg, "x", ("data", "encoder"), 1, "-seed0", lines=["B"])  # other input
    assert a != artifact_dir(cfg.with_overrides(encoder={"dim": 16}), "x", ("data", "encoder"), 1, "-seed0",
                             lines=["A"])
    assert a == artifact_dir(cfg.with_overrides(eval={"seeds": (5, 6)}), "x", ("data", "encoder"), 1, "-seed0",
                             lines=["A"])  # a section the stage does not read
    assert a.parent == tmp_path / "artifacts" / "smoke" / "x" and a.name.endswith("-seed0")
    no_data = artifact_dir(cfg, "x", ("encoder",), 1, "-seed0")
    monkeypatch.setattr(synthetic, "SYNTHETIC_VERSION", synthetic.SYNTHETIC_VERSION + 1)  # a new generator ...
    assert a != artifact_dir(cfg, "x", ("data", "encoder"), 1, "-seed0", lines=["A"])  # ... never reuses old runs
    assert no_data == artifact_dir(cfg, "x", ("encoder",), 1, "-seed0")  # (a stage that reads no data keeps its own)
    assert f"v{synthetic.SYNTHETIC_VERSION} (SYNTHETIC DATA)" in table_header(cfg)[0]


def test_grating_task_scores_argmax_against_labels():
    task = get_task("gratings", Config.for_scale("smoke"))
    assert isinstance(task, GratingTask) and task.metric == "accuracy"
    logits = torch.tensor([[0.1, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    pred = task.prediction(logits)
    per = task.score_items(pred, torch.tensor([1, 0, 0]))
    assert pred.tolist() == [1, 0, 2] and per.tolist() == [1.0, 1.0, 0.0]
    metrics = task.test_metrics(pred, torch.tensor([1, 0, 0]), per, None, None)
    assert metrics["accuracy"] == pytest.approx(2 / 3) and metrics["confusion"].sum() == 3
    assert task.constant_prediction([], None, torch.zeros(3)) is None


def test_movie_task_ssim_is_one_on_identical_frames_and_examples_are_capped():
    task = get_task("movie", Config.for_scale("smoke"))
    assert isinstance(task, MovieTask) and task.with_images and "ssim_novel" in task.table_extras
    frames = torch.rand(70, 16, 32, generator=torch.Generator().manual_seed(0))
    assert task.score_items(frames, frames) == pytest.approx(np.ones(70), abs=1e-5)
    assert task.score_items(frames, frames.flip(0)).mean() < 0.2
    assert len(task.examples(frames)) == 64
    metrics = task.constant_metrics(frames, frames, task.score_items(frames, frames))
    assert metrics["ssim"] == pytest.approx(1.0, abs=1e-5) and np.isnan(metrics["frame_id"])
