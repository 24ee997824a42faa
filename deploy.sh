#!/usr/bin/env bash
# One-command deploy of the strategy engine.
#
#   ./deploy.sh [--cloud gcp|aws] [--dry-run] [--auto-approve] [--build-only] [--no-deps]
#               [--skip-db-push] [--supabase-cron] [--build-dir DIR]
#
# Steps: check tools and settings -> build the package -> `supabase db push` (migrations) ->
# terraform init / plan / apply -> a smoke check of what was deployed. --dry-run prints every
# step and executes none (a preflight: missing tools and settings are still reported).
#
# Settings come from the environment (one readable line for each one missing):
#   TF_VAR_database_url, TF_VAR_alpaca_api_key, TF_VAR_alpaca_secret_key, TF_VAR_engine_http_secret
#                       the function's secrets; Terraform writes them to Secret Manager /
#                       Secrets Manager through write-only arguments (never into its state)
#   SUPABASE_DB_URL     Postgres URL for `supabase db push` (direct or session pooler, port 5432)
#   TF_VAR_alert_email  (optional) e-mail the alarms notify: an SNS subscription on AWS (confirm the
#                       message SNS sends), a Monitoring e-mail channel on GCP; GCP also takes
#                       TF_VAR_alert_notification_channels='["projects/P/notificationChannels/ID"]'
#   GCP_PROJECT         (gcp) project id; GOOGLE_CLOUD_PROJECT is accepted too
#   GCP_REGION          (gcp, optional) default us-east4
#   AWS_REGION          (aws, optional) default us-east-1; credentials as the aws CLI finds them
#   PYTHON              (optional) interpreter used to build; default .venv/bin/python, else python3
#
# No secret is ever printed: secrets reach Terraform only through the environment (TF_VAR_*),
# and every printed command shows a secret value as the variable holding it ("${SUPABASE_DB_URL}"
# for the supabase and psql URLs, the only secrets passed as arguments).
set -euo pipefail

ROOT="${BASH_SOURCE[0]%/*}"
[[ "$ROOT" == "${BASH_SOURCE[0]}" ]] && ROOT="."
ROOT="$(cd "$ROOT" && pwd)"

CLOUD="gcp"
DRY_RUN=0
AUTO_APPROVE=0
BUILD_ONLY=0
NO_DEPS=0
SKIP_DB_PUSH=0
SUPABASE_CRON=0
BUILD_DIR="$ROOT/build"
# pip evaluates the lock's environment markers for the interpreter that runs it (whatever
# --python-version says), so the default is the project's venv: the Python the tests run on,
# whose markers select exactly the tested versions.
if [[ -z "${PYTHON:-}" && -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
fi
PYTHON="${PYTHON:-python3}"
# The Supabase CLI is the one package-lock.json pins (`npm ci`), never whichever is on PATH.
SUPABASE_CLI_DIR="${SUPABASE_CLI_DIR:-$ROOT/node_modules/.bin}"
PATH="$SUPABASE_CLI_DIR:$PATH"
NAME_PREFIX="${TF_VAR_name_prefix:-strategy-engine}"
SECRET_VARS=(TF_VAR_database_url TF_VAR_alpaca_api_key TF_VAR_alpaca_secret_key TF_VAR_engine_http_secret SUPABASE_DB_URL)
# Lambda runs python3.12 on Amazon Linux 2023 (glibc 2.34), so wheels are fetched for that target
# whatever machine builds the zip.
LAMBDA_PYTHON_VERSION="3.12"
LAMBDA_UNZIPPED_LIMIT=$((250 * 1024 * 1024))

die() {
    printf 'deploy.sh: %s\n' "$1" >&2
    exit "${2:-2}"
}

usage() {
    sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (($#)); do
    case "$1" in
    --cloud)
        (($# >= 2)) || die "--cloud needs a value: gcp or aws"
        CLOUD="$2"
        shift 2
        ;;
    --cloud=*)
        CLOUD="${1#--cloud=}"
        shift
        ;;
    --dry-run) DRY_RUN=1 && shift ;;
    --auto-approve) AUTO_APPROVE=1 && shift ;;
    --build-only) BUILD_ONLY=1 && shift ;;
    --no-deps) NO_DEPS=1 && shift ;;
    --skip-db-push) SKIP_DB_PUSH=1 && shift ;;
    --supabase-cron) SUPABASE_CRON=1 && shift ;;
    --build-dir)
        (($# >= 2)) || die "--build-dir needs a directory"
        BUILD_DIR="$2"
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown option $1 (try --help)" ;;
    esac
done
[[ "$CLOUD" == "gcp" || "$CLOUD" == "aws" ]] || die "--cloud must be gcp or aws, not '$CLOUD'"
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR="$PWD/$BUILD_DIR"

# ---- printing and running ------------------------------------------------------------------

# The command as it will run, each secret value replaced by $NAME of the variable holding it.
show() {
    local out="" arg name value masked
    for arg in "$@"; do
        masked="$arg"
        for name in "${SECRET_VARS[@]}"; do
            value="${!name:-}"
            [[ -n "$value" ]] && masked="${masked//"$value"/\$\{$name\}}"
        done
        if [[ "$masked" != "$arg" ]]; then
            arg="\"$masked\"" # a secret: shown as the variable that holds it, expanded on paste
        elif [[ -z "$arg" || "$arg" =~ [^A-Za-z0-9_./:=@%+,-] ]]; then
            arg="'${arg//\'/\'\\\'\'}'"
        fi
        out+="${out:+ }$arg"
    done
    printf '+ %s\n' "$out"
}

run() {
    show "$@"
    ((DRY_RUN)) && return 0
    "$@"
}

# The same, with the command's standard output discarded (it may hold a token).
run_quiet() {
    show "$@"
    printf '  (output discarded)\n'
    ((DRY_RUN)) && return 0
    "$@" >/dev/null
}

step() {
    printf '\n== %s\n' "$1"
}

# ---- preflight: every missing tool and setting, one line each --------------------------------

missing=0
need_tool() {
    if ! command -v "$1" >/dev/null 2>&1; then
        printf 'deploy.sh: missing tool %s (%s)\n' "$1" "$2" >&2
        missing=1
    fi
}
need_setting() {
    if [[ -z "${!1:-}" ]]; then
        printf 'deploy.sh: missing setting %s (%s)\n' "$1" "$2" >&2
        missing=1
    fi
}

need_tool "$PYTHON" "Python 3 builds the package; set PYTHON to another interpreter"
if ((!BUILD_ONLY)); then
    need_tool terraform "install Terraform >= 1.11: https://developer.hashicorp.com/terraform/install"
    if [[ "$CLOUD" == "gcp" ]]; then
        need_tool gcloud "install the Google Cloud CLI and run: gcloud auth application-default login"
    else
        need_tool aws "install the AWS CLI and configure credentials (aws configure or AWS_PROFILE)"
    fi
    if ((!SKIP_DB_PUSH)) && [[ ! -x "$SUPABASE_CLI_DIR/supabase" ]]; then
        printf 'deploy.sh: missing tool supabase (run npm ci: package-lock.json pins the Supabase CLI; or pass --skip-db-push)\n' >&2
        missing=1
    fi
    ((SUPABASE_CRON)) && need_tool psql "install the PostgreSQL client to apply infra/supabase/cron.sql"

    need_setting TF_VAR_database_url "Postgres URL the function uses (Supabase transaction pooler, port 6543)"
    need_setting TF_VAR_alpaca_api_key "Alpaca paper API key id"
    need_setting TF_VAR_alpaca_secret_key "Alpaca paper API secret key"
    need_setting TF_VAR_engine_http_secret "bearer secret for HTTP callers, e.g. openssl rand -hex 32"
    if ((!SKIP_DB_PUSH || SUPABASE_CRON)); then
        need_setting SUPABASE_DB_URL "Postgres URL for migrations (direct or session pooler), or pass --skip-db-push"
    fi
    if [[ "$CLOUD" == "gcp" ]]; then
        GCP_PROJECT="${GCP_PROJECT:-${GOOGLE_CLOUD_PROJECT:-}}"
        need_setting GCP_PROJECT "Google Cloud project id to deploy into"
    fi
fi
((missing)) && exit 2

GCP_REGION="${GCP_REGION:-us-east4}"
AWS_REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
((DRY_RUN)) && printf 'deploy.sh: dry run for %s: printing every step, executing none\n' "$CLOUD"

# ---- build ---------------------------------------------------------------------------------

# Deterministic zip (sorted entries, fixed timestamps): the same sources give the same bytes, so
# Terraform only redeploys when the code or the dependencies change.
zip_dir() {
    "$PYTHON" - "$1" "$2" <<'PY'
import os, sys, zipfile
src, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out + ".tmp", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            info = zipfile.ZipInfo(os.path.relpath(path, src), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as fh:
                zf.writestr(info, fh.read())
os.replace(out + ".tmp", out)
PY
}

# Our code: the library (with its migrations, which it looks for next to itself) and the thin
# entry points, without caches.
copy_code() {
    local dest="$1"
    run mkdir -p "$dest"
    run cp -R "$ROOT/shared/strategy_engine" "$dest/strategy_engine"
    run cp -R "$ROOT/infra/supabase/migrations" "$dest/strategy_engine/migrations"
    run cp -R "$ROOT/functions" "$dest/functions"
    run find "$dest" -name __pycache__ -type d -prune -exec rm -rf {} +
}

check_file() {
    ((DRY_RUN)) || [[ -f "$ROOT/$1" ]] || die "$1 not found: $2"
}

write_gcp_main() {
    printf '%s\n' \
        '"""Cloud Functions loads main.py from the source root; the entry points live in functions/main.py."""' \
        '' \
        'from functions.main import backfill, health, tick, webhook' \
        '' \
        '__all__ = ["backfill", "health", "tick", "webhook"]' >"$1"
}

build_gcp() {
    local src="$BUILD_DIR/gcp/src"
    step "Build the Cloud Functions source archive ($BUILD_DIR/gcp/function-source.zip)"
    check_file functions/main.py "the functions-framework entry points"
    check_file requirements-runtime.lock "the runtime dependencies, pinned with hashes"
    run rm -rf "$src"
    copy_code "$src"
    show write_gcp_main "$src/main.py"
    ((DRY_RUN)) || write_gcp_main "$src/main.py"
    # The buildpack installs requirements.txt with pip; hashes in it make pip verify every file.
    run cp "$ROOT/requirements-runtime.lock" "$src/requirements.txt"
    run zip_dir "$src" "$BUILD_DIR/gcp/function-source.zip"
}

build_aws() {
    local pkg="$BUILD_DIR/aws/package"
    step "Build the Lambda zip ($BUILD_DIR/aws/lambda.zip)"
    check_file functions/lambda_handler.py "the Lambda entry point"
    check_file requirements-runtime.lock "the runtime dependencies, pinned with hashes"
    run rm -rf "$pkg"
    if ((NO_DEPS)); then
        printf '  (--no-deps: dependencies left out; the zip is not deployable)\n'
    else
        # Binary wheels for Lambda's platform, each checked against the lock's hashes.
        run "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile \
            --require-hashes --no-deps --only-binary=:all: \
            --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
            --implementation cp --python-version "$LAMBDA_PYTHON_VERSION" \
            --target "$pkg" -r "$ROOT/requirements-runtime.lock"
        # Lambda's limit is 250 MB unzipped and the wheels come close: drop the libraries' own
        # test suites (pandas, numpy, matplotlib; never imported at run time) and console scripts.
        run find "$pkg" -mindepth 2 -maxdepth 4 -type d -name tests -prune -exec rm -rf {} +
        run rm -rf "$pkg/bin"
    fi
    copy_code "$pkg"
    run zip_dir "$pkg" "$BUILD_DIR/aws/lambda.zip"
    if ((!DRY_RUN && !NO_DEPS)); then
        local size
        size=$(du -sb "$pkg" | cut -f1)
        ((size < LAMBDA_UNZIPPED_LIMIT)) ||
            die "the Lambda package is $((size / 1048576)) MB unzipped; Lambda's limit is 250 MB" 1
        printf '  package: %d MB unzipped\n' $((size / 1048576))
    fi
}

# ---- database ------------------------------------------------------------------------------

db_push() {
    ((SKIP_DB_PUSH)) && return 0
    step "Apply the migrations to Supabase (infra/supabase/migrations)"
    run supabase db push --workdir "$ROOT/infra" --db-url "$SUPABASE_DB_URL"
}

supabase_cron() {
    ((SUPABASE_CRON)) || return 0
    step "Schedule the tick with Supabase Cron (needs the Vault secrets, see cron.sql)"
    run psql "$SUPABASE_DB_URL" -v ON_ERROR_STOP=1 -q -f "$ROOT/infra/supabase/cron.sql"
}

# ---- terraform -----------------------------------------------------------------------------

confirm_apply() {
    ((AUTO_APPROVE || DRY_RUN)) && return 0
    [[ -t 0 ]] || die "refusing to apply without a terminal to confirm on; review the plan and pass --auto-approve" 1
    local answer
    read -r -p "Apply this plan? [y/N] " answer
    [[ "$answer" == "y" || "$answer" == "Y" || "$answer" == "yes" ]] || die "not applied" 1
}

terraform_apply() {
    local dir="$1"
    shift
    step "Terraform: infra/$CLOUD"
    run terraform -chdir="$dir" init -input=false
    # The plan file holds no secret (they are ephemeral) and lives in the git-ignored build dir.
    run mkdir -p "$BUILD_DIR"
    run terraform -chdir="$dir" plan -input=false -out="$BUILD_DIR/$CLOUD.tfplan" "$@"
    confirm_apply
    run terraform -chdir="$dir" apply -input=false "$BUILD_DIR/$CLOUD.tfplan"
}

# Terraform enables every API the stack uses (google_project_service), but that resource itself
# calls Service Usage and Resource Manager: on a fresh project those two cannot be enabled from
# inside the stack. Enabling an API that is already on is a no-op.
GCP_BOOTSTRAP_APIS=(cloudresourcemanager.googleapis.com serviceusage.googleapis.com)

deploy_gcp() {
    step "Check Google credentials"
    run_quiet gcloud auth application-default print-access-token
    step "Enable the APIs Terraform's google_project_service needs before it can run"
    run gcloud services enable "${GCP_BOOTSTRAP_APIS[@]}" --project "$GCP_PROJECT"
    db_push
    terraform_apply "$ROOT/infra/gcp" \
        -var "project_id=$GCP_PROJECT" -var "region=$GCP_REGION" \
        -var "source_zip=$BUILD_DIR/gcp/function-source.zip"
    supabase_cron
    step "Smoke check: the tick schedule exists (ENABLED or PAUSED)"
    run gcloud scheduler jobs describe "$NAME_PREFIX-tick" --project "$GCP_PROJECT" \
        --location "$GCP_REGION" --format "value(state)"
}

deploy_aws() {
    step "Check AWS credentials"
    run_quiet aws sts get-caller-identity
    db_push
    terraform_apply "$ROOT/infra/aws" \
        -var "region=$AWS_REGION" -var "lambda_zip=$BUILD_DIR/aws/lambda.zip"
    supabase_cron
    step "Smoke check: the function is Active"
    run aws lambda get-function-configuration --region "$AWS_REGION" \
        --function-name "$NAME_PREFIX" --query State --output text
}

"build_$CLOUD"
((BUILD_ONLY)) && exit 0
"deploy_$CLOUD"
printf '\ndeploy.sh: %s\n' "$( ((DRY_RUN)) && echo "dry run complete, nothing executed" || echo "deployed to $CLOUD")"
