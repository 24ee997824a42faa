"""What a database URL may reveal, masked: its password in any spelling, for logs and errors.

libpq accepts a URL, a conninfo string and their query keys percent-encoded, and echoes pieces
of a malformed one in its messages; everything here masks all of those spellings.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

# user:password@ in a URL; password=... in a conninfo or query, the key %-encoded or not (libpq decodes it)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s\"']*:)[^@\s\"']*@", re.IGNORECASE)
_PASSWORD_KEY = "".join(f"(?:{c}|%{ord(c):02x})" for c in "password")
_KV_PASSWORD = re.compile(rf"(?P<head>{_PASSWORD_KEY}\s*(?:=|%3d)\s*)(?:'[^']*'|[^\s&\"']+)", re.IGNORECASE)


def redact_text(text: str) -> str:
    """Any text (a driver's message, a URL however malformed) with passwords masked as ***."""
    return _KV_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>***@", text))


def redact_url(url: str) -> str:
    """The URL with its password replaced, for messages a person reads."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return redact_text(url)
    if not password:
        return redact_text(url)
    netloc = parts.netloc.replace(f":{password}@", ":***@")
    return redact_text(urlunsplit(parts._replace(netloc=netloc)))


_FRAGMENT_SPLIT = re.compile(r"[@:/\s'\"]+|%00")
MIN_FRAGMENT = 4  # shorter pieces are no secret worth the name (logs.MIN_REDACTED alike)


def _after_scheme(url: str) -> str:
    return url.split("://", 1)[1] if "://" in url else url


def _authority(url: str) -> tuple[str, str, str]:
    """(userinfo, host part, query) of a URL however malformed: userinfo ends at the LAST '@' (a
    raw '@' in a password is common), the host part is what follows up to its '?', the query
    the rest."""
    rest = _after_scheme(url)
    at = rest.rfind("@")
    host, _, query = rest[at + 1 :].partition("?")
    return (rest[:at] if at >= 0 else ""), host, query


def url_secrets(url: str) -> list[str]:
    """Every fragment of a URL's password a driver may echo: the password split at the first and
    at the last '@', and any password given as a query key (`password=`, `sslpassword=`, the key
    percent-encoded or not); their pieces between '@', ':', '/', quotes, blanks and %00, each raw
    and percent-decoded (pieces shorter than MIN_FRAGMENT are left out)."""
    userinfo, _, _ = _authority(url)
    rest = _after_scheme(url)
    first = rest[: rest.find("@")] if "@" in rest else ""
    out: set[str] = set()
    given = [v.strip("'") for v in _PASSWORD_VALUE.findall(url)]  # password=, sslpassword=, encoded
    texts = [p for info in (userinfo, first) for p in (info.partition(":")[2], info.partition("@")[2])]
    for password in [*texts, *given]:
        for text in (password, *_FRAGMENT_SPLIT.split(password)):
            for spelling in (text, unquote(text)):
                if len(spelling.strip()) >= MIN_FRAGMENT:
                    out.add(spelling)
    return sorted(out, key=len, reverse=True)


_PASSWORD_VALUE = re.compile(rf"{_PASSWORD_KEY}\s*(?:=|%3d)\s*('[^']*'|[^\s&\"']+)", re.IGNORECASE)


def scrub(text: str, url: str) -> str:
    """`text` with every fragment of `url`'s password masked, then `redact_text`: for logs."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return redact_text(text)


def location(url: str) -> str:
    """host:port/db of a URL, nothing of its userinfo or query: what an error may name (with no
    host before the database, the query's `host=`, e.g. a socket folder: /var/run/pg/db).

    A '@' after a '?' and a '=' is in the query (`?application_name=me@laptop&password=...`), not
    the end of the userinfo: the place is then after the last '@' before the '?'. Any password=
    left (no userinfo at all) is masked as in `redact_text`."""
    userinfo, host, query = _authority(url)
    first = userinfo.find("?")
    if first >= 0 and "=" in userinfo[first:] and "@" in userinfo[:first]:
        host, query = userinfo[:first].rsplit("@", 1)[1], _after_scheme(url)[first + 1 :]
    socket = _HOST_KEY.search(query) if host.startswith("/") or not host else None
    if socket is not None:  # no host before the database: libpq's host= names the place
        host = scrub(unquote(socket[1]), url).rstrip("/") + host  # never a piece of the password
    return redact_text(host) or "?"


_HOST_KEY = re.compile(r"(?:^|&)host=([^&]+)")
