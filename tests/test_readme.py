"""The README's command table lists exactly the commands of the typer app."""

from __future__ import annotations

import re

import typer
from typer.core import TyperGroup

from strategy_engine.cli.app import app
from tests.conftest import REPO


def _app_commands() -> set[str]:
    """Every leaf command path of the app, e.g. 'strategy set', 'backfill' (a group that runs)."""
    out: set[str] = set()

    def walk(cmd: object, path: str) -> None:
        if isinstance(cmd, TyperGroup):
            if cmd.invoke_without_command and path:
                out.add(path)
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            out.add(path)

    walk(typer.main.get_command(app), "")
    return out


def _readme_commands() -> set[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## The command line", 1)[1].split("```", 2)[1]
    out: set[str] = set()
    for line in block.splitlines():
        words = line.split("#")[0].split()
        if len(words) < 2 or words[0] != "strategy-engine" or words[1].startswith("-"):
            continue
        first, second = words[1], words[2] if len(words) > 2 else ""
        if re.fullmatch(r"[a-z-]+(\|[a-z-]+)+", second):  # pause|resume|run-now|status
            out |= {f"{first} {alt}" for alt in second.split("|")}
        elif re.fullmatch(r"[a-z][a-z-]*", second):
            out.add(f"{first} {second}")
        else:
            out.add(first)
    return out


def test_readme_lists_every_command_and_no_other() -> None:
    readme, cli = _readme_commands(), _app_commands()
    assert readme == cli, f"only in README: {sorted(readme - cli)}; only in the app: {sorted(cli - readme)}"
