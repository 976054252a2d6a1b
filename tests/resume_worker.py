"""Launched by test_resume.py: trains a tiny objective with checkpoints every 2 steps, optionally slowly (so the
test can kill it mid-run), and writes the final weights' digest and where the run resumed from."""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_model import ListDataset, _fresh_task  # noqa: E402

from poyocap.config import OptimConfig  # noqa: E402
from poyocap.repro import weights_digest  # noqa: E402
from poyocap.train import TrainSettings, train  # noqa: E402


class Slow(ListDataset):
    def __getitem__(self, i: int):  # noqa: ANN204
        time.sleep(float(os.environ.get("SLOW_S", "0")))
        return super().__getitem__(i)


def main(out: Path) -> None:
    res = train(_fresh_task(), Slow(12), OptimConfig(steps=12, batch_size=3, lr=1e-3, warmup_steps=2),
                TrainSettings(checkpoint_every=2), seed=1, out_dir=out / "run", device="cpu", progress=False,
                resume=True)
    (out / "result.json").write_text(json.dumps({
        "resumed_from": res.resumed_from, "digest": weights_digest(res.objective.state_dict()),
        "losses": res.history["loss"].tolist()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
