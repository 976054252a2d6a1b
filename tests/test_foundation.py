"""Config tree, paths, reproducibility, byte-stable figures and tables, the notebook runner, the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from poyocap import paths, plotting, repro  # noqa: E402
from poyocap.config import ALL_CRE_LINES, Config  # noqa: E402


@pytest.mark.parametrize("scale", ["smoke", "demo", "paper"])
def test_config_roundtrip_through_json(scale):
    cfg = Config.for_scale(scale)
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.digest() == cfg.digest()


def test_presets_differ_where_intended():
    smoke, demo, paper = (Config.for_scale(s) for s in ("smoke", "demo", "paper"))
    # smoke must still exercise everything: all 13 lines, >= 2 mice per line, 2 seeds
    assert smoke.data.cre_lines == ALL_CRE_LINES and len(ALL_CRE_LINES) == 13
    assert smoke.data.mice_per_line >= 2 and len(smoke.eval.seeds) == 2
    assert demo.eval.seeds == (0, 1, 2)
    assert paper.data.source == "allen"
    assert (paper.encoder.dim, paper.encoder.depth, paper.encoder.latents_per_step) == (1024, 6, 16)
    assert paper.encoder.latent_step_s == 0.125 and paper.encoder.self_heads == 8 and paper.encoder.cross_heads == 2
    assert (paper.data.frame_height, paper.data.frame_width) == (128, 256)
    assert (demo.data.frame_height, demo.data.frame_width) == (32, 64)
    assert smoke.digest() != demo.digest() != paper.digest()


def test_config_is_frozen_and_validated():
    cfg = Config.for_scale("demo")
    with pytest.raises(Exception):
        cfg.scale = "paper"  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown scale"):
        Config.for_scale("huge")
    with pytest.raises(ValueError, match="source"):
        cfg.with_overrides(data={"source": "nowhere"})
    with pytest.raises(ValueError, match="Cre lines"):
        cfg.with_overrides(data={"cre_lines": ("Foo-Cre",)})
    with pytest.raises(TypeError, match="no field"):
        Config.from_dict({**cfg.to_dict(), "unexpected": 1})
    assert cfg.with_overrides(seed=3).seed == 3 and cfg.seed == 0


@pytest.mark.parametrize("section, field, value", [
    ("filtering", "partition", "manual"), ("filtering", "kurtosis_convention", "fisher"),
    ("encoder", "cross_attention", "flash"), ("pretrain", "mask_mode", "block"), ("pretrain", "recon_loss", "l2"),
    ("pretrain", "target", "teacher"),
])
def test_literal_fields_reject_other_values_by_name(section, field, value):
    with pytest.raises(ValueError, match=rf"\.{field} must be one of .*got '{value}'"):
        Config.for_scale("smoke").with_overrides(**{section: {field: value}})


def test_one_optimiser_config_for_pretraining_and_finetuning():
    from poyocap.config import OptimConfig

    cfg = Config.for_scale("smoke")
    assert isinstance(cfg.pretrain.optim, OptimConfig) and isinstance(cfg.finetune.optim, OptimConfig)
    assert (cfg.pretrain.optim.steps, cfg.finetune.optim.steps) == (20, 20)
    assert Config.for_scale("demo").finetune.optim.steps == 300 and Config.for_scale("demo").pretrain.optim.steps == 300
    paper = Config.for_scale("paper").finetune  # the demo's decoder deviations are off in the paper preset
    assert (paper.movie_loss, paper.head_lr_scale, paper.readout_queries, paper.mean_frame_prior) == ("paper", 1.0, 1,
                                                                                                     False)
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.pretrain.optim == cfg.pretrain.optim


def test_task_optim_gives_the_movie_its_own_batch_and_lr():
    demo = Config.for_scale("demo").finetune
    movie, gratings = demo.task_optim("movie", steps=7), demo.task_optim("gratings")
    assert (movie.batch_size, movie.lr, movie.steps) == (demo.movie_batch_size, demo.movie_lr, 7)
    assert (movie.batch_size, movie.lr) != (demo.optim.batch_size, demo.optim.lr)  # the demo deviates for the movie
    assert gratings == demo.optim
    assert demo.task_optim("movie").steps == demo.movie_steps != demo.optim.steps  # its own budget; steps= wins
    for scale in ("smoke", "paper"):  # 0 = the shared optimiser's settings
        fc = Config.for_scale(scale).finetune
        assert fc.task_optim("movie") == fc.optim
    for field in ("movie_batch_size", "movie_steps"):
        with pytest.raises(ValueError, match=field):
            Config().with_overrides(finetune={field: -1})


def test_paths_follow_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("POYOCAP_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("POYOCAP_OUTPUT", str(tmp_path / "o"))
    assert paths.cache_dir() == tmp_path / "c" and paths.cache_dir().is_dir()
    assert paths.artifacts_dir("smoke", "filtering") == tmp_path / "o" / "artifacts" / "smoke" / "filtering"
    assert paths.figures_dir("demo") == tmp_path / "o" / "figures" / "demo"
    assert paths.results_dir("paper") == tmp_path / "o" / "results" / "paper"
    monkeypatch.delenv("POYOCAP_CACHE")
    assert paths.cache_dir() == paths.repo_root() / ".cache"
    assert (paths.repo_root() / "poyocap" / "__init__.py").exists()
    with pytest.raises(ValueError):
        paths.figures_dir("nope")


def test_seed_everything_is_deterministic():
    repro.seed_everything(5)
    a = (np.random.rand(3), torch.randn(3))
    repro.seed_everything(5)
    b = (np.random.rand(3), torch.randn(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])
    repro.seed_everything(6)
    assert not torch.equal(torch.randn(3), b[1])
    with pytest.raises(ValueError):
        repro.seed_everything(-1)


def test_run_metadata_has_no_timestamp(smoke_cfg):
    meta = repro.run_metadata(smoke_cfg, seed=1)
    assert meta["seed"] == 1 and meta["config"]["scale"] == "smoke"
    assert "torch" in meta["packages"] and "time" not in json.dumps(meta).lower()


def _draw(path: Path) -> Path:
    fig, ax = plt.subplots()
    ax.plot(np.arange(10) ** 2, label="x")
    ax.legend()
    plotting.synthetic_label(fig, "synthetic")
    out = plotting.save_figure(fig, path, close=True)
    return out


def test_save_figure_is_byte_stable(tmp_path):
    a, b = _draw(tmp_path / "a"), _draw(tmp_path / "b")
    for ext in (".png", ".pdf"):
        ha = hashlib.sha256(a.with_suffix(ext).read_bytes()).hexdigest()
        hb = hashlib.sha256(b.with_suffix(ext).read_bytes()).hexdigest()
        assert ha == hb, ext
    assert b"CreationDate" not in a.with_suffix(".pdf").read_bytes()


def test_save_table_writes_csv_and_markdown(tmp_path):
    df = pd.DataFrame({"line": ["Sst", "Vip"], "value": [1.23456, 2.0]})
    csv = plotting.save_table(df, tmp_path / "t", ["data source: synthetic (SYNTHETIC DATA)"])
    back = pd.read_csv(csv, comment="#")
    assert list(back["line"]) == ["Sst", "Vip"] and back["value"].iloc[0] == pytest.approx(1.2346)
    md = csv.with_suffix(".md").read_text()
    assert "SYNTHETIC DATA" in md and "| Sst | 1.2346 |" in md


def test_cli_lists_only_existing_stages():
    out = subprocess.run([sys.executable, "-m", "poyocap", "--help"], capture_output=True, text=True, check=True)
    for stage in ("setup", "data", "filter", "pretrain", "finetune"):
        assert stage in out.stdout


def test_notebook_runner_reports_failing_cell(tmp_path):
    import nbformat

    from poyocap.notebook_runner import failing_cell, notebook_sources

    nb = nbformat.v4.new_notebook()
    ok = nbformat.v4.new_code_cell("x = 1")
    bad = nbformat.v4.new_code_cell("raise ValueError('boom')")
    bad.outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
    nb.cells = [ok, bad]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert "ValueError: boom" in failing_cell(path) and "cell 1" in failing_cell(path)
    names = [p.name for p in notebook_sources()]
    assert names == sorted(names) and names[0].startswith("00_")
    with pytest.raises(SystemExit):
        notebook_sources(["99"])
