"""Attacks on `strategy-engine serve` by signals: during startup, twice in a row, mid-request.

Every test runs serve as a real subprocess on the real embedded Postgres (its own data folder)
and checks what a person would see next: no postgres left running, and the next serve starts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return env | {"EMBEDDED_DATA_DIR": str(data), "HOME": str(tmp_path), "ENGINE_HTTP_SECRET": "x" * 20}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(tmp_path: Path, data: Path, port: int, *, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    """`strategy-engine serve` as a shell would start it (a background job ignores SIGINT)."""

    def background() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        [sys.executable, "-m", "strategy_engine.cli", "serve", "--port", str(port)],
        env=_env(tmp_path, data),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=background if ignore_sigint else None,  # noqa: PLW1509
    )


def _wait_for_child(proc: subprocess.Popen[str], name: str) -> None:
    """Until `proc` runs a child program called `name` (initdb, pg_ctl)."""
    parent = psutil.Process(proc.pid)
    for _ in range(60_000):
        try:
            if any(c.name() == name for c in parent.children(recursive=True)):
                return
        except psutil.NoSuchProcess:
            pass
        assert proc.poll() is None, "serve exited before it ran " + name
        time.sleep(0.002)
    raise AssertionError(f"serve never ran {name}")


def _postmasters(data: Path) -> list[psutil.Process]:
    """The live postgres servers of this data folder (a zombie counts as gone)."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if p.info["name"] == "postgres" and str(data) in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def _no_postgres_left(data: Path) -> bool:
    """Waits (generously) for any server of `data` to finish stopping."""
    for _ in range(300):
        if not _postmasters(data):
            return True
        time.sleep(0.1)
    return False


def _ends(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """(exit code, stderr) of a serve told to stop; killed if it hangs, so the test fails."""
    try:
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    return code, proc.stderr.read()


def _serve_once(tmp_path: Path, data: Path) -> None:
    """A whole serve: starts, answers /health, stops on SIGTERM with exit 0, leaves no postgres."""
    port = _free_port()
    with _serve(tmp_path, data, port) as proc:
        _serving(proc, port)
        proc.send_signal(signal.SIGTERM)
        code, err = _ends(proc)
    assert code == 0 and "stopped the embedded Postgres" in err, err
    assert _no_postgres_left(data)


@pytest.mark.parametrize(
    ("signum", "ignore_sigint"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True)],
    ids=["sigterm", "sigint", "sigint-background-job"],
)
@pytest.mark.parametrize("during", ["initdb", "pg_ctl"])
def test_signal_while_the_embedded_server_starts(
    tmp_path: Path, signum: int, ignore_sigint: bool, during: str
) -> None:
    """BROKE: a signal while pgserver ran `pg_ctl start` left the new postgres running with no
    user listed (pgserver adds the pid only after), so nothing ever stopped it; one during
    `initdb` left a half-made data folder (PG_VERSION but no cluster) that every later start
    refused; SIGINT in a background job was dropped until serve listened. Now serve exits
    non-zero, no postgres is left running, and the next serve starts."""
    data = tmp_path / "pgdata"
    with _serve(tmp_path, data, _free_port(), ignore_sigint=ignore_sigint) as proc:
        _wait_for_child(proc, during)
        proc.send_signal(signum)
        code, err = _ends(proc)
    assert code == 130, err
    assert _no_postgres_left(data)
    _serve_once(tmp_path, data)


def _serving(proc: subprocess.Popen[str], port: int) -> None:
    """Until serve prints its line and answers /health."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        if line.startswith("serving"):
            break
        seen.append(line)
    else:
        raise AssertionError(f"serve did not start: exit {proc.wait()}: {''.join(seen)[-2000:]}")
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                assert r.status == 200
            return
        except urllib.error.URLError:
            time.sleep(0.1)


@pytest.mark.parametrize(
    ("first", "second", "ignore_sigint"),
    [
        (signal.SIGTERM, signal.SIGTERM, False),
        (signal.SIGINT, signal.SIGINT, False),
        (signal.SIGTERM, signal.SIGINT, False),
        (signal.SIGINT, signal.SIGTERM, True),
    ],
    ids=["sigterm-twice", "sigint-twice", "sigterm-then-sigint", "background-sigint-then-sigterm"],
)
def test_a_second_signal_while_serve_stops_postgres(
    tmp_path: Path, first: int, second: int, ignore_sigint: bool
) -> None:
    """BROKE: a second signal while serve ran `pg_ctl stop` interrupted its cleanup: the stop
    was abandoned half-way (pgserver had already taken serve off the list of users) and serve
    exited 130 without saying what became of the server. Now the second is ignored: serve
    finishes stopping Postgres, exits 0, and the next serve starts."""
    data = tmp_path / "pgdata"
    port = _free_port()
    with _serve(tmp_path, data, port, ignore_sigint=ignore_sigint) as proc:
        _serving(proc, port)
        proc.send_signal(first)
        _wait_for_child(proc, "pg_ctl")
        proc.send_signal(second)
        code, err = _ends(proc)
    assert code == 0 and "stopped the embedded Postgres" in err, err
    assert _no_postgres_left(data)
    _serve_once(tmp_path, data)
