"""A loopback Cloud Scheduler: the v1 REST shapes of jobs get, pause, resume and run.

`strategy-engine schedule` is tested with the real google-cloud-scheduler client (REST
transport) pointed here, so the requests it sends and the answers it parses are the real ones;
only the service behind them is ours. Behaviour follows the API reference: pausing needs an
ENABLED job and resuming a PAUSED one (else FAILED_PRECONDITION, HTTP 400), an unknown job is
NOT_FOUND (404), and errors carry Google's JSON error body.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

_PATH = re.compile(r"^/v1/(projects/[^/]+/locations/[^/]+/jobs/[^/:]+)(?::(pause|resume|run))?$")
_STATE_NUMBERS = {"STATE_UNSPECIFIED": 0, "ENABLED": 1, "PAUSED": 2, "DISABLED": 3, "UPDATE_FAILED": 4}
_METHOD_NUMBERS = {"POST": 1, "GET": 2}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str


@dataclass
class FakeCloudScheduler:
    """Jobs by full name; every request recorded. `fail_next` answers the next requests with
    the given HTTP statuses (e.g. 503) before behaving normally again; `fail_on` does the same
    for one method only ("get", "pause", "resume", "run")."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    fail_on: dict[str, list[int]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_job(
        self,
        project: str = "demo-project",
        location: str = "us-east4",
        job_id: str = "strategy-engine-tick",
        *,
        state: str = "ENABLED",
        uri: str = "https://strategy-engine-tick-abc123-uk.a.run.app",
    ) -> str:
        name = f"projects/{project}/locations/{location}/jobs/{job_id}"
        self.jobs[name] = {
            "name": name,
            "description": "Strategy engine tick",
            "schedule": "* 9-15 * * 1-5",
            "timeZone": "America/New_York",
            "state": state,
            "httpTarget": {
                "uri": uri,
                "httpMethod": "POST",
                "headers": {"Content-Type": "application/json"},
                "oidcToken": {
                    "serviceAccountEmail": f"strategy-engine-sched@{project}.iam.gserviceaccount.com",
                    "audience": uri,
                },
            },
            "retryConfig": {"retryCount": 3, "maxRetryDuration": "50s", "minBackoffDuration": "5s"},
            "attemptDeadline": "60s",
            "userUpdateTime": _now(),
            "scheduleTime": "2026-03-02T14:31:00Z",
        }
        return name

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeCloudScheduler:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeCloudScheduler:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- the API --------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path, _, query = h.path.partition("?")
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length).decode() if length else ""
        with self._lock:
            self.requests.append(Recorded(h.command, path, query, dict(h.headers.items()), body))
            if self.fail_next:
                status = self.fail_next.pop(0)
                return self._error(h, status, "UNAVAILABLE", "The service is currently unavailable.")
            m = _PATH.match(path)
            if m is None:
                return self._error(h, 404, "NOT_FOUND", f"Unknown path {path}.")
            name, verb = m.group(1), m.group(2)
            planned = self.fail_on.get(verb or "get")
            if planned:
                return self._error(h, planned.pop(0), "UNAVAILABLE", "The service is currently unavailable.")
            if (h.command == "GET") != (verb is None):
                return self._error(h, 405, "INVALID_ARGUMENT", f"{h.command} not allowed on {path}.")
            job = self.jobs.get(name)
            if job is None:
                return self._error(h, 404, "NOT_FOUND", "Job not found.")
            if verb == "pause":
                if job["state"] != "ENABLED":
                    return self._error(h, 400, "FAILED_PRECONDITION", "Job must be ENABLED to be paused.")
                job["state"] = "PAUSED"
                job["userUpdateTime"] = _now()
            elif verb == "resume":
                if job["state"] != "PAUSED":
                    return self._error(h, 400, "FAILED_PRECONDITION", "Job must be PAUSED to be resumed.")
                job["state"] = "ENABLED"
                job["userUpdateTime"] = _now()
            elif verb == "run":
                self.runs.append(name)
                job["lastAttemptTime"] = _now()
                job["status"] = {}
            return self._send(h, 200, self._render(job, query))

    @staticmethod
    def _render(job: dict[str, Any], query: str) -> dict[str, Any]:
        """Enums by name, or by number when the client asks for `$alt=json;enum-encoding=int`."""
        out: dict[str, Any] = json.loads(json.dumps(job))
        if "enum-encoding=int" in unquote(query):
            out["state"] = _STATE_NUMBERS[out["state"]]
            out["httpTarget"]["httpMethod"] = _METHOD_NUMBERS[out["httpTarget"]["httpMethod"]]
        return out

    @staticmethod
    def _error(h: BaseHTTPRequestHandler, code: int, status: str, message: str) -> None:
        FakeCloudScheduler._send(h, code, {"error": {"code": code, "message": message, "status": status}})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json; charset=UTF-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
