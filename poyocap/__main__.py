"""Command line: ``python -m poyocap <stage> [--scale demo] [--source synthetic|allen]``.

Each stage is the same function the matching notebook calls (``poyocap.stages``); the notebooks add the
figures. Only stages that exist are listed.
"""

from __future__ import annotations

import argparse
import sys

from .config import SCALES, SOURCES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poyocap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    specs = {
        "setup": "environment report and the configuration tree (notebook 00)",
        "data": "generate/load the observatory; sessions table and per-line statistics (notebook 01)",
        "filter": "regularity filtering: thresholds, partition, bootstrap (notebook 02)",
        "pretrain": "latent masked pretraining on the predictable pool, one run per seed (notebook 03)",
        "finetune": "fine-tuning on the unpredictable lines, POYO-CAP vs scratch + floors (notebooks 04-05); "
                    "with --task both, also the main results table",
    }
    for name, help_text in specs.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--scale", choices=SCALES, default="demo")
        p.add_argument("--source", choices=SOURCES, default=None)
        p.add_argument("--seeds", default=None, help="comma-separated, e.g. 0,1,2")
        if name in ("filter", "pretrain", "finetune"):
            p.add_argument("--partition", choices=("computed", "paper"), default="computed")
        if name == "finetune":
            p.add_argument("--task", choices=("movie", "gratings", "both"), default="both")
        if name in ("pretrain", "finetune"):
            p.add_argument("--force", action="store_true",
                           help="retrain from scratch (default: reuse finished runs, resume interrupted ones)")
    args = parser.parse_args(argv)

    import pandas as pd

    from . import stages

    pd.set_option("display.width", 200)
    cfg = stages.make_config(args.scale, args.source, args.seeds, partition=getattr(args, "partition", None))
    if args.stage == "setup":
        print(stages.environment_report(cfg).to_string(index=False))
        print(stages.config_table(cfg).to_string(index=False))
    elif args.stage == "data":
        result = stages.data_stage(cfg)
        print(result.sessions.round(2).to_string(index=False))
        print(result.line_stats.round(3).to_string(index=False))
    elif args.stage == "filter":
        result = stages.filtering_stage(cfg)
        print(result.comparison.to_string(index=False))
        print(f"partition saved to {stages.partition_path(cfg)}")
    elif args.stage == "finetune":
        tasks = ("movie", "gratings") if args.task == "both" else (args.task,)
        results = {t: stages.finetune_stage(cfg, t, force=args.force) for t in tasks}
        for t, r in results.items():
            print(f"== {t} ({r.loss_spec})")
            print(r.per_seed.round(4).to_string(index=False))
        if args.task == "both":
            table = stages.main_table(cfg, results["movie"], results["gratings"])
            print(table.round(4).to_string(index=False))
            print("\n".join(stages.headline(table)))
    elif args.stage == "pretrain":
        result = stages.pretrain_stage(cfg, force=args.force)
        print(result.summary.round(4).to_string(index=False))
        for run in result.runs:
            print(f"seed {run.seed}: {run.out_dir / 'encoder.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
