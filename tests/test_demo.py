"""The zero-config demo: embedded Postgres, a synthetic session through the real tick, twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_demo_runs_with_nothing_configured_and_twice_gives_the_same_summary(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env["EMBEDDED_DATA_DIR"] = str(tmp_path / "pgdata")
    env["HOME"] = str(tmp_path)  # nothing of the user's is read
    runs = [
        subprocess.run(
            [sys.executable, "-m", "strategy_engine.cli", "demo", "--json"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
            check=False,
        )
        for _ in range(2)
    ]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(p.stdout) for p in runs)
    assert first == second
    assert first["minutes"] == 390 and first["decisions"] == 390 * 3
    assert first["orders"] > 0, "the synthetic session makes the strategy trade"
    assert first["blocked_by_risk_code"], "and the risk gate block"
    assert sum(first["decisions_by_reason"].values()) == first["decisions"]
    assert first["embedded_data_dir"] is not None
    assert first["report_path"] == str(tmp_path / "reports" / "demo.html") and first["report_error"] is None
    assert "<h2>Trades (" in (tmp_path / "reports" / "demo.html").read_text(encoding="utf-8")
    codes = sorted(first["blocked_by_risk_code"].items(), key=lambda kv: -kv[1])[:3]
    assert [(b["risk_code"], b["decisions"]) for b in first["top_blocks"]] == codes
    cli = f"{sys.executable} -m strategy_engine.cli"  # how this demo was started
    assert f"{cli} status --demo" in first["next_commands"]
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    assert not (REPO / "pgdata").exists()
    # the URL the demo prints works afterwards, though the embedded server stopped with the demo
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "strategy_engine.cli",
            "status",
            "--json",
            "--database-url",
            first["database_url"],
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert [s["name"] for s in json.loads(status.stdout)["strategies"]] == ["demo-naive-flow-trend"]
    # every next command runs as printed, in the folder the demo ran in (the backfill included)
    for command in first["next_commands"]:
        ran = subprocess.run(
            ["/bin/sh", "-c", command],  # as a user pastes it into a shell
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
            check=False,
        )
        assert ran.returncode == 0, (command, ran.stderr)
    # the backfill of the session marks what is held at the end as status does: one P&L
    backfill = next(c for c in first["next_commands"] if " backfill " in c)
    ran = subprocess.run(
        ["/bin/sh", "-c", f"{backfill} --json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["total_pnl"] == first["total_pnl"]
    [account] = [a for a in json.loads(status.stdout)["accounts"] if a["account"] == "demo-sim"]
    assert round(account["equity"] - 100_000, 2) == first["total_pnl"]


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        (".venv/bin/strategy-engine", ".venv/bin/strategy-engine"),  # make demo
        ("strategy-engine", "strategy-engine"),  # found on PATH by the shell
        ("/elsewhere/bin/strategy-engine", "/elsewhere/bin/strategy-engine"),
        ("/x/strategy_engine/cli/__main__.py", f"{sys.executable} -m strategy_engine.cli"),
    ],
)
def test_next_commands_start_the_cli_as_it_was_started(
    argv0: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from strategy_engine.cli import options

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    if argv0.startswith(".venv"):
        (tmp_path / ".venv" / "bin").mkdir(parents=True)
    assert options.invoked_as(argv0) == expected


def test_a_second_demo_on_the_same_server_says_one_is_running(pg_base_url: str, tmp_path: Path) -> None:
    from strategy_engine.store import connect, queries

    with connect(pg_base_url) as holder:
        assert queries.try_session_lock(holder, "strategy_engine_demo")  # a demo in progress
        proc = subprocess.run(
            [sys.executable, "-m", "strategy_engine.cli", "demo", "--database-url", pg_base_url],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        "error: another demo is running on this database server: wait for it to finish"
    ]
