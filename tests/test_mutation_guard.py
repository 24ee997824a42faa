"""tests/mutation_guard.py, the plugin that decides under mutmut whether a failure is a kill.

Each case is a pytest run of its own in a scratch folder, under a mutant name as mutmut sets it.
The "mutant" there is a value built when the module is imported, as `store/market`'s SQL text
is: switching `MUTANT_UNDER_TEST` off inside the process does not rebuild it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mutation_guard import UNRELATED_FAILURE

ROOT = Path(__file__).resolve().parents[1]
CONFTEST = """
from tests import mutation_guard

def pytest_configure(config):
    mutant = mutation_guard.active_mutant()
    if mutant:
        config.pluginmanager.register(mutation_guard.MutationGuard(mutant), "mutation-guard")
"""
TESTS = """
import os

# built once, at import, from the mutant switched on then (as store/market's SQL text)
TEXT = "mutated" if "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", "") else "real"

def test_reads_text_built_at_import():
    assert TEXT == "real"

def test_fails_whatever_the_code():
    assert os.environ.get("NO_SUCH_SETTING") == "set"

def test_passes():
    assert TEXT in ("real", "mutated")
"""


def _run(tmp_path: Path, *tests: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_scratch.py").write_text(TESTS)
    env = {**os.environ, "MUTANT_UNDER_TEST": "strategy_engine.x_f__mutmut_1", "PYTHONPATH": str(ROOT)}
    env.pop("NO_SUCH_SETTING", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    command += [f"--rootdir={tmp_path}", *(f"test_scratch.py::{t}" for t in tests)]
    return subprocess.run(
        command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_failure_caused_by_text_built_under_the_mutant_is_a_kill(tmp_path: Path) -> None:
    # In this process the rerun on the real code fails too (the text is still the mutant's);
    # alone, in a fresh process, it passes: the mutation caused the failure.
    done = _run(tmp_path, "test_reads_text_built_at_import", "test_passes")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "1 failed, 1 passed" in done.stdout


def test_a_test_that_fails_on_the_real_code_is_not_a_kill(tmp_path: Path) -> None:
    done = _run(tmp_path, "test_fails_whatever_the_code", "test_passes")
    assert done.returncode == UNRELATED_FAILURE, done.stdout
    assert "1 passed, 1 skipped" in done.stdout
    assert "fails on the real code too" in done.stdout or "skipped" in done.stdout


def test_a_kill_and_an_unrelated_failure_together_count_as_the_kill(tmp_path: Path) -> None:
    done = _run(tmp_path, "test_fails_whatever_the_code", "test_reads_text_built_at_import")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "1 failed, 1 skipped" in done.stdout
