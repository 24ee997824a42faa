"""Reports to Supabase Storage through the real `supabase` client, against our loopback Storage server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strategy_engine.backtest import backfill, synthetic, upload
from strategy_engine.core.errors import Unavailable
from strategy_engine.settings import Settings
from strategy_engine.store import Session
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
