"""The method registry, the pretraining rules and the main table on tiny hand-made inputs."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from poyocap import paths
from poyocap.config import Config
from poyocap.methods import METHODS, REFERENCE_METHOD, Method, get_method, methods_for
from poyocap.stages import headline, main_table, pretraining_checks, pretraining_verdicts
from poyocap.stages.finetune import FinetuneStage
from poyocap.tasks import TASKS, get_task


# ------------------------------------------------------------------------------------------------ registry
def test_registry_names_slugs_and_tasks_are_consistent():
    names = [m.name for m in METHODS]
    assert len(set(names)) == len(names) and REFERENCE_METHOD in names
    assert len({m.slug for m in METHODS}) == len(METHODS)
    assert all(set(m.tasks) <= set(TASKS) for m in METHODS)
    assert all(" " not in m.slug and "(" not in m.slug for m in METHODS)
    assert get_method("POYO-CAP").init == "pretrained"
    with pytest.raises(KeyError, match="no method"):
        get_method("nope")


def test_methods_for_filters_by_task_and_role_in_registry_order():
    movie = [m.name for m in methods_for("movie", "method")]
    gratings = [m.name for m in methods_for("gratings", "method")]
    assert movie == gratings == ["POYO-CAP", "Scratch (all lines)", "Scratch (downstream)",
                                 "Scratch (downstream, + pretraining's steps)", "In-domain SSL (positive control)"]
    assert [m.name for m in methods_for("movie", "floor")] == ["Mean-frame predictor", "Time-shuffled neurons"]
    assert [m.name for m in methods_for("movie", "reference")] == [
        "Reference: ridge (per session)", "Reference: ridge (pseudo-population)",
        "Reference: random-init encoder + linear head"]
    assert [m.name for m in methods_for("gratings", "reference")] == [
        "Reference: logistic (per session)", "Reference: random-init encoder + linear head"]
    assert Method("x", "-", "-", init="scratch", seeds="first").run_seeds((3, 4, 5)) == (3,)
    assert Method("x", "-", "-", init="scratch").run_seeds((3, 4)) == (3, 4)


def test_every_method_gets_the_same_steps_except_the_labelled_longer_scratch_row():
    from poyocap.stages.finetune import FinetuneSetup

    cfg = Config.for_scale("smoke")
    setup = FinetuneSetup(cfg, get_task("gratings", cfg), None, None, None)  # type: ignore[arg-type]
    steps = {m.name: setup.steps(m) for m in methods_for("gratings", "method")}
    longer = "Scratch (downstream, + pretraining's steps)"
    assert steps.pop(longer) == cfg.finetune.optim.steps + cfg.pretrain.optim.steps
    assert set(steps.values()) == {cfg.finetune.optim.steps}
    assert get_method(longer).seeds == "first"


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task"):
        get_task("audio", Config.for_scale("smoke"))


# ------------------------------------------------------------------------------------------ pretraining rules
def test_pretraining_checks_and_verdicts():
    good = {"probe_grating_pretrained": 0.5, "probe_grating_random": 0.4, "probe_movie_pretrained": 0.6,
            "probe_movie_random": 0.5, "std_ratio": 0.3, "within_std_ratio": 0.8, "eff_rank_ratio": 0.7}
    assert all(pretraining_checks(good).values())  # the all-window std is reported, not a rule (session code)
    collapsed = {**good, "within_std_ratio": 0.3}
    assert list(pretraining_checks(collapsed).values()) == [True, True, False, True]
    low_rank = {**good, "eff_rank_ratio": 0.2}
    assert list(pretraining_checks(low_rank).values()) == [True, True, True, False]
    lines = pretraining_verdicts(pd.DataFrame([{"seed": 0, **good}, {"seed": 1, **collapsed}]))
    assert lines[0].startswith("seed 0: COUNTS") and lines[1].startswith("seed 1: DOES NOT COUNT")


def test_within_session_spread_ignores_session_offsets():
    from poyocap.stages.pretrain import within_session_spread

    g = np.random.default_rng(0)
    session = np.repeat(np.arange(4), 50)
    inputs = g.normal(size=(200, 6))
    offsets = g.normal(size=(4, 6)) * 10
    informative = within_session_spread({"features": inputs + offsets[session], "session": session})
    session_code = within_session_spread({"features": offsets[session] + 1e-3 * inputs, "session": session})
    assert informative[0] == pytest.approx(inputs.std(0).mean(), rel=0.05) and informative[1] > 5
    assert session_code[0] < 0.01 * informative[0]  # a large all-window std, but nothing within a session


# ------------------------------------------------------------------------------------------------- main table
def _stage(task: str, scores: dict[str, list[float]], n_items: int = 4) -> FinetuneStage:
    """Per-seed scores per method; per-item scores are constant = the seed's score."""
    t = get_task(task, Config.for_scale("smoke")) if task == "gratings" else None
    metric, label = ("accuracy", "acc") if task == "gratings" else ("ssim", "ssim")
    rows, items = [], {}
    for name, values in scores.items():
        for seed, v in enumerate(values):
            rows.append({"method": name, "seed": seed, "steps": 1, "n_test": n_items, metric: v})
            items[(name, seed)] = np.full(n_items, v)
    extras = t.table_extras if t is not None else ()
    return FinetuneStage(task, pd.DataFrame(rows), items, {}, {}, None, {}, "loss", n_items, metric, label, extras)


@pytest.fixture
def out_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("POYOCAP_OUTPUT", str(tmp_path))
    return tmp_path


def test_main_table_statistics_rows_and_file(out_tmp):
    cfg = Config.for_scale("smoke").with_overrides(eval={"seeds": (0, 1, 2)})
    poyo, scratch = [0.50, 0.60, 0.55], [0.40, 0.45, 0.47]
    gratings = _stage("gratings", {"POYO-CAP": poyo, "Scratch (all lines)": scratch})
    table = main_table(cfg, None, gratings).set_index("method")
    assert list(table.index) == ["POYO-CAP", "Scratch (all lines)"]  # registry order, rows with results only
    sem = np.std(poyo, ddof=1) / np.sqrt(3)
    assert table.loc["POYO-CAP", "acc_mean"] == pytest.approx(np.mean(poyo))
    assert table.loc["POYO-CAP", "acc_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * sem)
    assert table.loc["Scratch (all lines)", "acc_p_ttest_vs_poyocap"] == pytest.approx(
        stats.ttest_rel(poyo, scratch).pvalue)
    assert table.loc["POYO-CAP", "paper_acc"] == get_method("POYO-CAP").paper["acc"]
    assert np.isnan(table.loc["POYO-CAP"].get("acc_p_ttest_vs_poyocap", np.nan))
    assert table.loc["Scratch (all lines)", "acc_seeds"] == 3
    md = (paths.results_dir("smoke") / "main_results.md").read_text()
    assert "SYNTHETIC DATA" in md and "Scratch (all lines)" in md
    [line] = headline(table.reset_index())
    assert line.startswith("grating accuracy: POYO-CAP - Scratch (all lines) = +0.110")
    assert line.endswith("POYO-CAP beats scratch") == (stats.ttest_rel(poyo, scratch).pvalue < 0.05)


def test_headline_says_which_deep_rows_clear_the_linear_reference(out_tmp):
    cfg = Config.for_scale("smoke").with_overrides(eval={"seeds": (0, 1, 2)})
    ref = "Reference: logistic (per session)"
    gratings = _stage("gratings", {"POYO-CAP": [0.50, 0.60, 0.55], "Scratch (all lines)": [0.40, 0.45, 0.47],
                                   ref: [0.5]})
    lines = headline(main_table(cfg, None, gratings))
    assert lines[1] == f"grating accuracy: {ref} 0.500; deep rows at or above it: POYO-CAP 0.550"
    gratings = _stage("gratings", {"POYO-CAP": [0.2, 0.3, 0.25], "Scratch (all lines)": [0.2, 0.2, 0.2], ref: [0.5]})
    assert headline(main_table(cfg, None, gratings))[1].endswith("deep rows at or above it: none")


def test_paired_comparison_pairs_seeds_and_skips_missing_rows():
    from poyocap.stages.results import POSITIVE_CONTROL, paired_comparison

    control, scratch = POSITIVE_CONTROL
    movie = _stage("movie", {control: [0.32, 0.35, 0.30], scratch: [0.30, 0.31, 0.31]})
    gratings = _stage("gratings", {control: [0.4, 0.5]})  # no scratch row: no line
    (line,) = paired_comparison([movie, gratings], control, scratch)
    p = stats.ttest_rel([0.32, 0.35, 0.30], [0.30, 0.31, 0.31]).pvalue
    assert line == (f"movie ssim: {control} - {scratch} = +0.017 over seeds [0, 1, 2] (2 of 3 higher), "
                    f"paired t p = {p:.3f}")


def test_main_table_skips_unpaired_tests_and_orders_columns(out_tmp):
    cfg = Config.for_scale("smoke")  # seeds (0, 1)
    movie = _stage("movie", {"POYO-CAP": [0.3, 0.4], "Time-shuffled neurons": [0.1]})
    gratings = _stage("gratings", {"POYO-CAP": [0.2, 0.3]})
    table = main_table(cfg, movie, gratings)
    assert list(table["method"]) == ["POYO-CAP", "Time-shuffled neurons"]
    row = table.set_index("method").loc["Time-shuffled neurons"]
    assert np.isnan(row.get("ssim_p_ttest_vs_poyocap", np.nan))  # one seed: no paired t-test
    assert row["ssim_p_bootstrap_vs_poyocap"] == pytest.approx(0.0)  # every item lower than POYO-CAP's mean
    cols = list(table.columns)
    assert cols[:4] == ["method", "pretrain_data", "finetune_data", "ssim_mean"]
    assert cols.index("acc_mean") > cols.index("ssim_seeds")


def test_finetune_run_key_names_the_encoder_it_starts_from(tmp_path, monkeypatch):
    """A re-pretrained encoder (other weights) gets new fine-tuning runs; scratch runs do not depend on it."""

    import torch

    from poyocap.model.encoder import CalciumEncoder
    from poyocap.stages.finetune import FinetuneSetup
    from poyocap.stages.pretrain import PretrainRun, PretrainStage

    monkeypatch.setenv("POYOCAP_OUTPUT", str(tmp_path))
    cfg = Config.for_scale("smoke")
    torch.manual_seed(0)
    enc, in_domain_enc = CalciumEncoder(cfg.encoder, 10), CalciumEncoder(cfg.encoder, 10)

    def setup() -> FinetuneSetup:
        run = PretrainRun(0, tmp_path, enc, pd.DataFrame(), {}, cached=True)
        in_domain = PretrainRun(0, tmp_path / "in_domain", in_domain_enc, pd.DataFrame(), {}, cached=True)
        stage = PretrainStage([run], pd.DataFrame(), pd.DataFrame(), 0, in_domain=[in_domain])
        return FinetuneSetup(cfg, get_task("gratings", cfg), stage, None, None,
                             key={"lines": ["Sst-IRES-Cre"], "task": "gratings"})

    control = get_method("In-domain SSL (positive control)")
    assert setup().pretrained_run(control, 0).encoder is in_domain_enc  # the main table's in-domain row
    assert setup().run_dir(control, 0) != setup().run_dir(get_method("POYO-CAP"), 0)
    with pytest.raises(KeyError, match="seed 1"):
        setup().pretrained_run(control, 1)

    poyo, scratch = get_method("POYO-CAP"), get_method("Scratch (downstream)")
    before = setup().run_dir(poyo, 0), setup().run_dir(scratch, 0)
    assert before[0].name.endswith("-POYO-CAP-seed0") and before[1].name.endswith("-Scratch_downstream-seed0")
    with torch.no_grad():
        enc.latent_emb.add_(1.0)  # "re-pretrained": other weights, same config
    after = setup().run_dir(poyo, 0), setup().run_dir(scratch, 0)
    assert after[0] != before[0] and after[1] == before[1]
    assert setup().run_dir(poyo, 0).parent.name == "finetune_gratings"
