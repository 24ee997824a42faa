"""`strategy-engine backfill`: refusals are one line and exit 2 with nothing written; --json is one document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from strategy_engine.backtest import synthetic
from strategy_engine.cli import backfill
from strategy_engine.store import Session, connect
from tests.conftest import DAY, load_market, seed

START, END = "2025-06-13T13:30:00Z", "2025-06-13T16:00:00Z"


def app() -> typer.Typer:
    """The command registered on a fresh app, as cli.py registers it on the real one."""
    out = typer.Typer(pretty_exceptions_enable=False, add_completion=False)

    @out.callback()
    def main() -> None:
        """Group mode, like the real CLI."""

    backfill.register(out)
    return out


def invoke(db_url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app(), ["backfill", "--strategy", "nft", *args, "--database-url", db_url])
    return result.exit_code, result.stdout, result.stderr


def _written(db_url: str) -> list[tuple[int, int]]:
    with connect(db_url) as s:
        return s.fetchall(
            "select (select count(*) from public.backfill_runs), (select count(*) from public.strategy_logs)"
        )


@pytest.fixture
def market(db_url: str) -> str:
    with connect(db_url) as s:
        seed(s, config={"symbols": ["SPY", "QQQ"], "min_flow_premium": 20_000})
        load_market(s, synthetic.MarketSpec(("SPY", "QQQ"), DAY, DAY))
    return db_url


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--start", END, "--end", START], "must be after start"),
        (["--start", "13:30", "--end", END], "start: Input should be a valid datetime"),
        (["--start", "2025-06-13T13:30:00", "--end", END], "start: Input should have timezone info"),
        (["--start", "2023-01-01T00:00Z", "--end", END], "exceeds the maximum of 400"),
        (["--start", START, "--end", END, "--sweep", "sma_window"], "expected key=v1,v2"),
        (["--start", START, "--end", END, "--strategy", "nope"], "unknown strategy 'nope'"),
        (["--start", START, "--end", END, "--sweep", "sma_window=0,10"], "sma_window"),
    ],
)
def test_bad_input_then_one_line_exit_2_and_nothing_written(
    market: str, args: list[str], fragment: str
) -> None:
    code, out, err = invoke(market, *args)
    assert code == 2, err
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and fragment in err
    assert _written(market) == [(0, 0)]


def test_json_then_one_summary_document_on_stdout(market: str, tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    code, out, err = invoke(
        market,
        "--start",
        START,
        "--end",
        END,
        "--json",
        "--report",
        str(report),
        "--initial-cash",
        "50000",
        "--slippage-bps",
        "1.5",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert {
        "orders",
        "realized_pnl",
        "unrealized_pnl",
        "total_pnl",
        "max_drawdown",
        "win_rate",
        "exposure",
        "blocked",
        "decisions",
        "profit_factor",
        "sharpe",
        "round_trips",
    } <= set(doc)
    assert doc["parameters"]["initial_cash"] == 50_000 and doc["parameters"]["slippage_bps"] == 1.5
    assert doc["report_path"] == str(report) and report.is_file()
    assert _written(market) == [(1, doc["decisions"])]


def test_human_output_then_table_and_report_path(market: str, tmp_path: Path) -> None:
    code, out, _ = invoke(market, "--start", START, "--end", END, "--report", str(tmp_path / "r.html"))
    assert code == 0
    assert "total_pnl" in out and "backfill_run_id" in out and f"report: {tmp_path / 'r.html'}" in out


def test_sweep_json_then_ranked_grid(market: str) -> None:
    code, out, err = invoke(
        market,
        "--start",
        START,
        "--end",
        END,
        "--json",
        "--sweep",
        "sma_window=10,20",
        "--sweep",
        "min_flow_ratio=0.1,0.2",
    )
    assert code == 0, err
    doc = json.loads(out)
    pnl = [r["total_pnl"] for r in doc["results"]]
    assert len(pnl) == 4 and pnl == sorted(pnl, reverse=True)
    assert {"rank", "sma_window", "min_flow_ratio", "total_pnl", "max_drawdown"} <= set(doc["results"][0])
    with connect(market) as s:
        assert _sweep_rows(s) == [("sweep", 4, 0)]


def _sweep_rows(s: Session) -> list[tuple[str, int, int]]:
    return s.fetchall(
        "select status, count(*)::int, (select count(*)::int from public.strategy_logs)"
        " from public.backfill_runs group by status"
    )
