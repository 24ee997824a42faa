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
from strategy_engine.store.redaction import location, redact_text, redact_url, scrub, url_secrets
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
    # A '@' in the query, then a password there: the place named is still the host's.
    ("postgresql://u:Pw@127.0.0.1:1/db?application_name=me@laptop&password=Zq9SecretPw", ["Zq9SecretPw"]),
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
    'connection failed: connection to server at "',  # the host is masked too: it follows a '@'
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


# (URL, every fragment url_secrets must give), worked out by hand from its contract: the password
# split at the last '@' and at the first, its pieces of MIN_FRAGMENT (4) characters or more, the
# text after the password's first '@' (libpq's host), each raw and percent-decoded.
SECRETS = [
    # libpq reads "Zq9 Sec" as the password: both its pieces are too short to mask alone.
    ("postgresql://u:Zq9 Sec@ret1@h/db", {"Zq9 Sec@ret1", "Zq9 Sec", "ret1"}),
    # "://" inside the password: the scheme is cut at the first "://" only.
    ("postgresql://u:Zq9://Se@cret@h/db", {"Zq9://Se@cret", "Zq9://Se", "cret"}),
    # ':' inside the password (and an IPv6 host): the password starts at the first ':'.
    ("postgresql://engine:pa:ss:word@[::1]:5432/app", {"pa:ss:word", "word"}),
    ("postgresql://engine:abcd@host/app", {"abcd"}),  # exactly MIN_FRAGMENT long
    ("postgresql://u:Zq9@Sec@retPw@h/db", {"Zq9@Sec@retPw", "Sec@retPw", "retPw"}),
    ("postgres://u:Zq9%40Secret%20Pw@127.0.0.1:1/db", {"Zq9%40Secret%20Pw", "Zq9@Secret Pw"}),
    ("postgresql://u:ab:wxyz@h/db", {"ab:wxyz", "wxyz"}),
    ("postgresql://engine:p%3Ass%2Fword@%2Fvar%2Frun%2Fpostgresql/app", {"p%3Ass%2Fword", "p:ss/word"}),
    ("u:abcd@h/db", {"abcd"}),  # no scheme at all
    ("postgresql://engine@h:5432/db", set()),  # a user, no password
    ("postgresql://h:5432/db", set()),  # neither: the port is no secret
    ("postgresql://h:5432/db?sslmode=require", set()),
    # A password given in the query, the key in any spelling libpq decodes (found by helper atkI).
    ("postgresql://u@/db?password=Leak3dPw&host=/run/pg", {"Leak3dPw"}),
    ("postgresql://h/db?passw%6Frd=Leak3dPw", {"Leak3dPw"}),
    ("postgresql://h/db?sslpassword=Top:Secret1&sslmode=require", {"Top:Secret1", "Secret1"}),
    ("postgresql://h/db?password=Zq9%20Pass", {"Zq9%20Pass", "Zq9 Pass"}),
    ("", set()),  # sibling connections pass no URL
]


@pytest.mark.parametrize(("url", "expected"), SECRETS, ids=[u or "empty" for u, _ in SECRETS])
def test_url_secrets_are_every_fragment_and_nothing_else(url: str, expected: set[str]) -> None:
    got = url_secrets(url)
    assert set(got) == expected
    assert [len(x) for x in got] == sorted((len(x) for x in expected), reverse=True)  # longest first


# (text a driver or a trace may print, the URL, what the log gets).
SCRUBBED = [
    (
        'unexpected spaces found in "Zq9 Sec"',
        "postgresql://u:Zq9 Sec@ret1@h/db",
        'unexpected spaces found in "***"',
    ),
    (
        "failed to resolve host 'Sec@retPw@h'",
        "postgresql://u:Zq9@Sec@retPw@h/db",
        "failed to resolve host '***@h'",
    ),
    # The longer fragment first: masking "wxyz" first would leave "ab:" of the password behind.
    (
        'could not translate host name "ab:wxyz@h"',
        "postgresql://u:ab:wxyz@h/db",
        'could not translate host name "***@h"',
    ),
    # The user name stays readable, the password goes.
    (
        'connect to "postgresql://u:Zq9 SecretPw@127.0.0.1:1/db" failed',
        "postgresql://u:Zq9 SecretPw@127.0.0.1:1/db",
        'connect to "postgresql://u:***@127.0.0.1:1/db" failed',
    ),
    # No password: the port an operator reads is left alone.
    (
        'connection to server at "127.0.0.1", port 5432 failed',
        "postgresql://127.0.0.1:5432/db",
        'connection to server at "127.0.0.1", port 5432 failed',
    ),
    ("server closed the connection unexpectedly", "", "server closed the connection unexpectedly"),
    # redact_text after the fragments: a password= the URL did not carry is masked too.
    ("retry with password=other-pw1", "postgresql://u:abcd@h/db", "retry with password=***"),
]


@pytest.mark.parametrize(("text", "url", "expected"), SCRUBBED)
def test_scrub_masks_each_fragment_as_stars(text: str, url: str, expected: str) -> None:
    assert scrub(text, url) == expected


# (URL, the place an error names): host[:port]/db, never userinfo or query.
LOCATIONS = [
    ("postgresql://u:pw@h:5432/db?password=qwerty99", "h:5432/db"),
    ("postgresql://h:5432/db?password=qwerty99", "h:5432/db"),
    ("postgresql://u:pw@h/db?sslpassword=topsecret?sslmode=require", "h/db"),
    ("postgresql://h/db?sslpassword=topsecret?sslmode=require", "h/db"),
    ("postgresql://u:Zq9://Se@cret@h/db", "h/db"),
    ("postgresql://@h:5432/db", "h:5432/db"),
    ("postgresql://engine:pa:ss:word@[::1]:5432/app", "[::1]:5432/app"),
    ("postgresql://engine:pw@%2Fvar%2Frun%2Fpostgresql/app", "%2Fvar%2Frun%2Fpostgresql/app"),
    ("postgresql://engine:pw@h1:5432,h2:5433/app", "h1:5432,h2:5433/app"),
    ("postgres://engine:pw@/app?host=/var/run/postgresql", "/var/run/postgresql/app"),
    ("postgres://engine:pw@/app?sslmode=disable&host=%2Fsrv%2Fpg%2F&port=5433", "/srv/pg/app"),
    ("postgres:///app?host=/run/pg&password=hunter22", "/run/pg/app"),
    ("postgres://engine:pw@h/app?host=/var/run/postgresql", "h/app"),  # the authority's host wins
    # A '?' and 'host=' inside the password: the query is what follows the host part, never it.
    ("postgresql://u:p?host=Leak3dPw@/db", "/db"),
    ("postgresql://u:p?host=Leak3dPw@/db?host=/run/pg", "/run/pg/db"),
    ("postgresql://u:Leak3dPw@/db?host=/run/Leak3dPw", "/run/***/db"),  # a password piece as the host=
    ("postgresql://u@/db?password=Leak3dPw&host=/run/Leak3dPw", "/run/***/db"),  # a query password too
    ("postgresql://u@/db?passw%6Frd=Leak3dPw&host=/run/Leak3dPw", "/run/***/db"),
    ("u:abcd@h/db", "h/db"),
    # A '@' in the query is not the end of the userinfo: the query's password never named.
    ("postgresql://u:pw@127.0.0.1:1/db?application_name=me@laptop&password=hunter22", "127.0.0.1:1/db"),
    ("postgresql://u:pw@h/db?application_name=me@laptop&sslpassword=hunter22", "h/db"),
    ("postgresql://u@h/db?password=hunter@22x", "h/db"),
    ("postgresql://u:pa?ss=1@h/db", "h/db"),  # '?' and '=' in the password itself
    # A '@' in the password and in the query: the place after the password's last '@'.
    ("postgresql://u:Zq9@Secret@h/db?application_name=me@laptop&password=hunter22", "h/db"),
    # A second '?' in the query before its '@': the query begins at the first '?'.
    ("postgresql://u:pw@h/db?application_name=a?b@laptop&password=hunter22", "h/db"),
    # No userinfo to fall back to: the wrong place, but its password= masked.
    ("postgresql://h:5432/db?application_name=me@laptop&password=hunter22", "laptop&password=***"),
    ("postgresql://", "?"),
    ("", "?"),
]


@pytest.mark.parametrize(("url", "expected"), LOCATIONS, ids=[u or "empty" for u, _ in LOCATIONS])
def test_location_is_the_place_without_userinfo_or_query(url: str, expected: str) -> None:
    assert location(url) == expected


# (URL as a user pastes it, what a person may be shown).
REDACTED_URLS = [
    ("postgresql://u:Zq9@SecretPw@127.0.0.1:1/db", "postgresql://u:***@127.0.0.1:1/db"),
    ("postgresql://u:Zq9 SecretPw@127.0.0.1:1/db", "postgresql://u:***@127.0.0.1:1/db"),
    ("postgres://u:Zq9%40Secret%20Pw@127.0.0.1:1/db", "postgres://u:***@127.0.0.1:1/db"),
    (
        "postgresql://engine:hunter22@db.example.com:5432/app?sslmode=require&password=qwerty99",
        "postgresql://engine:***@db.example.com:5432/app?sslmode=require&password=***",
    ),
    ("postgresql://engine:pa:ss:word@[::1]:5432/app", "postgresql://engine:***@[::1]:5432/app"),
    (
        "postgresql://engine:p%3Ass%2Fword@%2Fvar%2Frun%2Fpostgresql/app",
        "postgresql://engine:***@%2Fvar%2Frun%2Fpostgresql/app",
    ),
    ("postgresql://engine:hunter22@h1:5432,h2:5433/app", "postgresql://engine:***@h1:5432,h2:5433/app"),
    ("postgresql://h:5432/db", "postgresql://h:5432/db"),
    ("host=h password='hunter 22' user=u", "host=h password=*** user=u"),
    # libpq decodes a query's keys: each of these sets the password (atkF found them shown)
    ("postgresql://u@h/db?pass%77ord=hunter22&x=1", "postgresql://u@h/db?pass%77ord=***&x=1"),
    (
        "postgresql://u@h/db?%70%61%73%73%77%6F%72%64=hunter22",
        "postgresql://u@h/db?%70%61%73%73%77%6F%72%64=***",
    ),
    (
        "postgresql://u@h/db?sslmode=require&passwor%64%3Dhunter22",
        "postgresql://u@h/db?sslmode=require&passwor%64%3D***",
    ),
]


@pytest.mark.parametrize(("url", "expected"), REDACTED_URLS)
def test_redact_url_keeps_the_place_and_masks_the_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_masks_passwords_inside_any_text() -> None:
    assert redact_text("dsn postgresql://u:hunter22@h/db failed") == "dsn postgresql://u:***@h/db failed"
    assert redact_text("host=h password=hunter22 user=u") == "host=h password=*** user=u"
    assert (
        redact_text('invalid URI query parameter: "postgresql://u:hunter22@h/db?sslpassword=topsecret&x=1"')
        == 'invalid URI query parameter: "postgresql://u:***@h/db?sslpassword=***&x=1"'
    )


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
