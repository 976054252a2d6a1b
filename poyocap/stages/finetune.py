"""Notebooks 04-05: every registered method (``poyocap.methods``) fine-tuned on one downstream task, every seed.

Protocol shared by all methods: the downstream mice's test windows (subsampled evenly to at most
``finetune.max_eval_windows``), the checkpoint with the best validation score (never the untrained step 0), the
same step budget, the same evaluation code (``poyocap.tasks``). Runs, and the linear references, are cached per
config / task / method / seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..config import Config
from ..data.recording import Recording
from ..data.splits import SPLIT_CODE, make_pools
from ..data.windows import UnitVocab, WindowTable
from ..evaluate import latent_features
from ..finetune import load_pretrained
from ..methods import Method, methods_for
from ..model.baselines import build_encoder
from ..model.encoder import CalciumEncoder
from ..parallel import memo, prefill, run_threads, uses_cpu
from ..references import LinearReference, PseudoPopulationRidge
from ..repro import seed_everything
from ..tasks import DownstreamTask, get_task
from ..train import TrainSettings, eval_batches, read_history, save_atomic, train
from .common import artifact_dir, is_cached, load_cached, load_recordings, subsample
from .filtering import load_partition
from .pretrain import PretrainRun, PretrainStage, pretrain_stage

FINETUNE_ARTIFACT_VERSION = 4  # 4: one thread per CPU run (poyocap.parallel): runs of 3 differ in the last digits
TEST_FILE = "test.pt"  # a run's test metrics, per-item scores and example predictions (cache of its evaluation)
RUN_FILES = ("model.pt", "metrics.csv", TEST_FILE)  # a finished fine-tuning run


@dataclass
class FinetuneStage:
    task: str  # "movie" | "gratings"
    per_seed: pd.DataFrame  # one row per (method, seed): test metrics
    items: dict  # (method, seed) -> per-test-item score array (aligned across methods)
    histories: dict  # (method, seed) -> training history
    examples: dict  # method -> predictions for the first test items (first seed)
    targets: Any  # the matching true frames (movie) / all true labels (gratings)
    confusion: dict  # method -> summed confusion matrix over seeds (gratings)
    loss_spec: str
    n_test: int
    metric: str = "ssim"  # headline metric column of per_seed (the task's)
    label: str = "ssim"  # its short label in the main table
    table_extras: tuple[str, ...] = ()  # extra metrics the main table averages over seeds

    def reference_scores(self) -> dict[str, float]:
        """Validation score of each linear reference (the horizontal lines of the learning curves)."""
        if "val_score" not in self.per_seed:
            return {}
        rows = self.per_seed.dropna(subset=["val_score"])
        return {str(m): float(v) for m, v in zip(rows["method"], rows["val_score"])}


@dataclass
class Pool:
    """Recordings and their windows of one task."""

    recordings: list[Recording]
    table: WindowTable

    def units(self) -> list[str]:
        return [u for r in self.recordings for u in r.unit_ids]


@dataclass
class FinetuneSetup:
    """What every run of one task shares."""

    cfg: Config
    task: DownstreamTask
    pretrain: PretrainStage
    downstream: Pool
    everyone: Pool  # pretrain + downstream mice (scratch on all lines)
    key: dict[str, Any] = field(default_factory=dict)  # what every run's artifact key shares
    _shuffled: Pool | None = None

    def run_dir(self, method: Method, seed: int) -> Path:
        """The run's directory; its key names every input: config sections, task, loss, the method's recipe and
        the weights it starts from (the pretrained encoder's digest)."""
        recipe = {k: v for k, v in dataclasses.asdict(method).items() if k != "paper"}
        init = None
        if method.init == "pretrained":
            init = self.pretrained_run(method, seed).weights_digest
        return artifact_dir(self.cfg, f"finetune_{self.task.name}", ("data", "encoder", "pretrain", "finetune"),
                            FINETUNE_ARTIFACT_VERSION, f"-{method.slug}-seed{seed}", **self.key, method=recipe,
                            init_weights=init)

    def pretrained_run(self, method: Method, seed: int) -> PretrainRun:
        """The pretraining ``method`` starts from: notebook 03's run of ``seed`` on the pool its
        ``options["pretrain_pool"]`` names (default ``predictable``; the ablation rows' stages hold one pool)."""
        return self.pretrain.run_for(method.options.get("pretrain_pool", "predictable"), seed)

    def pools(self, method: Method) -> tuple[Pool, Pool]:
        """(training pool, evaluation pool) of ``method``: the test set is always the downstream mice's."""
        if method.transform == "time_shuffle":
            if self._shuffled is None:
                recs = time_shuffled(self.downstream.recordings, seed=self.cfg.eval.seeds[0])
                self._shuffled = Pool(recs, self.task.windows(recs))  # same stimulus schedule as downstream
            return self._shuffled, self._shuffled
        return (self.everyone if method.pool == "all" else self.downstream), self.downstream

    def steps(self, method: Method) -> int:
        extra = self.cfg.pretrain.optim.steps if method.budget == "finetune+pretrain" else 0
        return self.cfg.finetune.task_optim(self.task.name).steps + extra

    def eval_split(self, pool: Pool, split: str, vocab: UnitVocab, max_windows: int):  # noqa: ANN201
        return subsample(self.task.dataset(pool.recordings, pool.table, split, vocab), max_windows)

    def validation(self, pool: Pool, vocab: UnitVocab):  # noqa: ANN201
        """The validation windows every run selects on and every reference is scored on (the same for all)."""
        return self.eval_split(pool, "val", vocab, self.cfg.finetune.max_eval_windows // 4)


@dataclass
class RunResult:
    metrics: dict[str, Any]
    per_item: np.ndarray
    pred: Tensor
    target: Tensor
    history: pd.DataFrame | None


def time_shuffled(recordings: Sequence[Recording], seed: int) -> list[Recording]:
    """Each ROI's dF/F circularly shifted by its own random offset (>= 30 s): keeps every trace's statistics,
    destroys its alignment with the stimulus (the "time-shuffled neurons" floor)."""
    rng = np.random.default_rng(seed)
    out = []
    for r in recordings:
        shifts = rng.integers(900, max(901, r.n_frames - 900), size=r.n_units)
        dff = np.stack([np.roll(r.dff[:, j], int(s)) for j, s in enumerate(shifts)], axis=1)
        roi_valid = r.value_mask(per_roi=True)
        roi_valid = np.stack([np.roll(roi_valid[:, j], int(s)) for j, s in enumerate(shifts)], axis=1)
        # frame-level validity no longer lines up across ROIs: each ROI keeps its own (shifted) mask
        out.append(dataclasses.replace(r, dff=dff, valid=None, roi_valid=None if roi_valid.all() else roi_valid))
    return out


def _initial_model(setup: FinetuneSetup, method: Method, seed: int, train_pool: Pool) -> tuple[nn.Module, UnitVocab]:
    """The decoder from the pretrained encoder of ``seed`` (downstream units appended) or from random init."""
    sessions = [r.session_id for r in train_pool.recordings]  # the evaluation pool's are among them
    variant = method.options.get("decoder", {})  # ablation rows: decoder options (poyocap.ablations)
    if method.init == "pretrained":
        enc_path = setup.pretrained_run(method, seed).out_dir / "encoder.pt"
        cls, kwargs = setup.task.decoder(n_sessions=len(sessions), variant=variant)
        model, vocab, _ = load_pretrained(enc_path, setup.cfg, train_pool.units(), cls, **kwargs)
    else:
        vocab = UnitVocab(train_pool.units())
        encoder = build_encoder(method.options.get("encoder", "poyo"), setup.cfg.encoder, len(vocab))
        model = setup.task.build(encoder, n_sessions=len(sessions), variant=variant)
    vocab.session_rows(sessions)
    return model, vocab


def run_method(setup: FinetuneSetup, method: Method, seed: int, force: bool = False,
               progress: bool = True) -> RunResult:
    """Fine-tune (or reuse) ``method`` with ``seed``, select on validation, score on the test set."""
    cfg = setup.cfg
    out = setup.run_dir(method, seed)
    cached = load_cached(out, RUN_FILES, force, lambda: load_test_result(out, read_history(out / "metrics.csv")))
    if cached is not None:  # a finished run: its saved test evaluation, no model built (notebook 05 reuses 04's runs)
        return cached
    with run_threads(cfg):  # one thread per CPU run: numbers independent of the worker count (poyocap.parallel)
        return _train_and_test(setup, method, seed, out, force, progress)


def _train_and_test(setup: FinetuneSetup, method: Method, seed: int, out: Path, force: bool,
                    progress: bool) -> RunResult:
    cfg, task, fc = setup.cfg, setup.task, setup.cfg.finetune
    train_pool, eval_pool = setup.pools(method)
    seed_everything(seed)
    model, vocab = _initial_model(setup, method, seed, train_pool)
    steps = setup.steps(method)
    train_ds = task.dataset(train_pool.recordings, train_pool.table, "train", vocab, train=True)
    val_ds = setup.validation(eval_pool, vocab)
    test_ds = setup.eval_split(eval_pool, "test", vocab, fc.max_eval_windows)

    def val_score(m: nn.Module, step: int) -> dict[str, float]:
        return {"val_score": float(np.mean(task.score_items(*task.predict(m, val_ds))))}

    task.initialise(model, train_pool.recordings, train_pool.table, vocab)
    settings = TrainSettings(eval_every=fc.eval_every, checkpoint_every=fc.checkpoint_every,
                             frozen_first_group_steps=fc.frozen_warmup_steps if method.init == "pretrained" else 0)
    trained = train(model, train_ds, fc.task_optim(task.name, steps), settings, seed=seed, out_dir=out,
                    device="cpu" if uses_cpu(cfg) else None, eval_fn=val_score, select_key="val_score",
                    config=cfg.to_dict(), progress=progress, desc=f"{task.name} {method.name} seed {seed}",
                    resume=not force)
    model, history = trained.objective.cpu(), trained.history
    torch.save(model.state_dict(), out / "model.pt")  # read by the analyses (weight change, readout bias)
    pred, target = task.predict(model, test_ds)
    per = task.score_items(pred, target)
    metrics = {"method": method.name, "seed": seed, "steps": steps, "n_test": len(test_ds)}
    metrics.update(task.test_metrics(pred, target, per, test_ds, lambda split: task.predict(
        model, setup.eval_split(eval_pool, split, vocab, fc.max_eval_windows))))
    res = RunResult(metrics, per, task.examples(pred), task.examples(target), history)
    save_test_result(out, res)
    return res


def save_test_result(out: Path, res: RunResult, name: str = TEST_FILE) -> None:
    """Keep ``res``'s test evaluation (its ``pred`` / ``target`` already cut to the task's examples) in ``out``, so
    that a reuse need not predict again."""
    save_atomic({"metrics": res.metrics, "per_item": res.per_item, "pred": res.pred, "target": res.target},
                out / name)


def load_test_result(out: Path, history: pd.DataFrame | None, name: str = TEST_FILE) -> RunResult | None:
    """The test evaluation saved by :func:`save_test_result` (``None`` when ``out`` has none yet)."""
    path = out / name
    if not path.exists():
        return None
    saved = torch.load(path, weights_only=False)
    return RunResult(saved["metrics"], saved["per_item"], saved["pred"], saved["target"], history)


def reference_result(setup: FinetuneSetup, method: Method, seed: int, force: bool = False) -> RunResult:
    """A linear reference (:mod:`poyocap.references`) fitted per session on the downstream training windows,
    regularisation chosen on validation, scored on the same test windows as every deep method. Cached (metrics,
    per-item scores and the example predictions) like a deep run, so notebook 05 reuses notebook 04's."""
    out = reference_dir(setup, method, seed)
    cached = load_cached(out, ("result.pt",), force, lambda: load_test_result(out, None, "result.pt"))
    if cached is not None:
        return cached
    with run_threads(setup.cfg):
        res = _fit_reference(setup, method, seed)
    out.mkdir(parents=True, exist_ok=True)
    res = RunResult(res.metrics, res.per_item, setup.task.examples(res.pred), setup.task.examples(res.target), None)
    save_test_result(out, res, "result.pt")
    return res


def reference_dir(setup: FinetuneSetup, method: Method, seed: int) -> Path:
    return artifact_dir(setup.cfg, f"reference_{setup.task.name}", ("data", "encoder", "finetune"), 2,
                        f"-{method.slug}-seed{seed}", **setup.key, method=method.options)


def _fit_reference(setup: FinetuneSetup, method: Method, seed: int) -> RunResult:
    cfg, task, pool = setup.cfg, setup.task, setup.downstream
    vocab = UnitVocab(pool.units())
    kind, limit = method.options.get("reference"), cfg.finetune.max_eval_windows
    val = setup.validation(pool, vocab)
    if kind == "pseudo_population":
        ref: Any = PseudoPopulationRidge(pool.recordings, pool.table).fit(SPLIT_CODE["train"], SPLIT_CODE["val"])
    else:
        train = task.dataset(pool.recordings, pool.table, "train", vocab)
        features: Any = "raw"
        if kind == "random_encoder":
            seed_everything(seed)
            encoder = CalciumEncoder(cfg.encoder, len(vocab)).eval()
            features = lambda ds: latent_features(encoder, ds)["features"]  # noqa: E731
            train = subsample(train, 2 * limit)  # encoder features are the costly part
        ref = LinearReference(task.name, features).fit(train, val)

    def predict_split(split: str) -> tuple[Tensor, Tensor]:
        ds = setup.eval_split(pool, split, vocab, limit)
        return ref.predict(ds) if len(ds) else (torch.zeros(0), torch.zeros(0))

    test = setup.eval_split(pool, "test", vocab, limit)
    pred, target = ref.predict(test)
    per = task.score_items(pred, target)
    val_score = float(np.mean(task.score_items(*ref.predict(val))))
    metrics = {"method": method.name, "seed": seed, "steps": 0, "n_test": len(test), "val_score": val_score,
               **task.test_metrics(pred, target, per, test, predict_split)}
    return RunResult(metrics, per, pred, target, None)


def floor_result(setup: FinetuneSetup, method: Method) -> RunResult | None:
    """A model-free floor (``init="none"``): the task's constant prediction on the downstream test set."""
    pool, task, limit = setup.downstream, setup.task, setup.cfg.finetune.max_eval_windows
    vocab = UnitVocab(pool.units())
    test = setup.eval_split(pool, "test", vocab, limit)
    target = torch.cat([task.target(b) for b in eval_batches(test, 256)])
    pred = task.constant_prediction(pool.recordings, pool.table, target)
    if pred is None:
        return None
    per = task.score_items(pred, target)
    metrics = {"method": method.name, "seed": -1, "steps": 0, "n_test": len(test),
               **task.constant_metrics(pred, target, per)}
    novel = setup.eval_split(pool, "novel", vocab, limit)
    if len(novel) and f"{task.metric}_novel" in task.table_extras:  # the floor on the novel frames too
        target_n = torch.cat([task.target(b) for b in eval_batches(novel, 256)])
        pred_n = task.constant_prediction(pool.recordings, pool.table, target_n)
        metrics[f"{task.metric}_novel"] = float(task.score_items(pred_n, target_n).mean())
    return RunResult(metrics, per, pred, target, None)


def finetune_setup(cfg: Config, task_name: str, recordings: Sequence[Recording] | None = None,
                   progress: bool = True, pretrain: PretrainStage | None = None, save: bool = True) -> FinetuneSetup:
    """Task, pools, cached pretrained encoders (trained if missing; ``pretrain`` given: those instead) and the
    artifact root of one task. ``save=False``: the pretraining summary table is not rewritten (a worker's set-up)."""
    task = get_task(task_name, cfg)
    if recordings is None:
        recordings = load_recordings(cfg, progress=progress)
    partition = load_partition(cfg)
    pools = make_pools(recordings, partition.predictable_lines)
    down = [r for r in recordings if r.session_id in pools.downstream]
    pre = [r for r in recordings if r.session_id in pools.pretrain]
    if not down:
        raise ValueError("the downstream pool is empty")
    if pretrain is None:
        pretrain = pretrain_stage(cfg, recordings, progress=progress, save=save)  # cached (trained if missing)
    key = {"lines": list(partition.predictable_lines), "task": task.name, "loss": task.loss_spec}
    return FinetuneSetup(cfg, task, pretrain, Pool(down, task.windows(down)),
                         Pool(pre + down, task.windows(pre + down)), key)


def finetune_stage(cfg: Config, task: str, recordings: Sequence[Recording] | None = None, progress: bool = True,
                   force: bool = False, floors: bool = True, references: bool = True) -> FinetuneStage:
    """Every registered method of ``task`` (``methods_for``), every seed, on the downstream pool's test windows.

    Methods (role ``method``) run seed by seed; then the floors (role ``floor``, when ``floors``) and the linear
    references (role ``reference``, when ``references``: the bar the deep rows must clear). Every method gets
    ``finetune.optim.steps``, except rows whose ``Method.budget`` adds the pretraining's steps (one labelled scratch
    row); every run keeps its best-validation state after step 0.
    """
    setup = finetune_setup(cfg, task, recordings, progress)
    seeds = tuple(cfg.eval.seeds)
    plan = [(m, s) for s in seeds for m in methods_for(task, "method") if s in m.run_seeds(seeds)]
    if floors:
        plan += [(m, s) for m in methods_for(task, "floor") for s in (m.run_seeds(seeds) if m.init != "none" else (-1,))]
    if references:
        plan += [(m, s) for m in methods_for(task, "reference") for s in (m.run_seeds(seeds) if m.init != "none"
                                                                           else (-1,))]
    if _prefill_runs(setup, plan, force, progress) > 1:
        force = False  # the workers have just (re)computed every run: read them back
    rows, items, histories, examples, confusion = [], {}, {}, {}, {}
    targets_out: Any = None
    for method, seed in plan:
        if method.role == "reference":
            res = reference_result(setup, method, seed, force)
        elif method.init == "none":
            res = floor_result(setup, method)
        else:
            res = run_method(setup, method, seed, force, progress)
        if res is None:
            continue
        if "confusion" in res.metrics:
            confusion[method.name] = confusion.get(method.name, 0) + res.metrics.pop("confusion")
        items[(method.name, seed)] = res.per_item
        rows.append(res.metrics)
        if res.history is not None:
            histories[(method.name, seed)] = res.history
        if seed in (seeds[0], -1) and method.role in ("method", "reference"):  # first seed's predictions
            examples[method.name] = setup.task.examples(res.pred)
            targets_out = setup.task.examples(res.target)
    per_seed = pd.DataFrame(rows)
    t = setup.task
    return FinetuneStage(task, per_seed, items, histories, examples, targets_out, confusion, t.loss_spec,
                         int(per_seed["n_test"].iloc[0]), t.metric, t.label, t.table_extras)


def _prefill_runs(setup: FinetuneSetup, plan: Sequence[tuple[Method, int]], force: bool, progress: bool) -> int:
    """The plan's deep runs and references that are not cached yet, computed in worker processes (longest first);
    the floors without a model stay in the calling process. Returns the number of workers (1: none used)."""
    todo = []
    for method, seed in plan:
        if method.role == "reference":
            if not is_cached(reference_dir(setup, method, seed), ("result.pt",), force):
                todo.append((REFERENCE_COST.get(method.options.get("reference"), 0), method, seed))
        elif method.init != "none" and not is_cached(setup.run_dir(method, seed), RUN_FILES, force):
            todo.append((setup.steps(method), method, seed))
    todo.sort(key=lambda job: -job[0])
    jobs = [(_finetune_job, (setup.cfg, setup.task.name, method, seed, force)) for _, method, seed in todo]
    return prefill(setup.cfg, jobs, f"{setup.task.name}: runs", progress)


#: rough cost of a reference in fine-tuning steps (demo, CPU), to start the longest jobs first
REFERENCE_COST = {"pseudo_population": 300, "raw": 100, "random_encoder": 80}


def _finetune_job(cfg: Config, task: str, method: Method, seed: int, force: bool) -> None:
    """A worker's job: one run or reference of ``method``, written to its artifact directory."""
    setup = memo(("finetune", cfg.digest(), task), lambda: finetune_setup(cfg, task, progress=False, save=False))
    if method.role == "reference":
        reference_result(setup, method, seed, force)
    else:
        run_method(setup, method, seed, force, progress=False)
