"""poyocap.parallel: worker counts, one thread per CPU run, and runs in workers that equal runs in this process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from poyocap import parallel
from poyocap.config import Config


def train_toy(seed: int, out: Path) -> None:
    """A job: a few AdamW steps of a small MLP with ``parallel.run_threads``, parameters written to ``out``."""
    with parallel.run_threads(Config.for_scale("smoke")):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 8))
        x, y = torch.randn(512, 64), torch.randint(0, 8, (512,))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(20):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        params = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()
        np.save(out, np.append(params, torch.get_num_threads()))


def failing_job(message: str) -> None:
    raise ValueError(message)


def test_worker_count_from_the_environment(monkeypatch):
    smoke, paper = Config.for_scale("smoke"), Config.for_scale("paper")
    monkeypatch.setenv(parallel.WORKERS_ENV, "3")
    assert parallel.n_workers(smoke, 10) == 3
    assert parallel.n_workers(smoke, 2) == 2  # never more workers than runs
    assert parallel.n_workers(paper, 10) == 1  # CUDA runs stay in the calling process
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    assert parallel.n_workers(smoke, 10) == 1
    for bad in ("0", "-2", "two"):
        monkeypatch.setenv(parallel.WORKERS_ENV, bad)
        with pytest.raises(ValueError, match=parallel.WORKERS_ENV):
            parallel.n_workers(smoke, 10)
    monkeypatch.delenv(parallel.WORKERS_ENV)
    assert 1 <= parallel.n_workers(smoke, 10) <= 10


def test_run_threads_pins_cpu_runs_and_restores():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with parallel.run_threads(Config.for_scale("smoke")):
            assert torch.get_num_threads() == parallel.RUN_THREADS
        assert torch.get_num_threads() == 2
        with parallel.run_threads(Config.for_scale("paper")):  # CUDA preset: untouched
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_runs_in_workers_equal_runs_in_this_process(tmp_path, monkeypatch):
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    cfg = Config.for_scale("smoke")
    jobs = [(train_toy, (seed, tmp_path / f"worker{seed}.npy")) for seed in (0, 1)]
    assert parallel.prefill(cfg, jobs, "toy", progress=False) == 2
    for seed in (0, 1):
        train_toy(seed, tmp_path / f"here{seed}.npy")
        worker, here = np.load(tmp_path / f"worker{seed}.npy"), np.load(tmp_path / f"here{seed}.npy")
        assert worker[-1] == here[-1] == parallel.RUN_THREADS
        np.testing.assert_array_equal(worker, here)  # bit for bit
    assert not np.array_equal(np.load(tmp_path / "here0.npy"), np.load(tmp_path / "here1.npy"))


def test_one_worker_runs_nothing_and_a_failing_job_raises_here(tmp_path, monkeypatch):
    cfg = Config.for_scale("smoke")
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")
    assert parallel.prefill(cfg, [(train_toy, (0, tmp_path / "a.npy")), (train_toy, (1, tmp_path / "b.npy"))],
                            "toy", progress=False) == 1
    assert not list(tmp_path.glob("*.npy"))  # the caller's own loop computes the runs
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    # one failing job beside a good one (two failing jobs race: whichever fails first is raised)
    with pytest.raises(ValueError, match="broken on purpose"):
        parallel.prefill(cfg, [(failing_job, ("broken on purpose",)), (train_toy, (0, tmp_path / "c.npy"))], "toy",
                         progress=False)


def test_pretraining_seeds_in_workers_give_the_same_summary(monkeypatch, scratch_dirs):
    """The stage-level promise: the pretraining table is the same with 2 workers as in one process."""
    import pandas as pd

    from poyocap import stages
    from poyocap.stages import pretrain as pretrain_module

    used = []
    monkeypatch.setattr(pretrain_module, "prefill", lambda *a, **k: used.append(parallel.prefill(*a, **k)) or used[-1])
    cfg = stages.make_config("smoke", seeds="0,1")
    recordings = stages.load_recordings(cfg, progress=False)  # cached: the workers read it back
    summaries = {}
    for workers in ("1", "2"):
        monkeypatch.setenv(parallel.WORKERS_ENV, workers)
        monkeypatch.setenv("POYOCAP_OUTPUT", str(scratch_dirs / f"out{workers}"))  # nothing cached
        stages.filtering_stage(cfg, recordings, progress=False)
        summaries[workers] = stages.pretrain_stage(cfg, recordings, progress=False).summary
    assert used == [1, 2]  # in this process, then in two workers
    pd.testing.assert_frame_equal(summaries["1"], summaries["2"])
