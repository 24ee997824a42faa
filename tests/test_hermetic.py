"""The suite does not depend on the machine it runs on: a user's `.env`, or another test run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from strategy_engine.settings import ENV_FILE_SETTING, Settings, alpaca_keys, get_settings
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


def test_a_dotenv_beside_the_cli_and_named_keys_are_not_read_in_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BROKE (helper atkG): the CLI the tests start ran in the repository and read a
    user's `.env` there; keys by reference (`alpaca_keys`) read `.env` directly. Both now take the
    one `env_file()`, which the test session sets to none."""
    (tmp_path / ".env").write_text("ALPACA_NOPE_API_KEY=from-dotenv\nALPACA_NOPE_SECRET_KEY=s3cr3t-dotenv\n")
    monkeypatch.chdir(tmp_path)
    for name in ("ALPACA_NOPE_API_KEY", "ALPACA_NOPE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert [k.get_secret_value() for k in alpaca_keys(get_settings(), "NOPE")] == ["", ""]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPACA_")}
    script = (
        "from strategy_engine.settings import alpaca_keys, get_settings\n"
        "print([k.get_secret_value() for k in alpaca_keys(get_settings(), 'NOPE')])"
    )
    run = [sys.executable, "-c", script]
    quiet = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert quiet.stdout == "['', '']\n"  # the session's STRATEGY_ENGINE_ENV_FILE="" is inherited
    env.pop(ENV_FILE_SETTING)
    read = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert read.stdout == "['from-dotenv', 's3cr3t-dotenv']\n"  # outside the tests: `.env` is read


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
