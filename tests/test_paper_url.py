"""The paper-only guard's spellings, checked on `checked_base_url` itself (no client built).

`tests/test_alpaca_broker.py` proves no socket opens for a refused URL; these pin what is
accepted and the one line an operator reads when a URL is refused.
"""

from __future__ import annotations

import pytest

from strategy_engine.brokers.paper_url import checked_base_url
from strategy_engine.core.errors import LiveTradingRefused

ALLOWED = r"only https://paper-api\.alpaca\.markets or loopback is allowed$"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://paper-api.alpaca.markets./", None),  # the fully qualified spelling of the host
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),  # a loopback server over TLS
        ("https://localhost.", "https://localhost"),
    ],
)
def test_paper_host_with_a_root_dot_or_loopback_over_https_then_accepted(
    url: str, expected: str | None
) -> None:
    assert checked_base_url(url) == expected


@pytest.mark.parametrize("url", ["https://api.alpaca.markets.", "https://API.Alpaca.Markets../v2"])
def test_live_host_with_root_dots_then_refused_by_name(url: str) -> None:
    with pytest.raises(LiveTradingRefused, match=f"^refusing Alpaca's live host: {ALLOWED}"):
        checked_base_url(url)


def test_a_url_without_a_host_then_refused_naming_the_empty_host() -> None:
    with pytest.raises(LiveTradingRefused, match=f"^refusing host '': {ALLOWED}"):
        checked_base_url("https://")


@pytest.mark.parametrize("url", ["http://[::1", "http://localhost:99999"])
def test_an_unreadable_url_then_refused_as_not_a_url(url: str) -> None:
    with pytest.raises(LiveTradingRefused, match=r"^ALPACA_BASE_URL is not a valid URL$"):
        checked_base_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/v2", "http://127.0.0.1:9?x=1", "http://127.0.0.1:9#f", "http://me@127.0.0.1:9"],
)
def test_a_loopback_url_with_more_than_scheme_host_and_port_then_refused(url: str) -> None:
    with pytest.raises(LiveTradingRefused) as refused:
        checked_base_url(url)
    assert str(refused.value) == "ALPACA_BASE_URL must be scheme://host[:port] only (alpaca-py adds /v2)"
