"""The run's bookkeeping (`engine_runs`, the day rows) commits without waiting for the disk; every
strategy-minute still commits synchronously (`engine_runs.relax_commit`, issue 17)."""

from __future__ import annotations

from strategy_engine import engine
from strategy_engine.core.models import StrategyOutcome
from strategy_engine.invocation import TickPolicy
from strategy_engine.store import Session, engine_runs
from tests.conftest import seed
from tests.test_exactly_once import T, entry_setup

WATCHED = ("engine_runs", "strategy_state", "strategy_logs", "paper_trades")


def _watch_commit_modes(s: Session, tables: tuple[str, ...] = WATCHED) -> None:
    """Every row written to one of `tables` notes, in `commit_modes`, the `synchronous_commit` its
    transaction runs with."""
    s.execute("create table commit_modes (tbl text, op text, mode text)")
    s.execute(
        """
        create function note_commit_mode() returns trigger language plpgsql as $$
        begin
          insert into commit_modes values (tg_table_name, tg_op, current_setting('synchronous_commit'));
          return null;
        end $$
        """
    )
    for table in tables:
        s.execute(
            f"create trigger note_mode after insert or update on public.{table}"
            " for each row execute function note_commit_mode()"
        )


def test_the_runs_bookkeeping_is_relaxed_and_the_strategy_minute_is_not(session: Session) -> None:
    seed(session, config={"symbols": ["SPY"], "min_flow_premium": 20_000})
    entry_setup(session, ("SPY",), T)
    _watch_commit_modes(session)
    result = engine.tick(session, T, deps=engine.Deps(policy=TickPolicy(max_lag_seconds=0)))
    assert [r.outcome for r in result.strategies] == [StrategyOutcome.PROCESSED]
    assert result.counts()["orders"] == 1  # the minute placed an order: paper_trades written too
    modes = session.fetchall("select distinct tbl, op, mode from commit_modes order by 1, 2")
    assert modes == [
        ("engine_runs", "INSERT", "off"),  # the run started, with the day rows: one relaxed pipeline
        ("engine_runs", "UPDATE", "off"),  # the run's close
        ("paper_trades", "INSERT", "on"),  # the strategy-minute's own transaction
        ("strategy_logs", "INSERT", "on"),
        ("strategy_state", "INSERT", "off"),  # the day row
        ("strategy_state", "UPDATE", "on"),  # the minute's day state, with its decisions
    ]
    # ends with its transaction: the session's own setting is untouched
    assert session.fetchone("show synchronous_commit") == ("on",)


def test_relax_commit_relaxes_its_own_transaction_and_never_a_callers(session: Session) -> None:
    with session.pipeline():
        engine_runs.relax_commit(session)
        inside = session.execute("select current_setting('synchronous_commit')")
    assert inside.fetchone() == ("off",)
    with session.transaction():  # a caller's transaction: its COMMIT stays synchronous
        engine_runs.relax_commit(session)
        assert session.fetchone("select current_setting('synchronous_commit')") == ("on",)
    assert session.fetchone("show synchronous_commit") == ("on",)
