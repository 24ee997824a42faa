"""The paper-only guard: which Alpaca base URLs the engine may talk to (the paper host, or a
loopback server in tests). Live trading is unreachable because nothing else passes here."""

from __future__ import annotations

from ipaddress import ip_address
from urllib.parse import urlsplit

from strategy_engine.core.errors import LiveTradingRefused

PAPER_HOST = "paper-api.alpaca.markets"
LIVE_HOST = "api.alpaca.markets"


def checked_base_url(url: str) -> str | None:
    """The loopback URL to use instead of the paper host (None: the paper host), or `LiveTradingRefused`.

    An allow-list, not a deny-list: only the paper host or a loopback address passes, so no
    spelling of the live host (case, trailing dot or slash, a path, a port, userinfo) slips
    through. The URL handed on is rebuilt from the checked parts, so what was checked is what is
    used. Messages name the host only: a URL may carry credentials.
    """
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except ValueError as exc:
        raise LiveTradingRefused("ALPACA_BASE_URL is not a valid URL") from exc
    paper = host == PAPER_HOST and parts.scheme == "https" and port in (None, 443)
    if not paper and not (parts.scheme in ("http", "https") and is_loopback_host(host)):
        what = "Alpaca's live host" if host == LIVE_HOST else f"host {host!r}"
        raise LiveTradingRefused(f"refusing {what}: only https://{PAPER_HOST} or loopback is allowed")
    if parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise LiveTradingRefused("ALPACA_BASE_URL must be scheme://host[:port] only (alpaca-py adds /v2)")
    if paper:
        return None
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + ("" if port is None else f":{port}")


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback IP address (the only non-Alpaca hosts any client may reach)."""
    try:
        return host == "localhost" or ip_address(host).is_loopback
    except ValueError:
        return False
