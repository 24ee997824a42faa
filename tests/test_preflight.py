"""The preflight has one source (infra/supabase/preflight.sql); every migration file that changes
tables opens with a copy of it, and every file that creates tables closes with the marking block.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from strategy_engine.store.migrations import default_dir, discover, preflight
from tests.conftest import REPO

SYNC = REPO / "infra" / "supabase" / "sync_preflight.py"
SECTIONS = REPO / "infra" / "supabase" / "preflight.sql"


def _check(script: Path = SYNC) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60, check=False
    )


def test_every_file_that_changes_tables_carries_the_current_preflight() -> None:
    found = discover(default_dir())
    source = SECTIONS.read_text().split("-- section: preflight\n")[1].split("-- section: mark\n")[0]
    assert preflight(found[0]) is None  # the roles file touches no table
    assert [preflight(m) for m in found[1:]] == [source] * (len(found) - 1)
    creating = [m.path.name for m in found if "-- mark: begin" in m.path.read_text()]
    assert creating == [m.path.name for m in found if "create table" in m.path.read_text()]
    assert _check().returncode == 0


def test_a_copy_edited_by_hand_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "supabase"
    (copy / "migrations").mkdir(parents=True)
    for f in (SYNC, SECTIONS):
        (copy / f.name).write_text(f.read_text())
    for m in discover(default_dir()):
        text = m.path.read_text()
        (copy / "migrations" / m.path.name).write_text(text.replace("problems[1] ||", "problems[2] ||"))
    result = _check(copy / SYNC.name)
    assert result.returncode == 1
    names = [m.path.name for m in discover(default_dir())[1:]]
    assert result.stderr == f"preflight copies differ from preflight.sql in: {', '.join(names)}\n"
    subprocess.run([sys.executable, str(copy / SYNC.name)], check=True, timeout=60)
    for m in discover(default_dir()):
        assert (copy / "migrations" / m.path.name).read_text() == m.path.read_text()
