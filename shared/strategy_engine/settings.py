"""Settings from the environment and a `.env` file.

Secrets are `SecretStr`: their repr and str are masked, so a settings object can be logged or
put in an error without leaking a key. `database_url` is a secret too (it carries a password).
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
