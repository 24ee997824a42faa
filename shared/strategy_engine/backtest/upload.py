"""Backfill reports into Supabase Storage, so a dashboard can show them.

A cloud function's disk does not last; the Storage bucket does. Upload goes through the
`supabase` client (storage3) with the service-role key, `upsert` on, so a retried upload of
the same run replaces its object. Every failure of the client or the network becomes one
`Unavailable` with a one-line message (never the key).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import httpx

from strategy_engine.core.errors import Unavailable
from strategy_engine.settings import Settings

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png"}
TIMEOUT_SECONDS = 30.0


def configured(settings: Settings) -> bool:
    return bool(settings.supabase_url and settings.supabase_service_role_key)


def upload(settings: Settings, files: Sequence[Path], prefix: str) -> list[str]:
    """Upload each file as `<prefix>/<name>` into the report bucket; return their keys (`bucket/path`)."""
    from supabase import ClientOptions, StorageException, SupabaseException, create_client

    if not settings.supabase_url or settings.supabase_service_role_key is None:
        raise Unavailable("report upload: SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are not both set")
    key = settings.supabase_service_role_key.get_secret_value()
    try:
        with httpx.Client(timeout=TIMEOUT_SECONDS) as http:
            client = create_client(settings.supabase_url, key, options=ClientOptions(httpx_client=http))
            bucket = client.storage.from_(settings.supabase_report_bucket)
            keys = []
            for path in files:
                options = {
                    "content-type": CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
                    "upsert": "true",
                }
                keys.append(bucket.upload(f"{prefix}/{path.name}", path.read_bytes(), options).full_path)  # type: ignore[arg-type]
            return keys
    except (StorageException, SupabaseException, httpx.HTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unavailable(
            f"report upload to bucket {settings.supabase_report_bucket!r} failed: {first}"
        ) from None
