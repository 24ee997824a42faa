"""A tick that ends its own process with `os._exit(137)` (what kill -9 leaves: no cleanup, no
COMMIT) at a chosen point of the order path, for the crash tests.

Usage: python -m tests.kill_points DB MINUTE POINT WHICH [URL KEY SECRET]

- `after-post SYMBOL`: once Alpaca accepted an order for SYMBOL (`*`: any symbol);
- `after-intents SYMBOL`: once intents whose first symbol is SYMBOL are committed (not posted);
- `before-commit STRATEGY`: once STRATEGY's minute is recorded in its savepoint (an account's
  batch), before the batch's COMMIT;
- `after-commit STRATEGY`: once a lone STRATEGY's minute is recorded, its COMMIT sent with its
  writes (one round trip), before anything else.

The Alpaca broker is the one URL, KEY and SECRET name, else the default (the environment's).
Exits 0 when the point was never reached.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from strategy_engine import engine
from strategy_engine.brokers.alpaca import AlpacaPaperBroker
from strategy_engine.core.models import BrokerAccount, Order, OrderIntent
from strategy_engine.invocation import TickPolicy
from strategy_engine.store import connect
from strategy_engine.store.intents import IntentLog

KILLED = 137


def main(db: str, minute: str, point: str, which: str, *alpaca: str) -> None:
    submit, write, record = AlpacaPaperBroker.submit, IntentLog.write, engine._record

    def submit_then_die(self: AlpacaPaperBroker, intent: OrderIntent) -> Order:
        out = submit(self, intent)
        if point == "after-post" and which in ("*", intent.symbol):
            os._exit(KILLED)
        return out

    def write_then_die(self: IntentLog, *args: Any) -> set[str]:
        written = write(self, *args)
        intents = args[4]
        if point == "after-intents" and intents and intents[0].symbol == which:
            os._exit(KILLED)
        return written

    def record_then_die(
        s: Any, run_id: Any, st: Any, *, savepoint: bool = False, commit: bool = False
    ) -> Any:
        out = record(s, run_id, st, savepoint=savepoint, commit=commit)
        if point == "before-commit" and savepoint and st.p.row.definition.name == which:
            os._exit(KILLED)
        if point == "after-commit" and commit and st.p.row.definition.name == which:
            os._exit(KILLED)
        return out

    AlpacaPaperBroker.submit = submit_then_die  # type: ignore[method-assign]
    IntentLog.write = write_then_die  # type: ignore[method-assign,assignment]
    engine._record = record_then_die
    deps = engine.Deps(policy=TickPolicy(max_lag_seconds=0))
    if alpaca:
        url, key, secret = alpaca

        def broker(_account: BrokerAccount) -> AlpacaPaperBroker:
            return AlpacaPaperBroker(
                SecretStr(key), SecretStr(secret), url, timeout_seconds=5, retry_budget_seconds=20
            )

        deps = engine.Deps(alpaca_broker=broker, policy=deps.policy)
    with connect(db) as s:
        engine.tick(s, datetime.fromisoformat(minute), deps=deps)
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:])
