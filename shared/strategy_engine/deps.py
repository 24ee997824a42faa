"""What the engine needs from outside (`Deps`), so tests, the backfill and manual trades can swap
any of it: the brokers, the tick's policy, the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from strategy_engine import account_view, execution
from strategy_engine.brokers.base import Broker
from strategy_engine.brokers.simulated import SimulatedBroker
from strategy_engine.core import calendar
from strategy_engine.core.models import Account, BrokerAccount, Position
from strategy_engine.invocation import TickPolicy, wall_clock
from strategy_engine.settings import get_settings
from strategy_engine.store import Session
from strategy_engine.store import accounts as acct_store


def _default_alpaca(account: BrokerAccount) -> Broker:
    from strategy_engine.brokers.alpaca import AlpacaPaperBroker

    return AlpacaPaperBroker.from_settings(get_settings(), account.credentials_ref)


@dataclass
class Deps:
    """What the engine needs from outside; every field has the deployed default."""

    alpaca_broker: Callable[[BrokerAccount], Broker] = _default_alpaca
    slippage_bps: float = 0.0
    simulated_broker: Callable[[Account, list[Position], datetime, float], Broker] = field(
        default=lambda acct, pos, minute, slip: SimulatedBroker(acct.cash, pos, slip, now=minute)
    )
    run_timeout_seconds: float = field(default_factory=lambda: get_settings().engine_run_timeout_seconds)
    policy: TickPolicy = field(default_factory=TickPolicy.from_settings)
    clock: Callable[[], datetime] = wall_clock
    sleep: Callable[[float], None] = time.sleep

    def open_account(
        self,
        s: Session,
        run: execution.Invocation,
        account: BrokerAccount,
        minute: datetime,
        locked: acct_store.Locked | None = None,
    ) -> account_view.AccountView:
        """`account_view.open_account`; the account's row is locked here unless the caller did (`locked`)."""

        def simulated(acct: Account, positions: list[Position]) -> Broker:
            return self.simulated_broker(acct, positions, minute, self.slippage_bps)

        as_of = calendar.trading_date(minute)
        locked = locked or acct_store.lock_account_later(s, account.id, as_of)()
        view, _ = account_view.open_account(
            s, account, locked, self.alpaca_broker, simulated, run.carried, minute, as_of,
            self.policy.in_flight_seconds, run.ahead,
        )  # fmt: skip
        return view
