"""The import-linter contracts in pyproject.toml hold, and a broken one is caught (make test runs
`lint-imports`; this proves the contracts are not vacuous)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
]


def _lint(package_parent: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"}
    return subprocess.run(LINT, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_contracts_hold_on_the_package() -> None:
    out = _lint(REPO / "shared", REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("core/risk.py", "import psycopg", "core is pure"),
        ("store/market.py", "from strategy_engine import engine", "store and brokers are adapters"),
        (
            "brokers/simulated.py",
            "from strategy_engine.backtest import replay",
            "store and brokers are adapters",
        ),
        ("seed.py", "from strategy_engine.cli import views", "nothing below the entry points"),
        ("http/api.py", "from strategy_engine.cli import options", "the HTTP API does not depend"),
    ],
)
def test_a_broken_layer_fails_the_check(tmp_path: Path, module: str, line: str, contract: str) -> None:
    shutil.copytree(REPO / "shared" / "strategy_engine", tmp_path / "pkg" / "strategy_engine")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "pkg" / "strategy_engine" / module
    target.write_text(
        target.read_text().replace(
            "from __future__ import annotations\n", f"from __future__ import annotations\n\n{line}\n", 1
        )
    )
    out = _lint(tmp_path / "pkg", tmp_path)
    assert out.returncode != 0
    assert contract in out.stdout.split("Broken contracts")[1]
