"""Launched by test_ddp.py through torchrun (2 CPU processes, gloo): trains a tiny task with DDP."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_model import ListDataset, _fresh_task  # noqa: E402

from poyocap.config import OptimConfig  # noqa
from poyocap.train import init_distributed, train  # noqa: E402


class Logged(ListDataset):
    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.seen: list[int] = []

    def __getitem__(self, i: int):  # noqa: ANN204
        self.seen.append(int(i))
        return super().__getitem__(i)


def main() -> None:
    out = Path(sys.argv[1])
    rank, world = init_distributed()
    ds = Logged(12)
    res = train(_fresh_task(), ds, OptimConfig(steps=4, batch_size=3, lr=1e-3), seed=0, out_dir=out / "run",
                device="cpu", progress=False)
    flat = torch.cat([p.detach().flatten() for p in res.objective.parameters()])
    (out / f"rank{rank}.json").write_text(json.dumps({"world": world, "seen": ds.seen,
                                                      "param_sum": float(flat.double().sum())}))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
