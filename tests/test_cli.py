"""The command line: outputs, and bad input as one readable line with nothing written."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from strategy_engine.store import connect
from tests.conftest import REPO, seed
from tests.test_exactly_once import SYMS, T, entry_setup

CLI = [sys.executable, "-m", "strategy_engine.cli"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=REPO, timeout=120, check=False)


def _rows(db_url: str) -> tuple[int, ...]:
    with connect(db_url) as s:
        row = s.fetchone(
            "select (select count(*) from engine_runs), (select count(*) from strategy_logs),"
            " (select count(*) from paper_trades), (select count(*) from strategy_state)"
        )
        assert row is not None
        return tuple(int(x) for x in row)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_json_then_status_json(db_url: str) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    run = cli("run", "--minute", "2025-06-13T11:00:30-04:00", "--json", "--database-url", db_url)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["minute"] == "2025-06-13T15:00:00+00:00" and doc["orders"] == 3
    status = cli("status", "--json", "--database-url", db_url)
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["runs"][0]["orders"] == 3
    assert {p["symbol"] for p in st["positions"]} == set(SYMS)
    assert st["strategies"][0]["name"] == "nft" and st["strategies"][0]["kill_switch"] is False
    assert st["accounts"][0]["cash"] < 100_000
    table = cli("status", "--database-url", db_url)
    assert table.returncode == 0 and "positions" in table.stdout


def test_kill_switch_from_the_command_line(db_url: str) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    assert cli("strategy", "disable", "nft", "--database-url", db_url).returncode == 0
    doc = json.loads(cli("run", "--minute", T.isoformat(), "--json", "--database-url", db_url).stdout)
    assert doc["orders"] == 0 and doc["strategies"][0]["blocked"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--minute", "yesterday"], "invalid time 'yesterday'"),
        (["run", "--minute", "2025-06-13T15:00:00"], "has no UTC offset"),
        (["run", "--minute", "2010-01-04T15:00:00Z"], "outside the NYSE calendar"),
        (["run", "--minute", T.isoformat(), "--strategy", "nope"], "unknown strategy 'nope'"),
        (
            ["strategy", "set", "--name", "x", "--account", "a", "--config", '{"sma_window": "20"}'],
            "config.sma_window",
        ),
        (["strategy", "set", "--name", "x", "--account", "a", "--config", '{"smaa": 1}'], "config.smaa"),
        (["strategy", "set", "--name", "x", "--account", "a", "--config", "{nope"], "not valid JSON"),
        (["trade", "--symbol", "SPY", "--side", "hold", "--qty", "1", "--account", "sim"], "invalid side"),
        (["trade", "--symbol", "SPY", "--side", "buy", "--qty", "-1", "--account", "sim"], "invalid qty"),
        (["trade", "--symbol", "spy!", "--side", "buy", "--qty", "1", "--account", "sim"], "invalid symbol"),
        (["trade", "--symbol", "SPY", "--side", "buy", "--qty", "1", "--account", "nope"], "unknown account"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(db_url: str, args: list[str], message: str) -> None:
    with connect(db_url) as s:
        seed(s)
    before = _rows(db_url)
    proc = cli(*args, "--database-url", db_url)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert _rows(db_url) == before


def test_bad_stored_config_fails_that_strategy_alone_exit_1(db_url: str) -> None:
    """Not retryable (exit 1, not 3): the run is recorded failed with the error, no decision."""
    with connect(db_url) as s:
        seed(s)
        s.execute('update strategy_definitions set config = \'{"order_qty": "lots"}\'')
    proc = cli("run", "--minute", T.isoformat(), "--database-url", db_url, "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["status"] == "failed"
    assert [(r["strategy"], r["outcome"], r["retryable"]) for r in doc["strategies"]] == [
        ("nft", "failed", False)
    ]
    assert doc["strategies"][0]["error"] == (
        "InputError: invalid strategy config: config.order_qty: Input should be a valid number"
    )
    with connect(db_url) as s:
        assert s.fetchall("select status from engine_runs") == [("failed",)]
        assert s.fetchall("select count(*) from strategy_logs") == [(0,)]


def test_unreachable_database_is_one_line_exit_3() -> None:
    url = f"postgresql://engine:s3cret-pw@127.0.0.1:{_closed_port()}/postgres"
    proc = cli("run", "--minute", T.isoformat(), "--database-url", url)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: database unavailable")
    assert "s3cret-pw" not in proc.stderr


def test_db_migrate_is_idempotent(empty_db_url: str) -> None:
    first = cli("db", "migrate", "--json", "--database-url", empty_db_url)
    second = cli("db", "migrate", "--json", "--database-url", empty_db_url)
    assert first.returncode == 0 and len(json.loads(first.stdout)["applied"]) >= 5
    assert json.loads(second.stdout) == {"applied": []}


def test_every_risk_code_has_words_passed_and_failed() -> None:
    from strategy_engine.cli.explain import _sentence
    from strategy_engine.core.risk import RiskCode

    for code in RiskCode:
        for ok in (True, False):
            assert _sentence(code.value, 3, 5, ok, "SPY", 10, 100.0), (code, ok)


def test_a_database_url_option_libpq_refuses_is_exit_2_in_one_line(db_url: str) -> None:
    proc = cli("status", "--database-url", db_url + ("&" if "?" in db_url else "?") + "sslmode=bogus")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: the database URL is not a valid postgresql:// URL: sslmode has an invalid value"]
