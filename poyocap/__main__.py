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
    }
    for name, help_text in specs.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--scale", choices=SCALES, default="demo")
        p.add_argument("--source", choices=SOURCES, default=None)
        p.add_argument("--seeds", default=None, help="comma-separated, e.g. 0,1,2")
        if name == "filter":
            p.add_argument("--partition", choices=("computed", "paper"), default="computed")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
