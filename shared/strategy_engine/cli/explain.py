"""Risk checks in words: what the gate saw against the limit it compared with (`why`, the demo).

Pure formatting of the checks stored in `strategy_logs.signal_payload.risk.checks`
(`{code, observed, limit, passed}`, observed and limit in the units of `core.risk`).
"""

from __future__ import annotations

from typing import Any


def money(x: Any) -> str:
    return f"${float(x):,.2f}" if isinstance(x, int | float) else str(x)


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, int | float) and not isinstance(x, bool) else str(x)


def check_text(
    check: dict[str, Any], symbol: str, qty: float, price: float | None, *, blocking: bool = True
) -> str:
    """One check as a sentence, e.g. 'SPY: 10 x $517.00 = $5,170.00 > max_notional_per_trade $5,000.00'.

    A failed check is labelled BLOCKED when it is the first failure (the one that blocked the
    order), "also fails" for a later one (`blocking=False`)."""
    code, seen, limit, ok = check.get("code"), check.get("observed"), check.get("limit"), check.get("passed")
    if isinstance(seen, str) and seen.startswith("skipped"):
        return f"{code}: skipped (the order only reduces a position)"
    if limit is None and code not in ("stale_data", "cool_down"):
        return f"{code}: no limit set (observed {_num(seen)})"
    text = _sentence(str(code), seen, limit, bool(ok), symbol, qty, price)
    if text is None:
        return f"{code}: observed {_num(seen)}, limit {_num(limit)}"
    return f"{'ok' if ok else 'BLOCKED' if blocking else 'also fails'}  {text}"


def _sentence(
    code: str, seen: Any, limit: Any, ok: bool, symbol: str, qty: float, price: float | None
) -> str | None:
    """The words for one check of `core.risk` (None for a code it does not know)."""
    cmp_ = "<=" if ok else ">"
    match code:
        case "strategy_inactive":
            return "strategy active" if ok else "strategy is disabled: the kill switch is on"
        case "market_closed":
            return f"{seen} is {'inside' if ok else 'outside'} the regular session"
        case "stale_data":
            if seen is None:
                return "no bar at all for this symbol"
            return f"last bar {_num(seen)} s old {cmp_} {_num(limit)} s allowed"
        case "order_working":
            if ok:
                return f"{symbol}: no order of this strategy still working"
            return f"{symbol}: an order ({_num(seen)} shares left) is still working: one at a time"
        case "max_daily_trades":
            return f"this would be trade {_num(seen)} today {cmp_} max_daily_trades {_num(limit)}"
        case "max_notional_per_trade":
            calc = f"{_num(qty)} x {money(price)} = " if price is not None else ""
            return f"{symbol}: {calc}{money(seen)} {cmp_} max_notional_per_trade {money(limit)}"
        case "max_notional_per_day":
            return f"{money(seen)} traded today with this order {cmp_} max_notional_per_day {money(limit)}"
        case "max_position_size":
            return f"{symbol}: {_num(seen)} shares after the order {cmp_} max_position_size {_num(limit)}"
        case "max_open_positions":
            extra = "" if ok else f", a new one would exceed max_open_positions {_num(limit)}"
            return f"{_num(seen)} positions open{extra}"
        case "cool_down":
            if seen is None:
                return "no earlier trade in this symbol"
            return (
                f"{symbol}: last trade {_num(round(float(seen), 1))} min ago"
                f" {'>=' if ok else '<'} cool_down_minutes {_num(limit)}"
            )
        case "buying_power":
            return f"order {money(seen)} {cmp_} buying power {money(limit)}"
    return None


def why_lines(d: dict[str, Any]) -> list[str]:
    """A stored decision (`store.queries.decision`) as lines: the signal, then every risk check."""
    payload = d.get("payload") or {}
    price = payload.get("close")
    head = (
        f"{d['strategy']} {d['symbol']} at {d['minute'].isoformat()}: {d['action']} {_num(d['qty'])}"
        f" ({d['reason']}) -> {d['outcome']}" + (f" by {d['risk_code']}" if d.get("risk_code") else "")
    )
    inputs = ", ".join(
        f"{k} {_num(payload[k])}"
        for k in ("close", "sma", "trend", "flow", "net", "ratio", "bars")
        if k in payload
    )
    lines = [head, f"inputs: {inputs}" if inputs else "inputs: (none recorded)"]
    risk = payload.get("risk")
    if not risk:
        lines.append(
            "no order was proposed, so no risk check ran" if d["action"] == "hold" else "no risk checks"
        )
    else:
        lines.append("risk checks (in order; the first failure blocks):")
        failed = 0
        for c in risk.get("checks", []):
            lines.append("  " + check_text(c, d["symbol"], float(d["qty"]), price, blocking=failed == 0))
            failed += not c.get("passed")
    if payload.get("error"):
        lines.append(f"error: {payload['error']}")
    return lines


def first_failure(payload: dict[str, Any], symbol: str, qty: float) -> str | None:
    """The failing check of a blocked decision, in words; None when every check passed."""
    for c in (payload.get("risk") or {}).get("checks", []):
        if not c.get("passed"):
            return check_text(c, symbol, qty, payload.get("close")).removeprefix("BLOCKED  ")
    return None
