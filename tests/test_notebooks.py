"""What CI regresses is what users run: the executed smoke notebooks hold the current sources' code, and a failed
run never overwrites an executed notebook; the runner's and the CLI's input errors are one clear line."""

from __future__ import annotations

import subprocess
import sys

import jupytext
import nbformat
import pytest

from poyocap import notebook_runner
from poyocap.paths import repo_root


def _code(cells) -> list[str]:  # noqa: ANN001
    return [c.source.strip() for c in cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get(
        "tags", [])]


@pytest.mark.parametrize("source", notebook_runner.notebook_sources(), ids=lambda p: p.stem)
def test_executed_smoke_notebook_runs_the_current_source(source):
    executed = repo_root() / "notebooks" / "executed" / "smoke" / f"{source.stem}.ipynb"
    assert executed.exists(), f"{executed} missing: run ./run_all.sh --scale smoke"
    assert _code(nbformat.read(executed, as_version=4).cells) == _code(jupytext.read(source).cells), (
        f"{executed.name} was executed from an older {source.name}: run ./run_all.sh --scale smoke")


def test_failed_run_leaves_the_executed_notebook_alone(tmp_path, monkeypatch, capsys):
    (tmp_path / "notebooks").mkdir()
    header = (repo_root() / "notebooks" / "00_setup.py").read_text().split("# %%")[0]  # jupytext + kernelspec
    (tmp_path / "notebooks" / "00_bad.py").write_text(
        header + "# %% tags=[\"parameters\"]\nscale = 'demo'\n\n# %%\nraise ValueError('boom')\n")
    executed = tmp_path / "notebooks" / "executed" / "smoke" / "00_bad.ipynb"
    executed.parent.mkdir(parents=True)
    executed.write_text("ORIGINAL")
    monkeypatch.setattr(notebook_runner, "repo_root", lambda: tmp_path)
    assert notebook_runner.run("smoke", None, None, None) == 1
    assert executed.read_text() == "ORIGINAL"
    assert "ValueError: boom" in capsys.readouterr().err


def test_executed_notebooks_are_byte_stable(tmp_path, monkeypatch):
    """Two runs of the same notebook write the same bytes (no timestamps, durations or random cell ids)."""
    (tmp_path / "notebooks").mkdir()
    header = (repo_root() / "notebooks" / "00_setup.py").read_text().split("# %%")[0]
    (tmp_path / "notebooks" / "00_ok.py").write_text(
        header + "# %% tags=[\"parameters\"]\nscale = 'demo'\n\n# %%\nprint(scale * 2)\n")
    monkeypatch.setattr(notebook_runner, "repo_root", lambda: tmp_path)
    executed = tmp_path / "notebooks" / "executed" / "smoke" / "00_ok.ipynb"
    runs = []
    for _ in range(2):
        assert notebook_runner.run("smoke", None, None, None) == 0
        runs.append(executed.read_bytes())
    assert runs[0] == runs[1] and b"smokesmoke" in runs[0] and b"end_time" not in runs[0]


def test_only_parsing():
    assert notebook_runner.parse_only("1,02") == ["01", "02"]
    assert notebook_runner.parse_only("1,") == ["01"]  # a trailing comma is not notebook 00
    for bad in ("", ",", "x", "1,a"):
        with pytest.raises(ValueError, match="--only"):
            notebook_runner.parse_only(bad)


@pytest.mark.parametrize("args, message", [
    (["data", "--seeds", "a,b"], "comma-separated integers"), (["data", "--seeds", "0,0"], "distinct"),
    (["data", "--seeds=-1"], ">= 0"),
])
def test_cli_rejects_bad_seeds_without_traceback(args, message):
    out = subprocess.run([sys.executable, "-m", "poyocap", *args], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_cli_reports_unwritable_output_in_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    env = {"POYOCAP_OUTPUT": str(blocker / "out"), "POYOCAP_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin"}
    out = subprocess.run([sys.executable, "-m", "poyocap", "filter", "--scale", "smoke"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "cannot write outputs under" in out.stderr and "POYOCAP_OUTPUT" in out.stderr


def test_stage_config_rejects_repeated_or_negative_seeds():
    from poyocap.stages import make_config

    with pytest.raises(ValueError, match="distinct"):
        make_config("smoke", seeds="0,0")
    with pytest.raises(ValueError, match=">= 0"):
        make_config("smoke", seeds=[-1])
    assert make_config("smoke", seeds="2, 0").eval.seeds == (2, 0)
