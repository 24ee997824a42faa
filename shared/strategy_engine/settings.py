"""Settings from the environment and a `.env` file.

Secrets are `SecretStr`: their repr and str are masked, so a settings object can be logged or
put in an error without leaking a key. `database_url` is a secret too (it carries a password).

Alpaca keys: ALPACA_API_KEY / ALPACA_SECRET_KEY are the default pair; a broker account whose
`credentials_ref` is REF trades with ALPACA_<REF>_API_KEY / ALPACA_<REF>_SECRET_KEY instead
(the database holds only the name REF, never a key).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

from dotenv import dotenv_values
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from strategy_engine.core.errors import InputError

PAPER_BASE_URL = "https://paper-api.alpaca.markets"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: SecretStr | None = Field(default=None, description="Postgres URL; unset -> embedded")
    alpaca_api_key: SecretStr | None = None
    alpaca_secret_key: SecretStr | None = None
    alpaca_base_url: str = PAPER_BASE_URL
    alpaca_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    alpaca_retry_budget_seconds: float = Field(default=20.0, gt=0, le=50)
    engine_http_secret: SecretStr | None = None
    engine_trust_platform_auth: bool = Field(
        default=False, description="Cloud Run IAM / Lambda AWS_IAM authenticates callers"
    )
    supabase_url: str | None = None
    supabase_service_role_key: SecretStr | None = None
    supabase_report_bucket: str = "backfill-reports"
    embedded_data_dir: str | None = Field(default=None, description="embedded Postgres folder")
    backfill_max_days: int = Field(default=400, gt=0)
    backfill_max_symbol_minutes: int = Field(
        default=2_000_000, gt=0, description="symbols x session minutes one backfill may replay"
    )
    # A run `running` for longer than this is closed as abandoned by the next tick. It must exceed
    # the timeout of every function that runs ticks, with a margin (a clock skew, a slow COMMIT):
    # the default is twice the longest function timeout we deploy (900 s); the stacks set
    # twice their own (infra/gcp/main.tf, infra/aws/main.tf).
    engine_run_timeout_seconds: float = Field(
        default=1800, gt=0, description="2 x the longest timeout of a function that ticks"
    )
    max_tick_lag_seconds: float = Field(
        default=90, ge=0, description="a real-broker tick for an older minute is late; 0 turns it off"
    )
    tick_deadline_seconds: float = Field(
        default=45, gt=0, le=600, description="nothing new is sent this long after an invocation starts"
    )
    db_lock_timeout_seconds: float = Field(
        default=5, gt=0, le=60, description="a strategy waiting this long for its account answers busy"
    )
    db_idle_timeout_seconds: float = Field(
        default=60, gt=0, le=600, description="the server ends a transaction idle this long (a frozen worker)"
    )
    db_prepared_statements: bool = Field(
        default=False,
        description="prepare statements run often: only for a direct connection, never a transaction pooler",
    )
    manual_max_qty: float = Field(default=10_000, gt=0, description="the largest manual order, shares")
    manual_duplicate_window_minutes: float = Field(
        default=10, ge=0, description="a default-id manual order repeating one this recent is refused; 0: off"
    )
    manual_max_bar_age_seconds: float = Field(
        default=120, gt=0, description="a manual order needs a price at most this old"
    )


ENV_FILE_SETTING = "STRATEGY_ENGINE_ENV_FILE"


def env_file() -> str | None:
    """The dotenv file settings fall back to: `.env` in the working directory, or the file
    STRATEGY_ENGINE_ENV_FILE names (set but empty: none, e.g. the tests' CLI runs)."""
    named = os.environ.get(ENV_FILE_SETTING)
    return (named if named is not None else Settings.model_config.get("env_file")) or None  # type: ignore[return-value]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings(_env_file=env_file())


CREDENTIALS_REF = re.compile(r"[A-Z][A-Z0-9_]{0,39}")  # also a CHECK on broker_accounts
_CREDENTIAL_SETTING = re.compile(r"ALPACA_[A-Z][A-Z0-9_]{0,39}_(API|SECRET)_KEY")


def credential_names(ref: str | None) -> tuple[str, str]:
    """(key id name, secret name) of the pair `ref` names; None -> the default pair.

    Raises InputError when `ref` is not upper-case letters, digits and _ (at most 40).
    """
    if ref is None:
        return "ALPACA_API_KEY", "ALPACA_SECRET_KEY"
    if not CREDENTIALS_REF.fullmatch(ref):
        raise InputError(f"invalid credentials_ref {ref!r}: expected A-Z, 0-9 and _ (e.g. PAPER2)")
    return f"ALPACA_{ref}_API_KEY", f"ALPACA_{ref}_SECRET_KEY"


def is_credential_setting(name: str) -> bool:
    """True for ALPACA_<REF>_API_KEY / ALPACA_<REF>_SECRET_KEY (e.g. keys in a Lambda secret)."""
    return bool(_CREDENTIAL_SETTING.fullmatch(name.upper()))


def alpaca_keys(settings: Settings, ref: str | None) -> tuple[SecretStr, SecretStr]:
    """The key pair `ref` names, from the environment, else `.env`; empty when unset."""
    if ref is None:
        return settings.alpaca_api_key or SecretStr(""), settings.alpaca_secret_key or SecretStr("")
    names = credential_names(ref)
    missing = [n for n in names if not os.environ.get(n)]
    where = env_file()
    dotenv = dotenv_values(where) if missing and where else {}
    return tuple(SecretStr(os.environ.get(n) or dotenv.get(n) or "") for n in names)  # type: ignore[return-value]
