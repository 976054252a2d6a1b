"""The training loop under torchrun DDP (2 CPU processes, gloo backend)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_ddp_two_cpu_ranks(tmp_path):
    worker = Path(__file__).parent / "ddp_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
           str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    # each rank draws its own share of every epoch's permutation (12 items, 2 ranks, batch 3: 2 batches each)
    assert len(r0["seen"]) == len(r1["seen"]) == 12
    assert not set(r0["seen"][:6]) & set(r1["seen"][:6])
    # gradients are all-reduced: both ranks end with the same parameters
    assert abs(r0["param_sum"] - r1["param_sum"]) < 1e-9
    # only rank 0 writes the checkpoint and metrics
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "metrics.csv").exists()
