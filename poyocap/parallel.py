"""Independent runs (pretraining seeds, fine-tuning runs, references, ablation rows) side by side in worker processes.

Every run writes its own artifact directory, atomically, and a stage reads finished runs back from there. So a stage
*fills its cache* in parallel (:func:`prefill`), then walks its plan in its usual order, loading each run: the tables
are the same whatever the number of workers. For the numbers not to depend on it either, every CPU run - in a worker
or in the notebook's own process - computes with one thread (:func:`run_threads`): torch's CPU kernels give slightly
different floats with different thread counts (measured: 1.6e-3 max parameter difference after 5 demo movie steps,
1 vs 2 threads).

Why processes and not threads inside one run: the demo's models are small, so a run gains little from a second
thread (demo, 2 cores, ms per fine-tuning step: movie 133 with 1 thread / 113 with 2; gratings 98 / 65), while two
one-thread runs side by side each keep most of their speed (movie 140-147, gratings 114-118 ms per step): 1.58x the
movie throughput, 1.13x the gratings'. ``benchmarks/parallel_runs.py`` measures a stage both ways.

``$POYOCAP_WORKERS`` sets the number of worker processes (default: the machine's cores, at most the runs to do;
``1``: everything in the calling process). Runs on CUDA (the ``paper`` preset) never use workers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Hashable, Iterator, Sequence, TypeVar

import torch

from .config import Config

WORKERS_ENV = "POYOCAP_WORKERS"
RUN_THREADS = 1  # threads of one CPU run, in a worker or not (numbers independent of the worker count)
T = TypeVar("T")
Job = tuple[Callable[..., Any], tuple[Any, ...]]  # a module-level function (picklable by name) and its arguments

_memo: dict[Hashable, Any] = {}  # per-process state shared by a worker's jobs (a stage's set-up)


def uses_cpu(cfg: Config) -> bool:
    """Whether runs of ``cfg`` train on the CPU (every preset but ``paper``: the same rule as the stages' ``device``)."""
    return cfg.scale != "paper"


def n_workers(cfg: Config, n_jobs: int) -> int:
    """Worker processes for ``n_jobs`` runs of ``cfg``: ``$POYOCAP_WORKERS`` or the CPU count, at most ``n_jobs``;
    1 (no workers) on CUDA."""
    if not uses_cpu(cfg):
        return 1
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        try:
            wanted = int(raw)
        except ValueError:
            raise ValueError(f"${WORKERS_ENV}={raw!r}: expected a whole number of worker processes (1: none)") from None
        if wanted < 1:
            raise ValueError(f"${WORKERS_ENV}={wanted}: must be >= 1 (1 runs everything in this process)")
    else:
        wanted = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(wanted, n_jobs))


@contextlib.contextmanager
def run_threads(cfg: Config) -> Iterator[None]:
    """Compute one run of ``cfg`` with :data:`RUN_THREADS` torch and BLAS threads on CPU (restored afterwards);
    unchanged on CUDA."""
    if not uses_cpu(cfg):
        yield
        return
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency: numpy / scipy BLAS pools

    before = torch.get_num_threads()
    torch.set_num_threads(RUN_THREADS)
    try:
        with threadpool_limits(RUN_THREADS):
            yield
    finally:
        torch.set_num_threads(before)


def memo(key: Hashable, build: Callable[[], T]) -> T:
    """``build()`` once per process for ``key`` (a worker's set-up, shared by the jobs it runs)."""
    if key not in _memo:
        _memo[key] = build()
    return _memo[key]


def _init_worker() -> None:
    torch.set_num_threads(RUN_THREADS)
    # the calling process has already said so, once (poyocap.tasks.MovieTask); not again from every worker
    warnings.filterwarnings("ignore", message=r"perceptual \(LPIPS\) term is OFF")


def prefill(cfg: Config, jobs: Sequence[Job], desc: str, progress: bool = True) -> int:
    """Run ``jobs`` in worker processes (longest first: give them in that order) and wait for all; a job's
    exception is re-raised here. Returns the number of workers used; with 1 nothing runs (the caller's own loop
    computes the runs, in order)."""
    workers = n_workers(cfg, len(jobs))
    if workers <= 1:
        return 1
    from tqdm.auto import tqdm

    # spawn: a fork of a process whose torch / OpenMP threads are running can deadlock
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker) as pool:
        futures = [pool.submit(fn, *args) for fn, args in jobs]
        bar = tqdm(total=len(futures), desc=f"{desc} ({workers} workers)", disable=not progress)
        try:
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        except BrokenProcessPool as err:
            raise RuntimeError(
                f"{desc}: a worker process died before finishing (see its error above). Worker processes re-import "
                f"the calling script: one that runs poyocap stages at module level must guard that code with "
                f"`if __name__ == '__main__':`. ${WORKERS_ENV}=1 runs everything in this process.") from err
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            bar.close()
    return workers
