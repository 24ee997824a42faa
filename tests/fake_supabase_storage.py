"""A loopback server speaking the Supabase Storage object API, for the real `supabase` client.

It answers `POST` (create; `x-upsert: true` replaces) and `PUT` (update) on
`/storage/v1/object/{bucket}/{path}` with a multipart body holding the `file` part, as
storage3 sends it, and `GET` on the same path. It checks the service-role key in both the
`apikey` and `Authorization: Bearer` headers and answers errors in Storage's JSON shape
(`statusCode`, `error`, `message`), which storage3 turns into `StorageApiError`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

PREFIX = "/storage/v1/object/"


@dataclass
class StoredObject:
    content_type: str
    body: bytes
    cache_control: str | None


@dataclass
class StorageState:
    key: str
    buckets: set[str]
    objects: dict[tuple[str, str], StoredObject] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    fail_with: int | None = None  # answer every request with this status (an outage)


def _multipart(content_type: str, body: bytes) -> dict[str, Message]:
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    parts: dict[str, Message] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            parts[name] = part
    return parts


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        return

    def _answer(
        self,
        status: int,
        doc: dict[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        data = body if body is not None else json.dumps(doc or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, error: str, message: str) -> None:
        self._answer(status, {"statusCode": str(status), "error": error, "message": message})

    def _target(self) -> tuple[str, str] | None:
        state = self.server.state
        state.requests.append((self.command, self.path))
        if state.fail_with is not None:
            self._error(state.fail_with, "InternalError", "storage is down")
            return None
        bearer = self.headers.get("Authorization", "")
        if self.headers.get("apikey") != state.key or bearer != f"Bearer {state.key}":
            self._error(403, "Unauthorized", "invalid signature")
            return None
        path = unquote(urlsplit(self.path).path)
        bucket, _, name = path.removeprefix(PREFIX).partition("/")
        if not path.startswith(PREFIX) or not name:
            self._error(400, "InvalidKey", f"invalid object path {path}")
            return None
        if bucket not in state.buckets:
            self._error(404, "Bucket not found", "Bucket not found")
            return None
        return bucket, name

    def do_GET(self) -> None:
        target = self._target()
        if target is None:
            return
        obj = self.server.state.objects.get(target)
        if obj is None:
            self._error(404, "not_found", "Object not found")
            return
        self._answer(200, body=obj.body, content_type=obj.content_type)

    def do_POST(self) -> None:
        self._write(create=True)

    def do_PUT(self) -> None:
        self._write(create=False)

    def _write(self, *, create: bool) -> None:
        target = self._target()
        if target is None:
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        parts = _multipart(self.headers.get("Content-Type", ""), body)
        if "file" not in parts:
            self._error(400, "InvalidRequest", "no file part")
            return
        objects = self.server.state.objects
        exists = target in objects
        if create and exists and self.headers.get("x-upsert") != "true":
            self._error(409, "Duplicate", "The resource already exists")
            return
        if not create and not exists:
            self._error(404, "not_found", "Object not found")
            return
        file = parts["file"]
        cache = parts.get("cacheControl")
        objects[target] = StoredObject(
            file.get_content_type() + (f"; charset={cs}" if (cs := file.get_content_charset()) else ""),
            bytes(file.get_payload(decode=True) or b""),
            None if cache is None else str(cache.get_payload()),
        )
        self._answer(200, {"Key": f"{target[0]}/{target[1]}", "Id": f"id-{len(objects)}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: StorageState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class FakeSupabaseStorage:
    """Start with `with FakeSupabaseStorage(key, {"bucket"}) as fake:`; `fake.url` is SUPABASE_URL."""

    def __init__(self, key: str, buckets: set[str]) -> None:
        self.state = StorageState(key, set(buckets))
        self._server = _Server(self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeSupabaseStorage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
