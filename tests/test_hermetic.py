"""The suite does not depend on the machine it runs on: a user's `.env`, or another test run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from strategy_engine.settings import Settings, get_settings
from tests.conftest import REPO


def test_a_garbage_dotenv_in_the_working_directory_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "ALPACA_BASE_URL=https://api.alpaca.markets\nALPACA_API_KEY=from-dotenv\nDATABASE_URL=garbage\n"
        "ALPACA_TIMEOUT_SECONDS=not-a-number\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALPACA_API_KEY", raising=False)
    settings = Settings()
    assert settings.alpaca_api_key is None
    assert get_settings().alpaca_base_url == Settings(_env_file=None).alpaca_base_url


def test_the_environment_still_reaches_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_API_KEY", "from-env")
    key = Settings().alpaca_api_key
    assert key is not None
    assert key.get_secret_value() == "from-env"


SMALL = """
from strategy_engine.store import connect

def test_own_server(session):
    assert session.fetchone("select 1") == (1,)
"""


@pytest.mark.slow
def test_a_second_test_run_at_the_same_time_has_its_own_server(tmp_path: Path, pg_base_url: str) -> None:
    """A second pytest, on a shared basetemp root, runs while this session's server is up."""
    (tmp_path / "test_small.py").write_text(SMALL)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--rootdir", str(REPO),
         "-c", str(REPO / "pyproject.toml"), "--confcutdir", str(REPO),
         "--basetemp", str(tmp_path / "other"), "-p", "tests.conftest", str(tmp_path / "test_small.py")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    from strategy_engine.store import connect

    with connect(pg_base_url) as s:  # ours is still up and answering
        assert s.fetchone("select 1") == (1,)
