"""A real training process killed mid-run resumes from its last checkpoint and ends exactly where an
uninterrupted run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

WORKER = Path(__file__).parent / "resume_worker.py"


def _run(out: Path, slow_s: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "SLOW_S": str(slow_s), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(WORKER), str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["step"])
    except Exception:  # noqa: BLE001 - not written yet
        return -1


def test_killed_training_resumes_and_matches_uninterrupted(tmp_path):
    full = _run(tmp_path / "full")
    assert full.wait(timeout=300) == 0, full.stderr.read()[-2000:]
    reference = json.loads((tmp_path / "full" / "result.json").read_text())
    assert reference["resumed_from"] == 0

    victim = _run(tmp_path / "cut", slow_s=0.05)  # ~0.15 s per step
    ckpt = tmp_path / "cut" / "run" / "checkpoint.pt"
    deadline = time.time() + 240
    while _checkpoint_step(ckpt) < 4 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed_at = _checkpoint_step(ckpt)
    victim.kill()
    victim.wait(timeout=30)
    assert 4 <= killed_at < 12 and not (tmp_path / "cut" / "result.json").exists(), "killed before it finished"

    again = _run(tmp_path / "cut")
    assert again.wait(timeout=300) == 0, again.stderr.read()[-2000:]
    resumed = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert resumed["resumed_from"] >= killed_at > 0, "restarted from 0 instead of resuming"
    assert resumed["digest"] == reference["digest"]
    assert resumed["losses"] == reference["losses"]


def test_finished_run_resumed_does_not_repeat_its_final_evaluation(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_model import ListDataset, _fresh_task

    from poyocap.config import OptimConfig
    from poyocap.train import TrainSettings, read_history, train

    optim, settings = OptimConfig(steps=4, batch_size=3, lr=1e-3), TrainSettings(eval_every=2, checkpoint_every=2)
    score = lambda objective, step: {"score": float(step)}  # noqa: E731
    first = train(_fresh_task(), ListDataset(6), optim, settings, seed=0, out_dir=tmp_path, device="cpu",
                  progress=False, eval_fn=score, select_key="score")
    (tmp_path / "metrics.csv").unlink()  # a deleted output: the run is rebuilt from its final checkpoint
    again = train(_fresh_task(), ListDataset(6), optim, settings, seed=0, out_dir=tmp_path, device="cpu",
                  progress=False, eval_fn=score, select_key="score", resume=True)
    assert again.resumed_from == 4
    assert again.history.equals(first.history)
    assert read_history(tmp_path / "metrics.csv").equals(first.history)  # full precision round trip


def test_stages_checkpoint_by_default(monkeypatch, smoke_cfg):
    """Every preset checkpoints periodically and the pretraining stage passes that on to train()."""
    from types import SimpleNamespace

    from poyocap.config import Config
    from poyocap.stages import pretrain as stage

    for scale in ("smoke", "demo", "paper"):
        cfg = Config.for_scale(scale)
        assert 0 < cfg.pretrain.checkpoint_every < cfg.pretrain.optim.steps
        assert 0 < cfg.finetune.checkpoint_every <= cfg.finetune.optim.steps
    seen = {}

    def fake_train(objective, dataset, optim, settings, **kw):  # noqa: ANN001, ANN202
        seen["settings"], seen["resume"] = settings, kw["resume"]
        raise RuntimeError("stop here")

    monkeypatch.setattr(stage, "train", fake_train)
    partition = SimpleNamespace(predictable_lines=("Sst-IRES-Cre",))
    try:
        stage.pretrain_run(smoke_cfg, partition, range(10), {"train": None}, seed=0)
    except RuntimeError:
        pass
    assert seen["settings"].checkpoint_every == smoke_cfg.pretrain.checkpoint_every and seen["resume"] is True


def test_missing_or_unreadable_artifacts_are_rebuilt_with_one_log_line(tmp_path, caplog):
    from poyocap.stages.common import load_cached

    run = tmp_path / "run"
    run.mkdir()
    (run / "a.txt").write_text("1")
    (run / "b.txt").write_text("2")
    read = lambda: int((run / "a.txt").read_text()) + int((run / "b.txt").read_text())  # noqa: E731
    assert load_cached(run, ["a.txt", "b.txt"], False, read) == 3
    assert load_cached(run, ["a.txt", "b.txt"], True, read) is None  # force
    (run / "b.txt").write_text("not a number")
    with caplog.at_level("WARNING"):
        assert load_cached(run, ["a.txt", "b.txt"], False, read) is None
    assert "unreadable" in caplog.text and "ValueError" in caplog.text
    (run / "b.txt").unlink()
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert load_cached(run, ["a.txt", "b.txt"], False, read) is None
    assert "b.txt missing" in caplog.text
    assert load_cached(tmp_path / "never_ran", ["a.txt"], False, read) is None


def test_corrupt_checkpoint_starts_over_instead_of_crashing(tmp_path, caplog):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_model import ListDataset, _fresh_task

    from poyocap.config import OptimConfig
    from poyocap.train import train

    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with caplog.at_level("WARNING"):
        res = train(_fresh_task(), ListDataset(6), OptimConfig(steps=2, batch_size=3), seed=0, out_dir=tmp_path,
                    device="cpu", progress=False, resume=True)
    assert res.resumed_from == 0 and res.steps_done == 2 and "unreadable" in caplog.text
