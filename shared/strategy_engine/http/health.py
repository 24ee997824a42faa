"""`/health` (liveness, anonymous, no detail) and `/ready` (authenticated readiness: the database
with its last run, and the Alpaca paper API when its keys are set)."""

from __future__ import annotations

from typing import Any

from strategy_engine.core.errors import InputError, Unavailable
from strategy_engine.core.models import BrokerAccount
from strategy_engine.http.messages import HttpRequest, HttpResponse, Misconfigured, retry_later
from strategy_engine.http.services import Services
from strategy_engine.store import engine_runs


def liveness(req: HttpRequest, body: bytes, services: Services) -> HttpResponse:
    """Liveness for an uptime probe: no credentials, no dependency touched, no detail."""
    return HttpResponse(200, {"status": "ok"})


def _database(services: Services) -> dict[str, Any]:
    try:
        with services.open_session() as s:
            runs = engine_runs.recent_runs(s, 1)
    except Unavailable as exc:
        return {"status": "unavailable", "error": str(exc)}
    except (Misconfigured, InputError):
        return {"status": "misconfigured"}
    last = {"minute": runs[0][2].isoformat(), "status": runs[0][3], "trigger": runs[0][1]} if runs else None
    return {"status": "ok", "last_run": last}


def _broker(services: Services) -> dict[str, Any]:
    st = services.settings
    if st.alpaca_api_key is None or st.alpaca_secret_key is None:
        return {"status": "not_configured"}
    try:
        # The default key pair (credentials_ref None): the account the deploy configured.
        services.deps().alpaca_broker(BrokerAccount(0, "readiness", "alpaca")).clock()
    except Unavailable as exc:
        return {"status": "unavailable", "error": str(exc)}
    except InputError as exc:  # e.g. a live (non-paper) endpoint refused before any request
        return {"status": "refused", "error": str(exc)}
    return {"status": "ok"}


def readiness(req: HttpRequest, body: bytes, services: Services) -> HttpResponse:
    """Readiness (authenticated): the database (with the last run) and, when its keys are set, the
    Alpaca paper API; 503 with Retry-After when either is not usable."""
    checks = {"database": _database(services), "broker": _broker(services)}
    ok = checks["database"]["status"] == "ok" and checks["broker"]["status"] in ("ok", "not_configured")
    doc = {"status": "ready" if ok else "not_ready", **checks}
    return HttpResponse(200, doc) if ok else retry_later(doc)
