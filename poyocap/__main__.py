"""Command line: ``python -m poyocap <stage> [--scale demo] [--source synthetic|allen]``.

Each stage is the same function the matching notebook calls (``poyocap.stages``); the notebooks add the
figures. Only stages that exist are listed.
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import SCALES, SOURCES, parse_seeds

#: errors a user can cause or fix (bad input, no network, no disk): one line on stderr, exit status 1
#: (set POYOCAP_DEBUG=1 for the traceback); anything else is a bug and keeps its traceback
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


def _seeds(text: str) -> str:
    """argparse type: validates ``--seeds`` (distinct integers >= 0) and keeps it as text."""
    try:
        parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _check_writable(path: "Path") -> None:  # noqa: F821
    """Fail early, with the path, when outputs cannot be written."""
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as err:
        raise OSError(f"cannot write outputs under {path} ({err.strerror or err}); choose another directory "
                      "with $POYOCAP_OUTPUT") from None


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
    own = sub.add_parser("own-data", help="your own dF/F (.npz) through the regularity filter (label-free, or "
                                           "line-level with >= 3 Cre lines)", description=OWN_DATA_HELP)
    own.add_argument("files", nargs="+", help=".npz files with the keys of poyocap.data.arrays.load_npz")
    own.add_argument("--scale", choices=SCALES, default=None,
                     help="also call the cells with that scale's per-neuron thresholds (its Partition artifact)")
    own.add_argument("--snr-min", type=float, default=1.5, help="SNR-aware call: std/noise below this is 'too noisy'")
    for name, help_text in specs.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--scale", choices=SCALES, default="demo")
        p.add_argument("--source", choices=SOURCES, default=None)
        p.add_argument("--seeds", default=None, type=_seeds, help="comma-separated, distinct, >= 0, e.g. 0,1,2")
        if name in ("filter", "pretrain", "finetune"):
            p.add_argument("--partition", choices=("computed", "paper"), default="computed")
        if name == "finetune":
            p.add_argument("--task", choices=("movie", "gratings", "both"), default="both")
        if name in ("pretrain", "finetune"):
            p.add_argument("--force", action="store_true",
                           help="retrain from scratch (default: reuse finished runs, resume interrupted ones)")
    args = parser.parse_args(argv)
    from .data.allen import AllenDownloadError

    try:
        return _run(args)
    except (*USER_ERRORS, AllenDownloadError) as err:
        if os.environ.get("POYOCAP_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    import pandas as pd

    from . import paths, stages

    pd.set_option("display.width", 200)
    if args.stage == "own-data":
        return _own_data(args)
    cfg = stages.make_config(args.scale, args.source, args.seeds, partition=getattr(args, "partition", None))
    _check_writable(paths.output_root())
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


OWN_DATA_HELP = ("Per-cell statistics (skewness, kurtosis, noise, SNR, autocorrelation, event rate, correlation) of "
                 "your own recordings and the paper's regularity call per neuron, plain and SNR-aware. File format: "
                 "dff (N, T), fs_hz, optional segment_bounds, trial_onset_frame, trial_stimulus_orientation, "
                 "trial_stimulus_temporal_frequency, cell_specimen_id, meta (JSON) - see poyocap/data/arrays.py.")


def _own_data(args: argparse.Namespace) -> int:
    from . import stages
    from .filtering import Partition

    result = stages.own_data_stage(args.files, snr_min=args.snr_min)
    cols = ["unit_id", "skewness", "kurtosis", "snr", "event_rate_hz", "label_free", "snr_aware"]
    print(f"{len(result.cells)} cells in {len(result.recordings)} recording(s); per-neuron knee thresholds of these "
          f"cells: " + ", ".join(f"{k} <= {v:.3f}" for k, v in result.thresholds.items()))
    print(result.cells[cols].round(3).to_string(index=False, max_rows=40))
    for call in ("label_free", "snr_aware"):
        print(f"{call}: " + ", ".join(f"{k} {v}" for k, v in result.cells[call].value_counts().items()))
    if args.scale:
        cfg = stages.make_config(args.scale)
        thr = Partition.load(stages.partition_path(cfg)).neuron_thresholds
        calls = stages.realism.label_free_calls(result.cells, thr, args.snr_min)
        print(f"with the {args.scale} observatory's per-neuron thresholds ({thr}): "
              + ", ".join(f"{k} {v}" for k, v in calls["label_free"].value_counts().items()))
    if result.partition is not None:
        print(f"line-level partition: predictable {list(result.partition.predictable_lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
