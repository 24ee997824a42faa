"""Vendor spellings read the same in SQL (the tick's and the backfill's statements) and in Python,
whatever blank surrounds them: every Unicode whitespace code point, on either side."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta

import pytest

from strategy_engine.core import data_quality as dq
from strategy_engine.store import Session, market
from strategy_engine.store.market import _sql_map

# Every code point Python calls whitespace, the Unicode separators (Zs, Zl, Zp), and blanks
# neither calls whitespace but a vendor may leave (zero-width space, BOM, Mongolian separator).
ALL = [chr(c) for c in range(1, 0x110000)]
WHITESPACE = sorted(
    {c for c in ALL if c.isspace() or unicodedata.category(c) in ("Zs", "Zl", "Zp")}
    | {"\u200b", "\ufeff", "\u180e", "\u2060"}
)
BASES = ["buy", "SELL", "Above-Ask", "ABOVE ASK", "above_ask", "bid", "Below-Bid", "mid", "C", "put", "ask"]
SIDE_SQL = _sql_map("f.side", dq.SIDES, "'unknown'")
TYPE_SQL = _sql_map("f.side", dq.OPTION_TYPES, "null")
EXPECTED_SIDE = {"Above-Ask": "buy", "ABOVE ASK": "buy", "Below-Bid": "sell", "ask": "buy", "bid": "sell"}


def test_blanks_are_exactly_what_python_strips() -> None:
    assert set(dq.BLANKS) == {c for c in ALL if c.isspace()}


def test_sql_and_python_agree_on_every_blank_on_either_side(session: Session) -> None:
    texts = [t for c in WHITESPACE for b in BASES for t in (c + b + c, b + c, c + b)]
    rows = session.fetchall(
        f"select f.side, {SIDE_SQL}, {TYPE_SQL}"
        " from unnest(%s::text[]) with ordinality as f(side, k) order by k",
        (texts,),
    )
    assert len(rows) == len(texts)
    differ = [(t, s, k) for t, s, k in rows if (s, k) != (dq.side(t), dq.option_type(t))]
    assert not differ, [(ascii(t), s, k) for t, s, k in differ[:5]]
    for c in dq.BLANKS:  # and what Python strips is what the tables read
        for base, want in EXPECTED_SIDE.items():
            assert dq.side(c + base + c) == want


@pytest.mark.parametrize(
    ("raw", "side", "kind"),
    [
        ("Above-Ask", "buy", None),
        ("ABOVE ASK", "buy", None),
        ("\u3000Below-Bid\t", "sell", None),
        ("\u00a0c\n", "unknown", "call"),
        ("as\u212a", "unknown", None),  # a Kelvin sign is not a 'k' (Python's lower() says it is)
        ("above  ask", "unknown", None),
        ("\u200bbuy", "unknown", None),  # a zero-width space is no blank to either side
        ("Xbuy", "unknown", None),  # only blanks are trimmed: a letter at either end stays
        ("CX", "unknown", None),
    ],
)
def test_spellings(session: Session, raw: str, side: str, kind: str | None) -> None:
    assert (dq.side(raw), dq.option_type(raw)) == (side, kind)
    row = session.fetchone(
        f"select {SIDE_SQL}, {TYPE_SQL} from (select %s::text as side) f",
        (raw,),
    )
    assert row == (side, kind)


@pytest.mark.parametrize("mapping", [dq.OPTION_TYPES, dq.SIDES], ids=["option types", "sides"])
def test_every_key_is_already_canonical_so_the_sql_fast_path_matches_the_fold(
    mapping: dict[str, str],
) -> None:
    # `_sql_map` matches a raw value against the keys before folding it: that equals the fold
    # only if folding a key leaves it unchanged.
    assert [k for k in mapping if dq.spelling(k) != k] == []


@pytest.mark.parametrize(
    ("option_type", "side", "direction"),
    [(k, sd, d) for (k, sd), d in dq.DIRECTIONS.items()]
    + [
        ("CALL", " Above-Ask ", 1),
        ("P", "BID", 1),
        ("call", "mid", 1),
        ("Put", "MID", -1),
        ("weekly", "buy", 0),
        ("put", "\u3000sell", 1),
        ("c", "dark", 1),
        ("CX", "BUY", 0),  # no call: only blanks are trimmed, never a letter
        ("Put", "SELLX", -1),  # an unknown side: a put's side is unknown, bearish
    ],
)
def test_the_flow_sums_follow_the_directions_table_for_any_spelling(
    session: Session, option_type: str, side: str, direction: int
) -> None:
    """One $500 event (5 contracts at $1): bullish, bearish or ignored, as DIRECTIONS says of
    its folded spelling (an unknown side reads as `unknown`, an unknown type is ignored)."""
    t = datetime(2025, 6, 13, 15, 0, tzinfo=UTC)
    session.execute(
        "insert into options_flow (ts, underlying, option_type, side, size, trade_price)"
        " values (%s, 'SPY', %s, %s, 5, 1)",
        (t - timedelta(minutes=1), option_type, side),
    )
    expected = {1: (50_000, 0, 0), -1: (0, 50_000, 0), 0: (0, 0, 1)}[direction]
    assert market.flow_sums(session, ["SPY"], t - timedelta(minutes=5), t) == {"SPY": expected}
