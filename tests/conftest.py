"""Shared fixtures: every test writes to its own scratch cache/output, never to the repo's outputs."""

from __future__ import annotations

import pytest

from poyocap.config import Config
from poyocap.data.synthetic import SyntheticObservatory


@pytest.fixture(autouse=True)
def scratch_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("POYOCAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("POYOCAP_OUTPUT", str(tmp_path / "out"))
    yield tmp_path


@pytest.fixture(scope="session")
def smoke_cfg() -> Config:
    return Config.for_scale("smoke")


@pytest.fixture(scope="session")
def smoke_recordings(smoke_cfg):
    """The smoke observatory, generated once per test session (no cache)."""
    obs = SyntheticObservatory(smoke_cfg.data, seed=0, cache_dir=None)
    return [obs.generate(spec) for spec in obs.sessions]
