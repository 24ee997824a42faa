"""`strategy-engine serve`: the four HTTP functions on one local server, for development.

One Flask app answers /tick, /backfill, /webhook, /health and /ready through the very
`api.handle` the deployed functions use, so curl against it behaves as the cloud does (same
authentication, same status codes). Unlike the deployed functions it may use the embedded
Postgres: with no --database-url and no DATABASE_URL it starts (and migrates) the embedded
server once, and stops it when it exits (Ctrl-C or SIGTERM), unless another process still uses it.

    ENGINE_HTTP_SECRET=dev strategy-engine serve --port 8080
    curl -s -XPOST localhost:8080/tick -H 'Authorization: Bearer dev' \\
         -H 'Content-Type: application/json' -d '{"minute": "2025-06-13T14:31:00Z"}'
"""

from __future__ import annotations

import logging
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated

import flask
import typer

from strategy_engine import logs
from strategy_engine.http import api
from strategy_engine.settings import Settings

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def build_app(services: api.Services | None = None) -> flask.Flask:
    """Every path goes to `api.handle` (unknown routes and wrong methods answer there)."""
    app = flask.Flask("strategy_engine.http.serve")

    def view(path: str = "") -> flask.Response:
        route = path.strip("/")
        return api.to_flask(api.handle(route, api.from_flask(flask.request), services))

    for rule in ("/", "/<path:path>"):
        app.add_url_rule(rule, "handle", view, methods=METHODS, provide_automatic_options=False)
    return app


def services_for(database_url: str | None) -> tuple[api.Services, bool]:
    """(services, started the embedded server): the explicit URL, else DATABASE_URL, else the
    embedded server (started and migrated once)."""
    from strategy_engine.runtime import resolve_database_url
    from strategy_engine.store import connect, embedded
    from strategy_engine.store.migrations import migrate

    url, is_embedded = resolve_database_url(database_url)
    if is_embedded:
        try:
            with connect(url) as s:
                migrate(s)
        except BaseException:  # a refusal, or Ctrl-C mid-migration (each file rolls back whole)
            embedded.stop()
            raise
    return api.Services.from_settings(url), is_embedded


# Every query parameter's value: a list of credential-looking names (token, key, ...) always
# misses one (`sig`, `code`, `X-Amz-Credential`), so the access log keeps names and masks all values.
_QUERY_VALUE = re.compile(r"(?P<head>[?&;][^=&\s\"]*=)[^&;\s\"]*")


class MaskCredentials(logging.Filter):
    """Masks the value of every query parameter in werkzeug's access log lines (the request line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _QUERY_VALUE.sub(r"\g<head>***", record.getMessage()), ()
        return True


def mask_access_log() -> None:
    """Install MaskCredentials on werkzeug's logger once."""
    log = logging.getLogger("werkzeug")
    if not any(isinstance(f, MaskCredentials) for f in log.filters):
        log.addFilter(MaskCredentials())


def _run(app: flask.Flask, host: str, port: int) -> None:
    mask_access_log()
    app.run(host=host, port=port, debug=False, use_reloader=False)


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """The first SIGTERM or SIGINT raises KeyboardInterrupt (werkzeug stops on it, startup
    unwinds), so the cleanup after it runs; later ones are ignored, so they cannot cut that
    cleanup short. The default SIGTERM would kill the process and leave Postgres running, and a
    process started in a shell's background job inherits SIGINT ignored."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(app: typer.Typer) -> None:
    """Add the `serve` command to the CLI."""

    @app.command()
    def serve(
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
        database_url: Annotated[
            str | None,
            typer.Option("--database-url", help="Postgres URL (else DATABASE_URL, else embedded)."),
        ] = None,
    ) -> None:
        """Serve /tick, /backfill, /webhook, /health and /ready locally (the deployed handlers)."""
        from strategy_engine.store import embedded

        logs.configure()
        with _signals_as_interrupt():  # from the start: a signal while starting exits 130
            services, started = services_for(database_url)
            _warn_without_secret(services.settings)
            typer.echo(f"serving /tick /backfill /webhook /health /ready on http://{host}:{port}", err=True)
            try:
                _run(build_app(services), host, port)
            except KeyboardInterrupt:
                pass  # the way to stop serving: exit 0
            finally:
                if started:
                    if embedded.stop():
                        typer.echo("stopped the embedded Postgres", err=True)
                    else:
                        typer.echo("left the embedded Postgres running: another process uses it", err=True)


def _warn_without_secret(settings: Settings) -> None:
    secret = settings.engine_http_secret.get_secret_value() if settings.engine_http_secret else ""
    if not settings.engine_trust_platform_auth and len(secret) < api.MIN_SECRET_LENGTH:
        typer.echo(
            f"note: no ENGINE_HTTP_SECRET of {api.MIN_SECRET_LENGTH}+ characters is set,"
            " so every request is refused (403)",
            err=True,
        )
