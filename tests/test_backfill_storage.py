"""Reports to Supabase Storage through the real `supabase` client, against our loopback Storage
server; the store's plain COPY OUT of a range (`store.backfill.copy_out_range`, the benchmark's
I/O floor); the backfill's bulk read of bars (`bars_arrays`) and its COPY IN (`copy_text`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from strategy_engine.backtest import backfill, synthetic, upload
from strategy_engine.core.errors import DatabaseUnavailable, Unavailable
from strategy_engine.settings import Settings
from strategy_engine.store import Session, connect, market
from strategy_engine.store.backfill import bars_arrays, copy_out_range, copy_text
from tests.conftest import DAY, load_market, seed
from tests.fake_supabase_storage import FakeSupabaseStorage

KEY = "service-role-key-for-tests"
BUCKET = "backfill-reports"
START, END = "2025-06-13T13:30:00Z", "2025-06-13T15:00:00Z"


@pytest.fixture
def fake() -> Iterator[FakeSupabaseStorage]:
    with FakeSupabaseStorage(KEY, {BUCKET}) as server:
        yield server


def settings_for(url: str | None, key: str | None = KEY, bucket: str = BUCKET) -> Settings:
    return Settings(
        _env_file=None, supabase_url=url, supabase_service_role_key=key, supabase_report_bucket=bucket
    )


def _run(session: Session, settings: Settings, **changes: Any) -> dict[str, Any]:
    seed(session, config={"symbols": ["SPY", "QQQ"], "min_flow_premium": 20_000})
    load_market(session, synthetic.MarketSpec(("SPY", "QQQ"), DAY, DAY))
    req = backfill.parse_request({"strategy": "nft", "start": START, "end": END} | changes)
    return backfill.run_backfill(session, req, settings=settings)


def _recorded(session: Session) -> tuple[Any, ...]:
    row = session.fetchone("select report_path, summary, status from public.backfill_runs")
    assert row is not None
    return row


def test_configured_then_report_uploaded_and_its_key_recorded(
    session: Session, fake: FakeSupabaseStorage
) -> None:
    doc = _run(session, settings_for(fake.url))
    run_id = doc["backfill_run_id"]
    html_key = f"backfills/{run_id}/backfill-nft-{run_id}.html"
    assert doc["report_path"] == f"{BUCKET}/{html_key}"
    assert _recorded(session)[0] == doc["report_path"]
    html = fake.state.objects[(BUCKET, html_key)]
    png = fake.state.objects[(BUCKET, html_key.replace(".html", ".png"))]
    assert (
        html.content_type == "text/html; charset=utf-8"
        and html.body == Path(doc["report_local_path"]).read_bytes()
    )
    assert png.content_type == "image/png" and png.body[:4] == b"\x89PNG"
    assert [m for m, _ in fake.state.requests] == ["POST", "POST"]


def test_uploaded_twice_then_replaced_not_refused(fake: FakeSupabaseStorage, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    for text in ("first", "second"):
        page.write_text(text)
        assert upload.upload(settings_for(fake.url), [page], "x") == [f"{BUCKET}/x/r.html"]
    assert fake.state.objects[(BUCKET, "x/r.html")].body == b"second"


@pytest.mark.parametrize(
    ("breakage", "fragment"),
    [("outage", "storage is down"), ("bucket", "Bucket not found"), ("key", "invalid signature")],
)
def test_upload_fails_then_run_and_summary_still_recorded_with_the_local_path(
    session: Session, fake: FakeSupabaseStorage, breakage: str, fragment: str
) -> None:
    if breakage == "outage":
        fake.state.fail_with = 503
    settings = settings_for(
        fake.url,
        key="wrong" if breakage == "key" else KEY,
        bucket="missing" if breakage == "bucket" else BUCKET,
    )
    doc = _run(session, settings)
    path, summary, status = _recorded(session)
    assert fragment in doc["report_upload_error"] and "\n" not in doc["report_upload_error"]
    assert KEY not in doc["report_upload_error"]
    assert path == doc["report_path"] == doc["report_local_path"] and Path(path).is_file()
    assert status == "done" and summary["report_upload_error"] == doc["report_upload_error"]
    assert summary["orders"] == doc["orders"]
    n = session.fetchone(
        "select count(*) from public.strategy_logs where backfill_run_id = %s",
        (uuid.UUID(doc["backfill_run_id"]),),
    )
    assert n == (doc["decisions"] - sum(doc["holds_by_reason"].values()),)  # the journal: no holds


def test_server_unreachable_then_unavailable_in_one_line(tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    page.write_text("x")
    with pytest.raises(Unavailable, match="report upload to bucket 'backfill-reports' failed") as exc:
        upload.upload(settings_for("http://127.0.0.1:9"), [page], "x")
    assert "\n" not in str(exc.value)


def test_not_configured_then_report_stays_local(session: Session, tmp_path: Path) -> None:
    html = tmp_path / "local.html"
    doc = _run(session, settings_for(None, key=None), report_path=str(html))
    assert doc["report_path"] == str(html) and html.is_file() and "report_upload_error" not in doc
    assert _recorded(session)[0] == str(html)
    assert not upload.configured(settings_for("http://127.0.0.1:9", key=None))


def test_report_cannot_be_written_then_noted_and_run_kept(session: Session, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    doc = _run(session, settings_for(None, key=None), report_path=str(tmp_path / "a-file" / "r.html"))
    path, summary, status = _recorded(session)
    assert doc["report_path"] is None and path is None and status == "done"
    assert (
        doc["report_error"].startswith("report not written:")
        and summary["report_error"] == doc["report_error"]
    )


# ---- copy_out_range: what the plain COPY OUT (binary) of a range reads ----------------------------

T0 = datetime(2025, 6, 13, 13, 30, tzinfo=UTC)
MIN = timedelta(minutes=1)
HEADER, TRAILER = 19, 2  # signature (11) + flags (4) + header extension length (4); a -1 field count


def _row(*sizes: int | None) -> int:
    """One tuple of PostgreSQL's binary COPY: a 2-byte field count, then per field a 4-byte
    length and its bytes (none for NULL)."""
    return 2 + sum(4 + (n or 0) for n in sizes)


def _bar(symbol: str) -> int:  # symbol (text), ts (timestamptz: 8), close (float8: 8)
    return _row(len(symbol.encode()), 8, 8)


def _flow(underlying: str, *, priced: bool = True) -> int:  # underlying, ts, cents (int8), dir (int4)
    return _row(len(underlying.encode()), 8, 8 if priced else None, 4)


def _store_range(s: Session) -> None:
    nan = float("nan")
    market.insert_bars(s, [
        ("SPY", T0 - MIN, None, None, None, 100, 1),  # before start
        ("SPY", T0, None, None, None, 100, 1),
        ("SPY", T0 + MIN, 101, 102, 100, 101, 1),
        ("SPY", T0 + 2 * MIN, None, None, None, nan, 1),  # the bad bars: NaN, zero, too high,
        ("SPY", T0 + 3 * MIN, None, None, None, 0, 1),
        ("SPY", T0 + 4 * MIN, None, None, None, 2e9, 1),
        ("SPY", T0 + 5 * MIN, None, None, None, 102, 1),  # at end (exclusive)
        ("BRK.B", T0 + MIN, 450, 451, -1, 450, 1),  # a negative low,
        ("BRK.B", T0 + 2 * MIN, None, None, None, 451, 1),
        ("BRK.B", T0 + 4 * MIN, None, None, None, -3, 1),  # a negative close
        ("IWM", T0 + MIN, None, None, None, 200, 1),  # not asked for
    ])  # fmt: skip
    market.insert_flow(s, [
        (T0 - 20 * MIN, "SPY", "call", "buy", 1, 1, 30_000),  # before flow_start
        (T0 - 15 * MIN, "SPY", "call", "buy", 1, 1, 30_000),  # at flow_start
        (T0 + MIN, "SPY", "C", " Above-Ask ", 10, 2.5, None),  # vendor spellings, size x price
        (T0 + 5 * MIN, "SPY", "call", "buy", 1, 1, 30_000),  # at end (exclusive)
        (T0 + 2 * MIN, "BRK.B", "put", "sell", -5, 1, None),  # ignored: cents NULL
        (T0 + 3 * MIN, "BRK.B", "weird", "buy", 1, 1, 1_000),  # unknown type: dir 0, cents kept
        (T0, "IWM", "call", "buy", 1, 1, 30_000),  # not asked for
    ])  # fmt: skip


def test_copy_out_range_reads_the_good_bars_and_the_flow_of_the_range_in_two_statements(
    session: Session,
) -> None:
    _store_range(session)

    def copied(symbols: list[str], start: datetime, end: datetime, flow_start: datetime) -> int:
        before = session.statements
        got = copy_out_range(session, symbols, start, end, flow_start)
        assert session.statements - before == 2
        return got

    two = ["SPY", "BRK.B"]
    bars = 2 * _bar("SPY") + _bar("BRK.B")
    flow = 2 * _flow("SPY") + _flow("BRK.B", priced=False) + _flow("BRK.B")
    full = copied(two, T0, T0 + 5 * MIN, T0 - 15 * MIN)
    assert full == 2 * (HEADER + TRAILER) + bars + flow == 303
    # which rows: each bound moved by a minute adds or drops exactly the rows at that bound
    assert copied(two, T0 + MIN, T0 + 5 * MIN, T0 - 15 * MIN) == full - _bar("SPY")
    assert copied(two, T0, T0 + 5 * MIN, T0 - 14 * MIN) == full - _flow("SPY")
    assert copied(two, T0, T0 + 6 * MIN, T0 - 15 * MIN) == full + _bar("SPY") + _flow("SPY")
    assert copied(["BRK.B"], T0, T0 + 5 * MIN, T0 - 15 * MIN) == (
        2 * (HEADER + TRAILER) + _bar("BRK.B") + _flow("BRK.B", priced=False) + _flow("BRK.B")
    )
    assert copied(["XLF"], T0, T0 + 5 * MIN, T0 - 15 * MIN) == 2 * (HEADER + TRAILER)


def _unavailable_after_losing_the_connection(
    session: Session, db_url: str, call: Callable[[], object]
) -> None:
    """`call()` on `session` once its backend is ended: the outage, with the driver's words in detail."""
    with connect(db_url) as other:
        other.execute("select pg_terminate_backend(%s)", (session.conn.info.backend_pid,))
    with pytest.raises(DatabaseUnavailable) as exc:
        call()
    assert str(exc.value) == "database unavailable"
    assert exc.value.detail is not None and "connection" in exc.value.detail


def test_copy_out_range_when_the_connection_is_gone_then_unavailable_with_the_drivers_words(
    session: Session, db_url: str
) -> None:
    _unavailable_after_losing_the_connection(
        session, db_url, lambda: copy_out_range(session, ["SPY"], T0, T0 + MIN, T0)
    )


def test_copy_text_when_the_connection_is_gone_then_unavailable_with_the_drivers_words(
    session: Session, db_url: str
) -> None:
    _unavailable_after_losing_the_connection(
        session, db_url, lambda: copy_text(session, "strategy_logs", ("reason",), iter(["x\n"]))
    )


# ---- bars_arrays and copy_text: the backfill's bulk read and bulk write -------------------------


def _us(t: datetime) -> int:
    return round(t.timestamp()) * 1_000_000


def test_bars_arrays_reads_the_warm_up_the_good_and_bad_bars_and_the_splits_before_end(
    session: Session,
) -> None:
    _store_range(session)
    market.insert_bars(session, [("SPY", T0 - 2 * MIN, None, None, None, 99, 1)])  # before the warm-up
    # ex times are midnight New York (04:00Z in June); a split at or after `end` is not read yet
    session.execute(
        "insert into corporate_actions values ('SPY', '2025-06-12', 2), ('SPY', '2025-06-13', 0.5),"
        " ('SPY', '2025-06-16', 3), ('BRK.B', '2025-06-14', 4)"
    )
    got = bars_arrays(session, ["SPY", "BRK.B", "XLF"], T0, T0 + 5 * MIN, 1)
    assert sorted(got) == ["BRK.B", "SPY", "XLF"]
    spy, brk, xlf = got["SPY"], got["BRK.B"], got["XLF"]
    assert spy.ts.tolist() == [_us(T0 - MIN), _us(T0), _us(T0 + MIN)]  # one bar of warm-up
    assert spy.close.tolist() == [100.0, 100.0, 101.0]
    assert spy.bad_ts.tolist() == [_us(T0 + k * MIN) for k in (2, 3, 4)]
    assert spy.splits == (
        (_us(datetime(2025, 6, 12, 4, tzinfo=UTC)), 2.0),
        (_us(datetime(2025, 6, 13, 4, tzinfo=UTC)), 0.5),
    )
    # no good bar before start: all history; a negative low or close is a bad bar
    assert (brk.ts.tolist(), brk.close.tolist()) == ([_us(T0 + 2 * MIN)], [451.0])
    assert (brk.bad_ts.tolist(), brk.splits) == ([_us(T0 + MIN), _us(T0 + 4 * MIN)], ())
    # no bars at all: empty arrays, not an error
    assert (xlf.ts.size, xlf.close.size, xlf.bad_ts.size, xlf.splits) == (0, 0, 0, ())
    for a in (spy, brk, xlf):  # integer microseconds (exact), float closes
        assert (str(a.ts.dtype), str(a.bad_ts.dtype), str(a.close.dtype)) == ("int64", "int64", "float64")


def test_copy_text_copies_the_lines_in_one_statement_and_returns_their_length(
    session: Session,
) -> None:
    session.execute("create temp table copied (name text, n int)")
    # COPY text: backslash-t is a tab, two backslashes one, backslash-n a newline, backslash-N a
    # NULL; str and bytes chunks alike
    chunks: list[str | bytes] = ["a\\tb\t1\nc\\\\d\t2\n", b"e\\nf\t\\N\n"]
    before = session.statements
    sent = copy_text(session, "copied", ("name", "n"), iter(chunks), schema="pg_temp")
    assert session.statements - before == 1
    assert sent == 14 + 8  # len of each chunk
    assert session.fetchall("select name, n from copied order by name") == [
        ("a\tb", 1),
        ("c\\d", 2),
        ("e\nf", None),
    ]
