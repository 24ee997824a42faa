"""`strategy-engine backfill`: refusals are one line and exit 2 with nothing written; --json is one document."""

from __future__ import annotations

import json
import re
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
        (["--start", START, "--end", END, "--report", "x.html", "--no-report"], "contradict"),
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
    assert _written(market) == [(1, doc["decisions"] - sum(doc["holds_by_reason"].values()))]


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


def test_unwritable_report_is_printed_and_exits_non_zero(market: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = invoke(market, "--start", START, "--end", END, "--report", str(blocker / "r.html"))
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: report not written")
    assert [line for line in err.splitlines() if line.startswith("error")] == [err.strip().splitlines()[-1]]
    assert "backfill_run_id" in out  # the summary is still printed: the run is recorded
    assert _written(market)[0][0] == 1


def test_runs_then_prune_removes_runs_with_their_decisions(market: str) -> None:
    assert invoke(market, "--start", START, "--end", END, "--no-report")[0] == 0
    assert invoke(market, "--start", START, "--end", END, "--no-report", "--all-decisions")[0] == 0
    listed = CliRunner().invoke(app(), ["backfill", "runs", "--json", "--database-url", market])
    runs = json.loads(listed.stdout)
    with connect(market) as s:
        counted = s.fetchall("select backfill_run_id::text, count(*)::int from strategy_logs group by 1")
        per_run = {r["id"]: dict(counted).get(r["id"], 0) for r in runs}
        s.execute(
            "update backfill_runs set created_at = now() - interval '40 days' where id = %s", (runs[1]["id"],)
        )
    assert {r["id"]: r["journal_rows"] for r in runs} == per_run
    assert (
        runs[0]["journal_rows"] == 2 * 150
    )  # --all-decisions: 2 symbols x 150 minutes; the default keeps fewer
    assert runs[1]["journal_rows"] < runs[0]["journal_rows"]
    pruned = CliRunner().invoke(
        app(), ["backfill", "prune", "--older-than", "30d", "--json", "--database-url", market]
    )
    assert json.loads(pruned.stdout) | {"before": None} == {
        "before": None,
        "runs": 1,
        "decisions": per_run[runs[1]["id"]],
        "dry_run": False,
    }
    assert _written(market)[0] == (1, 2 * 150)
    bad = CliRunner().invoke(app(), ["backfill", "prune", "--older-than", "soon", "--database-url", market])
    assert bad.exit_code == 2 and "invalid time 'soon'" in bad.stderr and "30d" in bad.stderr


def test_prune_dry_run_deletes_nothing_and_a_future_cutoff_is_refused(market: str) -> None:
    assert invoke(market, "--start", START, "--end", END, "--no-report")[0] == 0
    before = _written(market)
    dry = CliRunner().invoke(
        app(), ["backfill", "prune", "--older-than", "2999-01-01", "--dry-run", "--database-url", market]
    )
    assert dry.exit_code == 2 and "is in the future" in dry.stderr

    def at_cutoff(created: str, *flags: str) -> dict[str, object]:
        with connect(market) as s:
            s.execute("update backfill_runs set created_at = %s", (created,))
        out = CliRunner().invoke(
            app(),
            [
                "backfill",
                "prune",
                "--older-than",
                "2025-01-02T03:04:00Z",
                *flags,
                "--json",
                "--database-url",
                market,
            ],
        )
        assert out.exit_code == 0, out.stderr
        return dict(json.loads(out.stdout))

    # created exactly at the cutoff is not "before" it: kept, by the dry run and the real one
    for flags in (("--dry-run",), ()):
        assert at_cutoff("2025-01-02T03:04:00Z", *flags) == {
            "before": "2025-01-02T03:04:00+00:00", "runs": 0, "decisions": 0, "dry_run": bool(flags),
        }  # fmt: skip
        assert _written(market) == before
    # a microsecond earlier it is counted (and the dry run still deletes nothing)
    assert at_cutoff("2025-01-02T03:03:59.999999Z", "--dry-run") == {
        "before": "2025-01-02T03:04:00+00:00", "runs": 1, "decisions": before[0][1], "dry_run": True,
    }  # fmt: skip
    assert _written(market) == before
    with connect(market) as s:
        s.execute("update backfill_runs set created_at = now() - interval '40 days'")
    dry = CliRunner().invoke(
        app(), ["backfill", "prune", "--older-than", "30d", "--dry-run", "--json", "--database-url", market]
    )
    assert dry.exit_code == 0, dry.stderr
    assert json.loads(dry.stdout) | {"before": None} == {
        "before": None, "runs": 1, "decisions": before[0][1], "dry_run": True,
    }  # fmt: skip
    assert _written(market) == before
    text = CliRunner().invoke(
        app(), ["backfill", "prune", "--older-than", "30d", "--dry-run", "--database-url", market]
    )
    assert text.stdout.startswith(f"would delete 1 run(s) and {before[0][1]} decision(s)")


def test_sweep_and_runs_fit_80_columns(market: str, tmp_path: Path) -> None:
    """The sweep grid was forced to 120 columns; runs showed neither a usable id nor the range."""
    env = {"COLUMNS": "80"}
    result = CliRunner().invoke(
        app(),
        ["backfill", "--strategy", "nft", "--start", START, "--end", END, "--sweep", "sma_window=10,10,20",
         "--sweep", "min_flow_ratio=0.1,0.3", "--report", str(tmp_path / "s.html"), "--database-url", market],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    # every line but the report's path, printed whole to be copied (a test worker's is longer)
    assert max(len(line) for line in lines if not line.startswith("report: ")) <= 80
    assert lines[0].startswith("sweep nft ")  # the title on its own line, not wrapped over the table
    assert f"report: {(tmp_path / 's.html').resolve()}" in lines
    assert any(line.startswith("sharpe: not meaningful") for line in lines)
    with connect(market) as s:
        assert _sweep_rows(s) == [("sweep", 4, 0)]  # 10 given twice runs once: 2 x 2 points
    runs = CliRunner().invoke(app(), ["backfill", "runs", "--database-url", market], env=env)
    lines = runs.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = lines[2] if lines[1].startswith("┏") else lines[1]
    assert header.startswith("┃run ") and "range_start" in header
    with connect(market) as s:
        ids = [str(r[0])[:8] for r in s.fetchall("select id from backfill_runs")]
    assert all(any(i in line for line in lines) for i in ids)


def test_sweep_writes_a_ranked_report_with_a_heat_map(market: str, tmp_path: Path) -> None:
    html = tmp_path / "sweep.html"
    code, out, err = invoke(
        market, "--start", START, "--end", END, "--sweep", "sma_window=10,20", "--sweep", "min_flow_ratio=0.1,0.3",
        "--report", str(html), "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    page = html.read_text(encoding="utf-8")
    assert doc["report_path"] == str(html) and html.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "Heat map: sma_window x min_flow_ratio" in page
    ranked = [r["total_pnl"] for r in doc["results"]]
    cells = re.findall(r"<tr><td>(\d+)</td><td>[^<]*</td><td>[^<]*</td><td>([-\d.]+)</td>", page)
    assert [int(k) for k, _ in cells] == [1, 2, 3, 4] and [float(v) for _, v in cells] == ranked
    assert ranked == sorted(ranked, reverse=True)
