"""Execute the notebooks in order with papermill (the engine behind ``./run_all.sh``).

Each ``notebooks/NN_name.py`` (Jupytext percent format, the source of truth) is converted to ipynb in
``notebooks/build/<scale>/``, executed with the ``poyocap`` kernel of ``.venv`` and the injected parameters
(``scale``, ``source``, ``seeds``), and written to ``notebooks/executed/<scale>/NN_name.ipynb``.
The first failing notebook stops the run with its name and the failing cell's error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .config import SCALES, SOURCES, parse_seeds
from .paths import repo_root

KERNEL = "poyocap"


def parse_only(text: str | None) -> list[str] | None:
    """``--only 1,02`` -> ``["01", "02"]``; empty items are ignored, anything but numbers is an error."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or not all(t.isdigit() for t in items):
        raise ValueError(f"--only takes comma-separated notebook numbers such as 01 or 00,02; got {text!r}")
    return [t.zfill(2) for t in items]


def notebook_sources(only: list[str] | None = None) -> list[Path]:
    """``notebooks/NN_*.py`` in order, optionally filtered by their two-digit prefix."""
    sources = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.py"))
    if only:
        wanted = {o.zfill(2) for o in only}
        unknown = wanted - {p.name[:2] for p in sources}
        if unknown:
            raise SystemExit(f"--only: no notebook numbered {sorted(unknown)} in notebooks/")
        sources = [p for p in sources if p.name[:2] in wanted]
    return sources


def failing_cell(nb_path: Path) -> str:
    """The error of the first cell that raised, read from papermill's output notebook."""
    import nbformat

    try:
        nb = nbformat.read(nb_path, as_version=4)
    except Exception:  # noqa: BLE001 - the notebook may not exist if the kernel died at start-up
        return "(no output notebook written)"
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                src = cell.source.strip().splitlines()
                head = src[0] if src else ""
                return f"cell {i} ({head[:70]!r}): {out.get('ename')}: {out.get('evalue')}"
    return "(no cell error recorded)"


def stabilise(nb_path: Path) -> None:
    """Rewrite an executed notebook without what changes on every run of identical code: papermill's timestamps and
    durations, the kernel's execution timestamps, and the injected-parameters cell's random id (every cell gets
    ``cell<index>``). Outputs are kept as they are (progress bars included)."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    volatile = ("start_time", "end_time", "duration")
    for key in volatile:
        nb.metadata.get("papermill", {}).pop(key, None)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell{i:03d}"
        cell.metadata.pop("execution", None)
        for key in volatile:
            cell.metadata.get("papermill", {}).pop(key, None)
    nbformat.write(nb, nb_path)


def run(scale: str, source: str | None, seeds: str | None, only: list[str] | None,
        partition: str | None = None, extended: bool = False) -> int:
    import jupytext
    import papermill

    root = repo_root()
    build = root / "notebooks" / "build" / scale
    out_dir = root / "notebooks" / "executed" / scale
    build.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    params: dict[str, object] = {"scale": scale}
    if source:
        params["source"] = source
    if seeds:
        params["seeds"] = seeds
    if partition:
        params["partition"] = partition
    if extended:  # notebooks 06-07: every seed and the full budget / grids
        params["extended"] = True
    sources = notebook_sources(only)
    if not sources:
        raise SystemExit("no notebooks found in notebooks/")
    total = time.perf_counter()
    for src in sources:
        ipynb = build / (src.stem + ".ipynb")
        jupytext.write(jupytext.read(src), ipynb)  # cell ids: stabilise() numbers them after the run
        out = out_dir / ipynb.name
        # papermill writes as it goes: execute into the build dir and move into place only on success, so a failed
        # run never overwrites the executed notebook that is there (committed smoke notebooks included)
        partial = build / (src.stem + ".executed.ipynb")
        print(f"[run_all] {src.name} (scale={scale}) ...", flush=True)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(ipynb), str(partial), parameters=params, kernel_name=KERNEL, cwd=str(src.parent),
                progress_bar=False, log_output=False,
            )
        except Exception as err:  # noqa: BLE001 - report any failure the same way
            print(f"[run_all] FAILED: {src.name}: {failing_cell(partial)}", file=sys.stderr)
            print(f"[run_all] full output: {partial} ({out.relative_to(root)} left as it was)", file=sys.stderr)
            if not isinstance(err, papermill.PapermillExecutionError):
                print(f"[run_all] {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        stabilise(partial)
        os.replace(partial, out)
        print(f"[run_all] {src.name} done in {time.perf_counter() - t0:.1f} s -> {out.relative_to(root)}",
              flush=True)
    print(f"[run_all] all {len(sources)} notebooks done in {time.perf_counter() - total:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="run_all.sh", description="Execute the poyocap notebooks in order.")
    p.add_argument("--scale", choices=SCALES, default="demo")
    p.add_argument("--source", choices=SOURCES, default=None, help="default: the scale's (synthetic, paper: allen)")
    p.add_argument("--seeds", default=None, help="comma-separated, e.g. 0,1,2 (default: the scale's)")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01 or 00,02")
    p.add_argument("--partition", choices=("computed", "paper"), default=None,
                   help="computed (knee detection, default) or paper (the authors' four predictable lines)")
    p.add_argument("--extended", action="store_true",
                   help="notebooks 06-07: every seed at the full step budget (the default runs a labelled quick version)")
    args = p.parse_args(argv)
    try:
        if args.seeds:
            parse_seeds(args.seeds)
        only = parse_only(args.only)
    except ValueError as err:
        p.error(str(err))
    return run(args.scale, args.source, args.seeds, only, args.partition, args.extended)


if __name__ == "__main__":
    sys.exit(main())
