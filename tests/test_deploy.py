"""deploy.sh, checked without a cloud account and without the network.

- `--dry-run` prints every step (build, migrations, terraform init/plan/apply, smoke check)
  for both clouds, executes none of them (the cloud tools on PATH are tripwires that record any
  call), creates no file, and prints no secret.
- A missing tool or setting is one readable line each and a non-zero exit, before anything runs.
- The Google Cloud source archive has what Cloud Functions expects (main.py exporting the four
  targets, requirements.txt pinned with hashes) and is byte-for-byte reproducible.
- The Lambda zip built by deploy.sh imports and answers an EventBridge Scheduler event against
  the test Postgres. Choice, for speed and no network: the zip is built with `--no-deps` (our
  code only) and its dependencies come from the test venv, restricted to the distributions in
  requirements-runtime.lock, with `python -S` so nothing else on the venv's path can hide a
  missing runtime dependency. The full hash-checked `pip install` for Lambda's platform is
  proven by the dry-run listing (and was run by hand: see the report).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strategy_engine.store import connect
from tests.conftest import DAY, seed

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy.sh"
BASH = "/bin/bash"
TOOLS = ("terraform", "gcloud", "aws", "supabase", "psql")
SECRETS = {
    "TF_VAR_database_url": "postgresql://postgres.abcdef:pw-5ecret-db@pooler.example.test:6543/postgres",
    "TF_VAR_alpaca_api_key": "alpaca-key-id-0001",
    "TF_VAR_alpaca_secret_key": "alpaca-secret-with space 'quote'",
    "TF_VAR_engine_http_secret": "bearer-secret-0002",
    "SUPABASE_DB_URL": "postgresql://postgres:pw-5ecret-push@db.example.test:5432/postgres",
}
SETTINGS = {"gcp": {**SECRETS, "GCP_PROJECT": "demo-project"}, "aws": dict(SECRETS)}


@pytest.fixture
def tripwires(tmp_path: Path) -> Path:
    """A PATH of our own: bash and python, plus cloud tools that only record being called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to(BASH)
    (bin_dir / "python3").symlink_to(sys.executable)
    for tool in TOOLS:
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/called.log"\nexit 97\n')
        stub.chmod(0o755)
    return bin_dir


def deploy(
    *args: str,
    path: Path | str,
    settings: dict[str, str],
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    # the tripwire folder stands in for node_modules/.bin, where the pinned Supabase CLI lives
    env = {"PATH": str(path), "HOME": str(Path.home()), "SUPABASE_CLI_DIR": str(path), **settings}
    return subprocess.run(
        [BASH, str(DEPLOY), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or REPO,
        timeout=120,
        check=False,
    )


# ---- dry run --------------------------------------------------------------------------------

EXPECTED_STEPS = {
    "gcp": [
        "+ cp -R {repo}/shared/strategy_engine {build}/gcp/src/strategy_engine",
        "+ cp -R {repo}/functions {build}/gcp/src/functions",
        "+ cp {repo}/requirements-runtime.lock {build}/gcp/src/requirements.txt",
        "+ zip_dir {build}/gcp/src {build}/gcp/function-source.zip",
        "+ gcloud auth application-default print-access-token",
        # google_project_service needs these two already on: a fresh project cannot enable them
        # from inside the stack.
        "+ gcloud services enable cloudresourcemanager.googleapis.com serviceusage.googleapis.com"
        " --project demo-project",
        '+ supabase db push --workdir {repo}/infra --db-url "${{SUPABASE_DB_URL}}"',
        "+ terraform -chdir={repo}/infra/gcp init -input=false",
        "+ terraform -chdir={repo}/infra/gcp plan -input=false -out={build}/gcp.tfplan"
        " -var project_id=demo-project -var region=us-east4"
        " -var source_zip={build}/gcp/function-source.zip",
        "+ terraform -chdir={repo}/infra/gcp apply -input=false {build}/gcp.tfplan",
        "+ gcloud scheduler jobs describe strategy-engine-tick --project demo-project --location us-east4",
    ],
    "aws": [
        "--require-hashes --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64",
        "--python-version 3.12 --target {build}/aws/package -r {repo}/requirements-runtime.lock",
        "+ cp -R {repo}/shared/strategy_engine {build}/aws/package/strategy_engine",
        "+ cp -R {repo}/functions {build}/aws/package/functions",
        "+ zip_dir {build}/aws/package {build}/aws/lambda.zip",
        "+ aws sts get-caller-identity",
        '+ supabase db push --workdir {repo}/infra --db-url "${{SUPABASE_DB_URL}}"',
        "+ terraform -chdir={repo}/infra/aws init -input=false",
        "+ terraform -chdir={repo}/infra/aws plan -input=false -out={build}/aws.tfplan"
        " -var region=us-east-1 -var lambda_zip={build}/aws/lambda.zip",
        "+ terraform -chdir={repo}/infra/aws apply -input=false {build}/aws.tfplan",
        "+ aws lambda get-function-configuration --region us-east-1 --function-name strategy-engine",
    ],
}


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_dry_run_prints_every_step_and_executes_none(cloud: str, tripwires: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    result = deploy(
        "--cloud", cloud, "--dry-run", "--build-dir", str(build), path=tripwires, settings=SETTINGS[cloud]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    positions = []
    for expected in EXPECTED_STEPS[cloud]:
        line = expected.format(repo=REPO, build=build)
        assert line in out, f"missing step: {line}\n{out}"
        positions.append(out.index(line))
    assert positions == sorted(positions), "steps out of order"
    assert out.rstrip().endswith("dry run complete, nothing executed")
    assert not (tmp_path / "called.log").exists(), (tmp_path / "called.log").read_text()
    assert not build.exists()


@pytest.mark.parametrize("cloud", ["gcp", "aws"])
def test_no_secret_is_ever_printed(cloud: str, tripwires: Path, tmp_path: Path) -> None:
    result = deploy(
        "--cloud", cloud, "--dry-run", "--supabase-cron", "--build-dir", str(tmp_path), path=tripwires,
        settings=SETTINGS[cloud],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = result.stdout + result.stderr
    for name, value in SECRETS.items():
        assert value not in printed, name
        for fragment in re.findall(r"pw-5ecret-\w+|secret-0002|key-id-0001", value):
            assert fragment not in printed, name
    assert '+ psql "${SUPABASE_DB_URL}" -v ON_ERROR_STOP=1' in result.stdout


@pytest.mark.parametrize(
    ("cloud", "missing"),
    [(cloud, name) for cloud, settings in SETTINGS.items() for name in settings],
)
def test_a_missing_setting_is_one_readable_line(cloud: str, missing: str, tripwires: Path) -> None:
    settings = {k: v for k, v in SETTINGS[cloud].items() if k != missing}
    result = deploy("--cloud", cloud, "--dry-run", path=tripwires, settings=settings)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"deploy.sh: missing setting {missing} (")


@pytest.mark.parametrize(
    ("cloud", "tool"),
    [("gcp", "terraform"), ("gcp", "gcloud"), ("gcp", "supabase"), ("aws", "terraform"), ("aws", "aws")],
)
def test_a_missing_tool_is_one_readable_line(cloud: str, tool: str, tripwires: Path) -> None:
    (tripwires / tool).unlink()
    result = deploy("--cloud", cloud, "--dry-run", path=tripwires, settings=SETTINGS[cloud])
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"deploy.sh: missing tool {tool} (")


def test_everything_missing_is_one_line_each(tripwires: Path) -> None:
    for tool in ("terraform", "gcloud", "supabase"):
        (tripwires / tool).unlink()
    result = deploy("--cloud", "gcp", "--dry-run", path=tripwires, settings={})
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 3 + len(SETTINGS["gcp"]), result.stderr
    assert all(line.startswith("deploy.sh: missing ") for line in lines)


def test_skip_db_push_needs_neither_the_supabase_cli_nor_its_url(tripwires: Path) -> None:
    (tripwires / "supabase").unlink()
    settings = {k: v for k, v in SETTINGS["aws"].items() if k != "SUPABASE_DB_URL"}
    result = deploy("--cloud", "aws", "--dry-run", "--skip-db-push", path=tripwires, settings=settings)
    assert result.returncode == 0, result.stderr
    assert "supabase db push" not in result.stdout


@pytest.mark.parametrize("args", [["--cloud", "azure"], ["--frobnicate"], ["--cloud"]])
def test_bad_arguments_are_one_readable_line(args: list[str], tripwires: Path) -> None:
    result = deploy(*args, path=tripwires, settings={})
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("deploy.sh: ")


def test_apply_without_a_terminal_or_auto_approve_is_refused() -> None:
    text = DEPLOY.read_text()
    assert "refusing to apply without a terminal to confirm on" in text
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text


# ---- the lock the packages are built from ---------------------------------------------------


_REQUIREMENT = re.compile(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def _requirements(path: Path) -> set[tuple[str, str, str]]:
    """(name, version, environment marker) of every pinned requirement."""
    found = set()
    for line in path.read_text().splitlines():
        m = _REQUIREMENT.match(line)
        if m:
            found.add((m.group(1).lower(), m.group(2), m.group(3) or ""))
    return found


def _pins(path: Path) -> dict[str, str]:
    return {name: version for name, version, _ in _requirements(path)}


def test_runtime_lock_is_hashed_tested_and_lean() -> None:
    runtime_lock = REPO / "requirements-runtime.lock"
    runtime = _requirements(runtime_lock)
    # Every runtime pin (marker included: the universal lock picks per Python version) is the
    # development lock's, i.e. what the test suite runs with on that Python.
    assert runtime - _requirements(REPO / "requirements.lock") == set()
    text = runtime_lock.read_text()
    assert text.count("==") == len(runtime)
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    for lock in (runtime_lock, REPO / "requirements.lock"):
        assert not re.search(r"--(extra-)?index-url|--find-links|https?://", lock.read_text())
    # Development and CLI-only tools stay out of the functions.
    names = {name for name, _, _ in runtime}
    assert not {"pytest", "mypy", "ruff", "moto", "python-hcl2", "pgserver", "typer"} & names
    # Only the CLI's backfill report draws charts: matplotlib (~70 MB with its fonts) stays out.
    assert not {"matplotlib", "fonttools", "pillow", "kiwisolver"} & names


# ---- real builds ----------------------------------------------------------------------------


def _build(cloud: str, build_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = deploy(
        "--cloud",
        cloud,
        "--build-only",
        "--build-dir",
        str(build_dir),
        *extra,
        path=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        settings={"PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.skipif(not (REPO / "functions/main.py").exists(), reason="functions/main.py is not written yet")
def test_gcp_source_archive_is_what_cloud_functions_expects(tmp_path: Path) -> None:
    _build("gcp", tmp_path / "a")
    _build("gcp", tmp_path / "b")
    first, second = (tmp_path / d / "gcp/function-source.zip" for d in "ab")
    assert first.read_bytes() == second.read_bytes()  # reproducible: no spurious redeploys
    with zipfile.ZipFile(first) as zf:
        names = set(zf.namelist())
        assert {"main.py", "requirements.txt", "functions/main.py", "strategy_engine/engine.py"} <= names
        assert any(re.fullmatch(r"strategy_engine/migrations/\d{14}_\w+\.sql", n) for n in names)
        assert not any("__pycache__" in n for n in names)
        assert zf.read("requirements.txt") == (REPO / "requirements-runtime.lock").read_bytes()
        main = zf.read("main.py").decode()
    assert "from functions.main import backfill, health, tick, webhook" in main


GCP_PROBE = """
import json, sys
from functions_framework import create_app
import main
minute = sys.argv[1]
apps = {t: create_app(target=t, source="main.py") for t in ("tick", "backfill", "webhook", "health")}
health = apps["health"].test_client().get("/")
# Exactly what infra/gcp/scheduler.tf makes Cloud Scheduler send (the OIDC check is Cloud Run's).
tick = apps["tick"].test_client().post(
    "/", data=b"{}", headers={"Content-Type": "application/json", "X-CloudScheduler-ScheduleTime": minute}
)
print(json.dumps({"main": main.__file__, "health": health.status_code, "tick": tick.status_code,
                  "tick_body": tick.get_json()}))
"""


@pytest.mark.skipif(not (REPO / "functions/main.py").exists(), reason="functions/main.py is not written yet")
def test_gcp_source_archive_answers_the_scheduler_request(
    tmp_path: Path, lambda_package: tuple[Path, Path], db_url: str
) -> None:
    """Cloud Functions' loader (functions-framework) finds the four targets in the archive's
    main.py, and the tick answers the scheduler job's request for its minute."""
    _build("gcp", tmp_path)
    source = tmp_path / "src"
    with zipfile.ZipFile(tmp_path / "gcp/function-source.zip") as zf:
        zf.extractall(source)
    _, site = lambda_package
    with connect(db_url) as s:
        seed(s)
    minute = f"{DAY.isoformat()}T14:00:00Z"  # 10:00 in New York, inside the session
    result = _probe(GCP_PROBE, minute, code=source, site=site, database_url=db_url)
    assert Path(result["main"]).is_relative_to(source)
    assert result["health"] == 200
    assert result["tick"] == 200, result["tick_body"]
    assert result["tick_body"]["trigger"] == "cloud_scheduler"
    assert result["tick_body"]["minute"] == "2025-06-13T14:00:00+00:00"
    assert _runs_at(db_url, minute) == 1


def _probe(script: str, arg: str, *, code: Path, site: Path, database_url: str) -> dict[str, Any]:
    """Run `script` on exactly the deployed code plus the runtime dependencies (`-S`: nothing
    else from the venv), as the platform would; its last stdout line is a JSON answer."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(Path.home()),
        "PYTHONPATH": f"{code}:{site}",
        "DATABASE_URL": database_url,
        "ENGINE_TRUST_PLATFORM_AUTH": "true",
    }
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, arg],
        capture_output=True,
        text=True,
        env=env,
        cwd=code,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def _runs_at(database_url: str, minute: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("select count(*) from engine_runs where minute = %s", (minute,)).fetchone()
    assert row is not None
    return int(row[0])


def _runtime_site(target: Path) -> Path:
    """The test venv's files of exactly the distributions in requirements-runtime.lock."""
    for name in _pins(REPO / "requirements-runtime.lock"):
        dist = importlib.metadata.distribution(name)
        for file in dist.files or []:
            if file.parts[0] == "..":  # console scripts, outside site-packages
                continue
            source = Path(str(dist.locate_file(file)))
            link = target / file
            if source.exists() and not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source)
    return target


@pytest.fixture(scope="session")
def lambda_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the zip unpacked as Lambda unpacks it, the runtime dependencies): built once."""
    root = tmp_path_factory.mktemp("lambda")
    _build("aws", root / "build", "--no-deps")
    unpacked = root / "task"
    with zipfile.ZipFile(root / "build/aws/lambda.zip") as zf:
        zf.extractall(unpacked)
    return unpacked, _runtime_site(root / "site")


HANDLER_PROBE = """
import json, sys
import functions.lambda_handler as entry
import strategy_engine
result = entry.handler(json.loads(sys.argv[1]), None)
heavy = sorted(m for m in ("pandas", "numpy", "exchange_calendars", "matplotlib", "flask") if m in sys.modules)
print(json.dumps({"result": result, "entry": entry.__file__, "library": strategy_engine.__file__,
                  "heavy": heavy}, default=str))
"""


@pytest.mark.skipif(
    not (REPO / "functions/lambda_handler.py").exists(),
    reason="functions/lambda_handler.py is not written yet (issue 5)",
)
def test_lambda_zip_answers_a_scheduled_event(lambda_package: tuple[Path, Path], db_url: str) -> None:
    unpacked, site = lambda_package
    with connect(db_url) as s:
        seed(s)
    minute = f"{DAY.isoformat()}T14:00:00Z"  # 10:00 in New York, inside the session
    event = {"source": "scheduler", "minute": minute}  # infra/aws/scheduler.tf's input, rendered
    answer = _probe(HANDLER_PROBE, json.dumps(event), code=unpacked, site=site, database_url=db_url)
    assert Path(answer["entry"]).is_relative_to(unpacked), "imported the repo's code, not the zip's"
    assert Path(answer["library"]).is_relative_to(unpacked)
    reply = answer["result"]
    assert reply["status"] == "ok", reply
    assert reply["trigger"] == "eventbridge"
    assert reply["minute"] == "2025-06-13T14:00:00+00:00"
    assert _runs_at(db_url, minute) == 1
    assert answer["heavy"] == [], "a tick through the Lambda handler imported these"


def test_the_supabase_cli_is_the_one_pinned_in_node_modules(tripwires: Path) -> None:
    (tripwires / "supabase").unlink()  # none on PATH: deploy.sh finds node_modules/.bin/supabase
    env = {"PATH": str(tripwires), "HOME": str(Path.home()), **SETTINGS["aws"]}
    result = subprocess.run(
        [BASH, str(DEPLOY), "--cloud", "aws", "--dry-run"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert (REPO / "node_modules" / ".bin" / "supabase").is_file(), "make test runs npm ci"
    assert result.returncode == 0, result.stderr
    assert "+ supabase db push --workdir" in result.stdout
