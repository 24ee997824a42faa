"""The operator's surface: setting up without SQL, questioning the engine, status, one error convention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest

from strategy_engine.core.models import Limits
from strategy_engine.seed import DEFAULT_LIMITS
from strategy_engine.store import connect
from strategy_engine.store import strategies as strat_store
from tests.conftest import REPO, seed
from tests.test_exactly_once import SYMS, T, entry_setup

CLI = [sys.executable, "-m", "strategy_engine.cli"]


def clean_env() -> dict[str, str]:
    """This process's environment as it is now (a mutation run switches MUTANT_UNDER_TEST between
    tests), without the broker keys and database URL the CLI would otherwise read."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ALPACA_", "DATABASE_URL"))}


def cli(*args: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    env = clean_env() | ({"COLUMNS": str(columns)} if columns else {})
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=REPO, timeout=120, check=False, env=env
    )


def one_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "╭" not in proc.stderr
    return lines[0]


def _limits(db_url: str, name: str) -> tuple[bool, Limits]:
    with connect(db_url) as s:
        row = strat_store.load_all(s, name)[0]
    return row.definition.is_active, row.limits


def test_account_create_funds_a_simulated_account_and_lists_it(db_url: str) -> None:
    made = cli("account", "create", " alice ", "--cash", "25000", "--database-url", db_url)
    assert made.returncode == 0, made.stderr
    listed = json.loads(cli("account", "list", "--json", "--database-url", db_url).stdout)
    assert [(a["account"], a["broker"], a["cash"], a["equity"]) for a in listed] == [
        ("alice", "simulated", 25_000.0, 25_000.0)
    ]
    assert "already exists" in one_error(cli("account", "create", "alice", "--database-url", db_url))
    assert "must not be empty" in one_error(cli("account", "create", "  ", "--database-url", db_url))
    assert "--cash must be > 0" in one_error(
        cli("account", "create", "bob", "--cash", "-5", "--database-url", db_url)
    )
    line = one_error(cli("account", "create", "carol", "--broker", "alpaca", "--database-url", db_url))
    assert "ALPACA_API_KEY" in line
    assert len(json.loads(cli("account", "list", "--json", "--database-url", db_url).stdout)) == 1


def test_strategy_set_gives_default_limits_and_never_switches_activity(db_url: str) -> None:
    cfg = '{"symbols": ["SPY"]}'
    assert cli("account", "create", "a", "--database-url", db_url).returncode == 0
    first = cli(
        "strategy", "set", "--name", " s1 ", "--account", "a", "--config", cfg, "--database-url", db_url
    )
    assert first.returncode == 0, first.stderr
    assert "max_notional_per_trade 5000" in first.stdout and "inactive" in first.stdout
    assert _limits(db_url, "s1") == (False, DEFAULT_LIMITS)
    assert cli("strategy", "enable", "s1", "--database-url", db_url).returncode == 0
    again = cli(
        "strategy", "set", "--name", "s1", "--account", "a", "--config", cfg,
        "--limits", '{"max_notional_per_trade": 1000, "cool_down_minutes": null}',
        "--json", "--database-url", db_url,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    expected = Limits(
        max_daily_trades=DEFAULT_LIMITS.max_daily_trades,
        max_position_size=DEFAULT_LIMITS.max_position_size,
        max_notional_per_trade=1000,
        max_notional_per_day=DEFAULT_LIMITS.max_notional_per_day,
        max_open_positions=DEFAULT_LIMITS.max_open_positions,
        cool_down_minutes=None,
    )
    assert _limits(db_url, "s1") == (True, expected)  # still active: set did not switch it off
    assert json.loads(again.stdout)["limits"]["cool_down_minutes"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "", "--account", "a"], "name must not be empty"),
        (["--name", "x", "--account", " "], "account name must not be empty"),
        (["--name", "x", "--account", "a", "--limits", '{"bogus": 1}'], "unknown limit 'bogus'"),
        (
            ["--name", "x", "--account", "a", "--limits", '{"max_daily_trades": -1}'],
            "must be a finite number >= 0",
        ),
        (["--name", "x", "--account", "a", "--limits", "[1]"], "limits must be a JSON object"),
        (["--name", "x", "--account", "new"], "unknown account 'new': create it first with"),
    ],
)
def test_strategy_set_refusals_write_nothing(db_url: str, args: list[str], message: str) -> None:
    assert message in one_error(cli("strategy", "set", *args, "--database-url", db_url))
    with connect(db_url) as s:
        assert (
            s.fetchall("select name from strategy_definitions union all select name from broker_accounts")
            == []
        )


def test_strategy_set_on_an_alpaca_account_without_keys_is_refused(db_url: str) -> None:
    from strategy_engine.store import accounts as acct_store

    with connect(db_url) as s, s.transaction():
        acct_store.ensure_account(s, "alp", "alpaca")
    assert "ALPACA_API_KEY" in one_error(
        cli("strategy", "set", "--name", "x", "--account", "alp", "--database-url", db_url)
    )
    with connect(db_url) as s:
        assert strat_store.load_all(s, "x") == []


def test_strategy_set_never_creates_an_unfunded_account(db_url: str) -> None:
    """Before, `--account <new name>` silently created a $0 simulated account."""
    line = one_error(cli("strategy", "set", "--name", "x", "--account", "ghost", "--database-url", db_url))
    assert line == (
        "error: unknown account 'ghost': create it first with `strategy-engine account create ghost --cash N`"
    )
    with connect(db_url) as s:
        assert s.fetchall("select name from broker_accounts") == []


def test_trades_decisions_and_why(db_url: str) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)}, limits=Limits(max_open_positions=2))
        entry_setup(s, SYMS, T)
    assert cli("run", "--minute", T.isoformat(), "--database-url", db_url).returncode == 0
    trades = json.loads(cli("trades", "--json", "--database-url", db_url).stdout)
    assert sorted((t["symbol"], t["side"], t["price"], t["strategy"]) for t in trades) == [
        ("IWM", "buy", 99.5, "nft"),
        ("QQQ", "buy", 99.5, "nft"),
    ]
    assert json.loads(cli("trades", "--symbol", "spy", "--json", "--database-url", db_url).stdout) == []
    blocked = json.loads(cli("decisions", "--outcome", "blocked", "--json", "--database-url", db_url).stdout)
    assert [(d["symbol"], d["risk_code"]) for d in blocked] == [("SPY", "max_open_positions")]
    later = cli("decisions", "--since", "2025-06-14", "--json", "--database-url", db_url)
    assert json.loads(later.stdout) == []
    why = cli("why", "--strategy", "nft", "--symbol", "SPY", "--database-url", db_url)
    assert why.returncode == 0, why.stderr
    assert "-> blocked by max_open_positions" in why.stdout
    assert "BLOCKED  2 positions open, a new one would exceed max_open_positions 2" in why.stdout
    assert "max_daily_trades: no limit set (observed 3)" in why.stdout  # the two orders before it counted
    assert "no live decision" in one_error(
        cli("why", "--strategy", "nft", "--symbol", "XLF", "--database-url", db_url)
    )
    for name in ("", "nope"):
        assert f"unknown strategy {name!r}" in one_error(
            cli("why", "--strategy", name, "--symbol", "SPY", "--database-url", db_url)
        )
    assert "--symbol must not be empty" in one_error(
        cli("why", "--strategy", "nft", "--symbol", " ", "--database-url", db_url)
    )


def test_why_shows_the_latest_order_decision_and_labels_later_failures(db_url: str) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": [*SYMS, "XLF"]}, limits=Limits(max_open_positions=2))
        entry_setup(s, SYMS, T)
    for k in range(4):
        assert (
            cli(
                "run", "--minute", (T + timedelta(minutes=k)).isoformat(), "--database-url", db_url
            ).returncode
            == 0
        )
    with connect(db_url) as s:  # the latest SPY decision a hold (as most minutes are)
        s.execute(
            "update strategy_logs set action = 'hold', outcome = 'held', risk_code = null, qty = 0,"
            " reason = 'no_signal' where symbol = 'SPY' and decision_minute = %s",
            (T + timedelta(minutes=3),),
        )
    why = cli("why", "--strategy", "nft", "--symbol", "SPY", "--database-url", db_url)
    assert why.returncode == 0, why.stderr
    lines = why.stdout.splitlines()
    assert lines[0] == "the latest decision that proposed an order:"
    assert lines[1].startswith(f"nft SPY at {(T + timedelta(minutes=2)).isoformat()}: buy")
    assert lines[1].endswith("-> blocked by stale_data")
    labels = [ln.split()[0] for ln in lines if ln.startswith(("  BLOCKED", "  also fails"))]
    assert labels == ["BLOCKED", "also"]
    assert "  also fails  2 positions open, a new one would exceed max_open_positions 2" in lines
    held = cli("why", "--strategy", "nft", "--symbol", "XLF", "--database-url", db_url)
    assert held.stdout.splitlines()[0] == "no decision of nft proposed an order for XLF: the latest (a hold):"


def _status(db_url: str, minute: Any) -> dict[str, Any]:
    proc = cli("status", "--json", "--minute", minute.isoformat(), "--database-url", db_url)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_status_on_a_later_day_keeps_the_last_run_and_trade(db_url: str) -> None:
    """Before, last_run_minute and last_trade_at were blank on any day but the one they were on."""
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    assert cli("run", "--minute", T.isoformat(), "--database-url", db_url).returncode == 0
    [same] = _status(db_url, T + timedelta(minutes=1))["strategies"]
    [later] = _status(db_url, T + timedelta(days=3))["strategies"]  # the next Monday
    assert same["last_run_minute"] is not None and same["last_trade_at"] is not None
    assert (later["last_run_minute"], later["last_trade_at"]) == (
        same["last_run_minute"],
        same["last_trade_at"],
    )
    assert later["last_run_minute"].startswith(T.date().isoformat())
    assert (later["trades_today"], later["notional_today"]) == (0, 0.0) and same["trades_today"] > 0


def test_status_marks_positions_to_the_last_close(db_url: str) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)})
        entry_setup(s, SYMS, T)
    assert cli("run", "--minute", T.isoformat(), "--database-url", db_url).returncode == 0
    with connect(db_url) as s:  # one later bar per symbol: the mark
        s.execute(
            "insert into market_data_1m (symbol, ts, close) select sym, %s, 110 from unnest(%s::text[]) sym",
            (T + timedelta(minutes=5), list(SYMS)),
        )
    gain = 3 * 1 * (110 - 99.5)  # three 1-share buys at the last close before T (99.5)
    doc = _status(db_url, T + timedelta(minutes=10))
    [acct] = doc["accounts"]
    assert acct["equity"] == pytest.approx(100_000 + gain) and acct["pnl_today"] == pytest.approx(gain)
    assert acct["cash"] == pytest.approx(100_000 - 3 * 99.5)
    assert {(p["symbol"], p["last_close"], p["unrealized_pnl"]) for p in doc["positions"]} == {
        (sym, 110.0, 10.5) for sym in SYMS
    }
    assert doc["strategies"][0]["limits"]["max_daily_trades"] is None
    next_day = _status(db_url, T + timedelta(days=3))  # Monday: nothing filled that day
    assert next_day["accounts"][0]["pnl_today"] == 0 and next_day["accounts"][0]["equity"] == acct["equity"]
    narrow = cli("status", "--minute", T.isoformat(), "--database-url", db_url, columns=80)
    wide = cli("status", "--minute", T.isoformat(), "--database-url", db_url, columns=200)
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    assert "market_value" in wide.stdout and "market_value" not in narrow.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "--runs", "-1"], "--runs must be between 0 and 1000"),
        (["status", "--runs", "x"], "status: Invalid value for '--runs'"),
        (["status", "--minute", "2010-01-04T15:00Z"], "outside the NYSE calendar"),
        (["strategy", "set"], "strategy set: Missing option '--name'"),
        (["nope"], "No such command 'nope'"),
        (["decisions", "--outcome", "x"], "invalid --outcome 'x'"),
        (["trades", "--since", "yesterday"], "invalid time 'yesterday'"),
        (["trades", "--limit", "0"], "--limit must be between 1 and 10000"),
        (["why", "--strategy", "x"], "why: Missing option '--symbol'"),
        (["backfill", "prune"], "Missing option '--older-than'"),
    ],
)
def test_bad_input_everywhere_is_one_line_exit_2(db_url: str, args: list[str], message: str) -> None:
    assert message in one_error(cli(*args, "--database-url", db_url))


def test_version() -> None:
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("strategy-engine ")


@pytest.mark.parametrize(
    "limits",
    [
        '{"max_daily_trades": 1e400}',
        '{"max_notional_per_trade": Infinity}',
        '{"cool_down_minutes": -Infinity}',
    ],
)
def test_non_finite_limits_are_refused_in_one_line(db_url: str, limits: str) -> None:
    """1e400 overflowed into a stack trace; Infinity was a hidden no-limit (null says it)."""
    cli("account", "create", "a", "--database-url", db_url)
    line = one_error(
        cli("strategy", "set", "--name", "s", "--account", "a", "--limits", limits, "--database-url", db_url)
    )
    assert "must be a finite number >= 0 or null" in line
    with connect(db_url) as s:
        assert strat_store.load_all(s, "s") == []


def test_json_rounds_money_to_cents_and_writes_iso_times(db_url: str) -> None:
    assert cli("account", "create", "frac", "--cash", "1234.5678", "--database-url", db_url).returncode == 0
    [listed] = json.loads(cli("account", "list", "--json", "--database-url", db_url).stdout)
    assert (listed["cash"], listed["equity"]) == (1234.57, 1234.57)
    assert datetime.fromisoformat(listed["updated_at"]).tzinfo is not None
    assert "T" in listed["updated_at"]  # ISO 8601, not str(datetime)
    [acct] = _status(db_url, T)["accounts"]
    assert (acct["cash"], acct["equity"]) == (1234.57, 1234.57)


def test_empty_tables_are_one_line_each_at_80_columns(db_url: str) -> None:
    """A table title wraps at the table's width: over an empty table, a letter a line."""
    proc = cli("status", "--minute", T.isoformat(), "--database-url", db_url, columns=80)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for title in ("positions", "open orders", "strategies", "last runs"):
        assert f"{title}: none" in lines
    assert all(len(line.strip()) > 3 for line in lines if line.strip())


def test_outcome_is_forgiving_an_empty_symbol_is_refused_and_more_rows_are_announced(db_url: str) -> None:
    with connect(db_url) as s:
        seed(s, config={"symbols": list(SYMS)}, limits=Limits(max_open_positions=2))
        entry_setup(s, SYMS, T)
    assert cli("run", "--minute", T.isoformat(), "--database-url", db_url).returncode == 0
    loose = cli("decisions", "--outcome", " Blocked ", "--json", "--database-url", db_url)
    assert [(d["symbol"], d["outcome"]) for d in json.loads(loose.stdout)] == [("SPY", "blocked")]
    for command in ("trades", "decisions"):
        assert "--symbol must not be empty" in one_error(
            cli(command, "--symbol", "", "--database-url", db_url)
        )
    capped = cli("decisions", "--limit", "2", "--database-url", db_url, columns=120)
    assert capped.returncode == 0 and "more decisions exist" in capped.stdout  # 3 were made
    whole = cli("decisions", "--limit", "3", "--database-url", db_url, columns=120)
    assert whole.returncode == 0 and "more decisions exist" not in whole.stdout
    assert len(json.loads(cli("decisions", "--limit", "2", "--json", "--database-url", db_url).stdout)) == 2
