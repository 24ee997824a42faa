"""Under mutmut only: a mutant is "killed" only by a failure the mutation causes.

mutmut counts any failing test as a kill. A test can also fail for a reason of its own (a
resource the worker process inherited, a server that did not start), and every mutant it runs
for would then be "killed" falsely. So when a test fails on a mutant, this plugin runs that test
again at once on the real code (mutmut's trampolines call the original function when
MUTANT_UNDER_TEST names no mutant). Fails there too: the test is run once more, alone, in a
fresh pytest process on the real code, because some of the mutant's work outlives the switch in
this process (SQL text built at import or cached, such as `store/market`'s flow and bar
filters; a shared fixture built under the mutant). Passes there: the mutation caused the
failure, a kill. Fails there too: the failure is not the mutation's doing; it is reported as a
skip (so `-x` does not stop the run: a later test may still kill the mutant), and a run with no
other failure exits 35, which mutmut records as "suspicious".

A failure during the set-up of a shared fixture is retried too (its cached error is dropped).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

import pytest
from _pytest.runner import runtestprotocol

MUTANT_ENV = "MUTANT_UNDER_TEST"
UNRELATED_FAILURE = 35  # mutmut's exit code for "suspicious"
ALONE_TIMEOUT_S = 600  # the test alone, PostgreSQL start included


def active_mutant() -> str | None:
    """The mutant this pytest process runs under (mutmut sets MUTANT_UNDER_TEST), or None."""
    name = os.environ.get(MUTANT_ENV, "")
    return name if "__mutmut_" in name else None


class MutationGuard:
    """Re-runs each failing test on the real code; records those that fail there too."""

    def __init__(self, mutant: str) -> None:
        self.mutant = mutant
        self.unrelated: list[str] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool:
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        if (
            any(r.failed for r in reports)
            and self._fails_on_real_code(item, nextitem)
            and not passes_alone(item)
        ):
            self.unrelated.append(item.nodeid)
            reason = f"mutation guard: {item.nodeid} fails on the real code too"
            for report in reports:
                if report.failed:
                    report.outcome = "skipped"
                    report.longrepr = (str(item.path), item.location[1] or 0, reason)
        for report in reports:
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _fails_on_real_code(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool:
        fixture_info: Any = getattr(item, "_fixtureinfo", None)
        for defs in fixture_info.name2fixturedefs.values() if fixture_info else ():
            for fixturedef in defs:
                cached = fixturedef.cached_result
                if cached is not None and cached[2] is not None:
                    fixturedef.cached_result = None  # set up again, on the real code
        os.environ[MUTANT_ENV] = ""
        try:
            again = runtestprotocol(item, nextitem=nextitem, log=False)
        finally:
            os.environ[MUTANT_ENV] = self.mutant
        return any(r.failed for r in again)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.unrelated and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = UNRELATED_FAILURE


def passes_alone(item: pytest.Item) -> bool:
    """Does the test pass on the real code in a pytest process of its own (no mutant, nothing
    built under one)? Its own temporary folder, so its PostgreSQL is its own too."""
    env = dict(os.environ, **{MUTANT_ENV: ""})
    with tempfile.TemporaryDirectory(prefix="mutation-guard-") as tmp:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
        command += [f"--rootdir={item.config.rootpath}", f"--basetemp={tmp}/t", item.nodeid]
        try:
            done = subprocess.run(
                command,
                check=False,
                cwd=item.config.rootpath,
                env=env,
                capture_output=True,
                timeout=ALONE_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return False
    return done.returncode == 0
