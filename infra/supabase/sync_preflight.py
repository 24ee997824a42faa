"""Copy the sections of infra/supabase/preflight.sql into the migration files that carry them.

    python3 infra/supabase/sync_preflight.py           # rewrite the copies
    python3 infra/supabase/sync_preflight.py --check   # exit 1 naming each file whose copy differs

A file carries a section between `-- <name>: begin ...` and `-- <name>: end` lines (sections:
`preflight`, `mark`). Only the text between those lines is replaced. Edit preflight.sql, run
this, and commit both: a file already applied somewhere is not run again there, which is why
every pending file runs the checks itself.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "preflight.sql"
MIGRATIONS = HERE / "migrations"


def sections(text: str) -> dict[str, str]:
    """{name: body} of the `-- section: <name>` parts of preflight.sql (body ends with a newline)."""
    parts = re.split(r"^-- section: (\w+)\n", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def synced(text: str, wanted: dict[str, str]) -> str:
    for name, body in wanted.items():
        pattern = re.compile(rf"(^-- {name}: begin[^\n]*\n).*?(^-- {name}: end$)", re.M | re.S)
        text = pattern.sub(r"\g<1>" + body.replace("\\", "\\\\") + r"\g<2>", text)
    return text


def main(argv: list[str]) -> int:
    wanted = sections(SOURCE.read_text(encoding="utf-8"))
    stale = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        new = synced(text, wanted)
        if new != text:
            stale.append(path.name)
            if "--check" not in argv:
                path.write_text(new, encoding="utf-8")
    if stale and "--check" in argv:
        print(f"preflight copies differ from preflight.sql in: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
