"""A fast first pass over many mutants: one pytest process runs them all (`make prescreen`).

mutmut starts a pytest session per mutant, and each session starts its own PostgreSQL: about
3 s before the first test. Here one session runs every mutant of a plan in turn, switching
`MUTANT_UNDER_TEST` between tests (mutmut's trampolines read it on every call), against the
fastest tests that cover the mutated function, up to a budget of their recorded durations.

Plan (`python tests/mutation_prescreen.py plan BUDGET GLOB...`, run inside
`build/mutation/mutants` after a mutmut run has written `mutmut-stats.json`): JSON, a list of
[mutant, [test node id, ...]], each test list fastest first.

Run (this file as a pytest plugin, `PRESCREEN_PLAN` and `PRESCREEN_OUT` set): one JSON line
per mutant appended to `PRESCREEN_OUT`: {"mutant", "verdict", "by", "s", "ran"}. Verdicts:

- `killed`: a test failed on the mutant and passed when run again at once on the real code;
- `survived`: every test in the budget passed. Narrower than mutmut's verdict, which runs
  every covering test: a survivor here is a candidate, to be killed by a test or shown
  equivalent (docs/mutation.md);
- `unrelated`: a test failed on the mutant and on the real code too (not counted as a kill);
- `timeout`: a test ran past `PRESCREEN_LIMIT` seconds (default 60), or the process hung
  (the next run, resumed from the same files, records the mutant it was on);
- `no_tests`: nothing covers it in the selection.

Before a test first runs on a mutant it runs once on the real code, so the session's shared
fixtures (the server, the migrated template) are built unmutated, and a test that fails by
itself is left out (listed in `PRESCREEN_OUT.basefail`).
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from _pytest.runner import runtestprotocol

MUTANT_ENV = "MUTANT_UNDER_TEST"
Plan = list[tuple[str, list[str]]]


class _OverTime(BaseException):
    """Raised in the test's thread by SIGALRM: a mutant that loops forever."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _OverTime


class _Parent:
    """A stand-in `nextitem` for pytest's teardown: the next test is in the same module, so the
    test's own fixtures are torn down and its module's and the session's stay set up."""

    def __init__(self, item: pytest.Item) -> None:
        self.chain = item.listchain()[:-1]

    def listchain(self) -> list[Any]:
        return self.chain


def _fails(item: pytest.Item, mutant: str, why: list[str]) -> bool:
    """Run one test (`mutant` "" for the real code): did it fail? Its failures go to `why`."""
    os.environ[MUTANT_ENV] = mutant
    try:
        item.session._setupstate.teardown_exact(item)  # leave another module's fixtures behind
        reports = runtestprotocol(item, nextitem=_Parent(item), log=False)  # type: ignore[arg-type]
    finally:
        os.environ[MUTANT_ENV] = ""
    why[:] = [str(r.longrepr)[-1500:] for r in reports if r.failed]
    return any(r.failed for r in reports)


def _append(path: str, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


class Prescreen:
    def __init__(self, plan: Plan, out: str, limit: int) -> None:
        self.plan, self.out, self.limit = plan, out, limit
        self.passes: dict[str, bool] = {}  # test -> passes on the real code

    def done(self) -> set[str]:
        """Mutants with a verdict; a mutant a hung process was on is recorded as a timeout."""
        seen = set()
        if os.path.exists(self.out):
            with open(self.out) as f:
                seen = {json.loads(line)["mutant"] for line in f if line.strip()}
        if os.path.exists(self.out + ".started"):
            last = Path(self.out + ".started").read_text().strip()
            if last and last not in seen:
                _append(self.out, {"mutant": last, "verdict": "timeout", "by": "the process hung"})
                seen.add(last)
        return seen

    def verdict(self, mutant: str, items: list[pytest.Item]) -> dict[str, Any]:
        verdict, by, ran = ("survived" if items else "no_tests"), None, 0
        why: list[str] = []
        for item in items:
            if item.nodeid not in self.passes:
                self.passes[item.nodeid] = not _fails(item, "", why)
                if not self.passes[item.nodeid]:
                    _append(self.out + ".basefail", {"test": item.nodeid, "why": why})
            if not self.passes[item.nodeid]:
                continue
            ran += 1
            signal.alarm(self.limit)
            try:
                failed = _fails(item, mutant, why)
            except _OverTime:
                return {"verdict": "timeout", "by": item.nodeid, "ran": ran}
            finally:
                signal.alarm(0)
            if failed and _fails(item, "", why):
                verdict, by = "unrelated", item.nodeid  # not the mutation's doing: go on
            elif failed:
                return {"verdict": "killed", "by": item.nodeid, "ran": ran}
        return {"verdict": verdict, "by": by, "ran": ran}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        by_id = {i.nodeid: i for i in session.items}
        signal.signal(signal.SIGALRM, _alarm)
        done = self.done()
        for mutant, ids in self.plan:
            if mutant in done:
                continue
            items = [by_id[n] for n in ids if n in by_id]
            Path(self.out + ".started").write_text(mutant)
            started = time.monotonic()
            result = self.verdict(mutant, items)
            _append(self.out, {"mutant": mutant, **result, "s": round(time.monotonic() - started, 1)})
        session._setupstate.teardown_exact(None)
        return True


def pytest_configure(config: pytest.Config) -> None:
    plan_path, out = os.environ.get("PRESCREEN_PLAN"), os.environ.get("PRESCREEN_OUT")
    if plan_path and out:
        with open(plan_path) as f:
            plan = [(m, list(t)) for m, t in json.load(f)]
        limit = int(os.environ.get("PRESCREEN_LIMIT", "60"))
        config.pluginmanager.register(Prescreen(plan, out, limit), "prescreen")


def make_plan(stats_path: str, budget: float, patterns: list[str], max_tests: int = 30) -> Plan:
    """Every mutant whose name matches a glob, with the tests that cover its function (mutmut's
    stats; the PostgreSQL 15 twins left out), fastest first, until their recorded durations
    pass `budget` seconds or `max_tests` are chosen (nine kills in ten came from the first
    nine tests, 2026-11-30)."""
    with open(stats_path) as f:
        stats = json.load(f)
    covering: dict[str, list[str]] = stats["tests_by_mangled_function_name"]
    duration = {k: float(v) for k, v in stats["duration_by_test"].items()}
    names = []
    for meta in glob.glob("src/**/*.meta", recursive=True):
        with open(meta) as f:
            names += list(json.load(f)["exit_code_by_key"])
    plan: Plan = []
    for name in sorted(names, key=lambda n: (n.rsplit("__mutmut_", 1)[0], int(n.rsplit("_", 1)[1]))):
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        tests = sorted((t for t in covering.get(name.rsplit("__mutmut_", 1)[0], []) if "[pg15]" not in t),
                       key=lambda t: duration.get(t, 0.0))  # fmt: skip
        chosen: list[str] = []
        spent = 0.0
        for t in tests:
            if spent > budget or len(chosen) >= max_tests:
                break
            chosen.append(t)
            spent += duration.get(t, 0.0)
        plan.append((name, chosen))
    return plan


if __name__ == "__main__" and sys.argv[1:2] == ["plan"]:
    json.dump(make_plan("mutmut-stats.json", float(sys.argv[2]), sys.argv[3:]), sys.stdout)
elif __name__ == "__main__" and sys.argv[1:2] == ["files"]:  # the test files a plan needs
    with open(sys.argv[2]) as f:
        print(" ".join(sorted({t.split("::")[0] for _, tests in json.load(f) for t in tests})))
