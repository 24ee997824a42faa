"""A database URL's password never reaches a user or a log, however malformed the URL.

libpq echoes pieces of a URL it cannot parse (`failed to resolve host 'SecretPw@127.0.0.1'`,
`unexpected spaces found in "Zq9 SecretPw"`, `forbidden value %00 ... "Zq9SecretPw%00x"`): the
engine never shows libpq's text for a parse or connection error, and scrubs every fragment of the
password from what it logs.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from strategy_engine import logs
from strategy_engine.core.errors import DatabaseUnavailable, InputError
from strategy_engine.http import serve
from strategy_engine.http.api import Services
from strategy_engine.settings import get_settings
from strategy_engine.store import connect
from strategy_engine.store.session import url_secrets
from tests.conftest import REPO
from tests.http_support import AUTH, configure, ff_app

START, END = "2025-06-13T09:30:00-04:00", "2025-06-13T12:00:00-04:00"
CLI = [sys.executable, "-m", "strategy_engine.cli"]
# (URL, the pieces of its password that must appear nowhere). "Zq9" alone is too short to be a
# secret worth masking (logs.MIN_REDACTED), so the tests look for the longer pieces.
URLS = [
    ("postgresql://u:Zq9@SecretPw@127.0.0.1:1/db", ["SecretPw", "Zq9@SecretPw"]),
    ("postgresql://u:Zq9 SecretPw@127.0.0.1:1/db", ["SecretPw", "Zq9 SecretPw"]),
    ("postgresql://u:Zq9SecretPw%00x@127.0.0.1:1/db", ["Zq9SecretPw", "SecretPw"]),
    ("postgresql://u:Zq9'Secret\"Pw@127.0.0.1:1/db", ["Secret", "Zq9'Secret"]),
    ("postgresql://u:Zq9%SecretPw@127.0.0.1:1/db", ["SecretPw"]),
    ("postgresql://u:Zq9SecretPw@[::1/db", ["Zq9SecretPw"]),
    ("postgresql://u:Zq9SecretPw@127.0.0.1:1/db?bogus=1", ["Zq9SecretPw"]),
    ("postgres://u:Zq9%40Secret%20Pw@127.0.0.1:1/db", ["Zq9@Secret Pw", "Zq9%40Secret"]),
]
IDS = [u.split("//")[1].split("@1")[0] for u, _ in URLS]
# How each URL's failure begins in libpq's words (scrubbed): what `detail` gives the log.
REFUSED = 'connection failed: connection to server at "127.0.0.1", port 1 failed'
DETAILS = [
    "failed to resolve host '***@127.0.0.1'",
    'unexpected spaces found in "***"',
    'forbidden value %00 in percent-encoded value: "***"',
    REFUSED,
    'invalid percent-encoded token: "***"',
    'end of string reached when looking for matching "]" in IPv6 host address in URI: "postgresql://u:***@[::1/db"',
    'invalid URI query parameter: "bogus"',
    REFUSED,
]


def _clean(text: str, pieces: list[str]) -> bool:
    return not any(p in text for p in pieces)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    level = logs.LOGGER.level
    logs.LOGGER.addHandler(handler)
    logs.LOGGER.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logs.LOGGER.removeHandler(handler)
        logs.LOGGER.setLevel(level)
        logs.redact([])


@pytest.mark.parametrize(
    ("url", "pieces", "detail"), [(*u, d) for u, d in zip(URLS, DETAILS, strict=True)], ids=IDS
)
def test_connect_errors_name_the_place_never_the_driver(url: str, pieces: list[str], detail: str) -> None:
    with pytest.raises((InputError, DatabaseUnavailable)) as info:
        connect(url, connect_timeout=1)
    err = info.value
    if isinstance(err, InputError):
        assert str(err) == "the database URL is not a valid postgresql:// URL"
    else:
        assert str(err) == "database unavailable: 127.0.0.1:1/db"
    assert err.detail is not None and err.detail.startswith(detail)  # the driver's reason, for the log
    assert _clean(str(err) + err.detail, pieces), err.detail


def test_url_secrets_cover_both_splits_raw_and_decoded() -> None:
    got = set(url_secrets("postgresql://u:Zq9@Secret%20Pw@h:1/db"))
    # Split at the last '@' (the password) and at the first (libpq's reading: host 'Secret...').
    assert {"Zq9@Secret%20Pw", "Zq9@Secret Pw", "Secret%20Pw", "Secret Pw"} <= got
    assert "u" not in got and "h:1/db" not in got  # the user and the place are no secret
    assert url_secrets("postgresql://h:1/db") == []


@pytest.mark.parametrize(("url", "pieces"), URLS, ids=IDS)
def test_cli_says_a_generic_line(url: str, pieces: list[str]) -> None:
    for args in (
        ["status"],
        ["run"],
        ["db", "migrate"],
        ["backfill", "--strategy", "x", "--start", START, "--end", END],
    ):
        proc = subprocess.run(
            [*CLI, *args, "--database-url", url], capture_output=True, text=True, cwd=REPO, check=False
        )
        assert proc.returncode in (2, 3), (args, proc.stderr)
        assert proc.stderr.strip() in (
            "error: the database URL is not a valid postgresql:// URL",
            "error: database unavailable: 127.0.0.1:1/db",
        ), (args, proc.stderr)
        assert _clean(proc.stdout + proc.stderr, pieces)


@pytest.mark.parametrize(("url", "pieces"), URLS, ids=IDS)
def test_http_bodies_are_generic_and_logs_scrubbed(
    url: str, pieces: list[str], monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    configure(monkeypatch, url)
    bodies = []
    for target, body in (("tick", {}), ("backfill", {"strategy": "nft", "start": START, "end": END})):
        client: FlaskClient = ff_app(target).test_client()
        r = client.post("/", headers=AUTH, json=body)
        assert r.status_code in (500, 503), r.get_json()
        assert r.get_json()["error"] in ("database unavailable", "internal error")
        bodies.append(r.get_data(as_text=True))
    lines = [json.loads(x) for x in log_stream.getvalue().splitlines()]
    assert any(x.get("detail") for x in lines)  # the operator still learns libpq's reason
    assert _clean("".join(bodies) + log_stream.getvalue(), pieces)
    get_settings.cache_clear()


@pytest.mark.parametrize(("url", "pieces"), URLS, ids=IDS)
def test_serve_with_an_explicit_url_registers_its_password(
    url: str, pieces: list[str], monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    configure(monkeypatch, None)
    services = Services.from_settings(url)
    # Registered for redaction: a line quoting the password (a stack trace, a message) is masked.
    logs.event("echo", text=url_secrets(url)[0])  # the whole password, as a trace might quote it
    client = serve.build_app(services).test_client()
    r = client.post("/tick", headers=AUTH, json={})
    assert r.status_code in (500, 503)
    assert r.get_json()["error"] in ("database unavailable", "internal error")
    assert '"message":"echo"' in log_stream.getvalue()
    assert _clean(r.get_data(as_text=True) + log_stream.getvalue(), pieces)
    get_settings.cache_clear()
