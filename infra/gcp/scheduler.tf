# The tick: Cloud Scheduler calls the tick service every minute of the trading hours in New
# York time with an OIDC token of its own service account, which may invoke that one service.

locals {
  tick_url = google_cloudfunctions2_function.engine["tick"].service_config[0].uri
}

# A gen2 function is a Cloud Run service of the same name; run.invoker on that one service is
# the whole of the scheduler's rights.
resource "google_cloud_run_v2_service_iam_member" "scheduler_invokes_tick" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.engine["tick"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

# Retries, from Cloud Scheduler's documented semantics ("Retry jobs"):
# - with both retry_count and max_retry_duration set, retries go on "until both limits are
#   reached", so neither is a cap on its own;
# - "the next scheduled execution time might be skipped if the retries continue through that
#   time", and a one-minute schedule has no time to spare;
# - an attempt fails when it is not acknowledged within attempt_deadline; a function past its
#   timeout answers 504 while its instance keeps running.
# So: every attempt ends by tick_deadline_seconds (the function timeout is the attempt deadline),
# a constant 5 s backoff, one counted retry and a retry duration of one deadline. The last retry
# then starts by max(deadline + backoff, max_retry_duration + backoff) = 25 s after the first
# attempt and ends by 45 s, inside the minute and 15 s before the next execution
# (tests/test_infra.py recomputes this). A retry that meets a tick still running on the timed-out
# instance answers 200 `busy` and one that meets a finished minute 200 `already_processed`
# (tests/test_http_overlap.py), so neither is retried again.
locals {
  tick_retry = {
    retry_count              = 1
    min_backoff_seconds      = 5
    max_backoff_seconds      = 5
    max_doublings            = 0
    max_retry_seconds        = local.tick_deadline_seconds
    attempt_deadline_seconds = local.tick_deadline_seconds
  }
}

resource "google_cloud_scheduler_job" "tick" {
  name             = "${var.name_prefix}-tick"
  description      = "Strategy engine tick, every minute of the NYSE trading hours. Pause it (strategy-engine schedule pause) to stop all ticks."
  region           = var.region
  schedule         = var.tick_schedule
  time_zone        = "America/New_York"
  paused           = var.start_paused
  attempt_deadline = "${local.tick_retry.attempt_deadline_seconds}s"

  # A 5xx (database or broker outage) is retried with the same X-CloudScheduler-ScheduleTime, so
  # the retry redoes the same minute T and only what the outage left undone.
  retry_config {
    retry_count          = local.tick_retry.retry_count
    min_backoff_duration = "${local.tick_retry.min_backoff_seconds}s"
    max_backoff_duration = "${local.tick_retry.max_backoff_seconds}s"
    max_doublings        = local.tick_retry.max_doublings
    max_retry_duration   = "${local.tick_retry.max_retry_seconds}s"
  }

  http_target {
    http_method = "POST"
    uri         = local.tick_url
    # The minute comes from the X-CloudScheduler-ScheduleTime header; the body stays empty JSON.
    body    = base64encode("{}")
    headers = { "Content-Type" = "application/json" }

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.tick_url
    }
  }

  lifecycle {
    # Pausing is the outermost kill switch and belongs to the operator; an apply must not
    # resume a job someone paused.
    ignore_changes = [paused]
  }

  depends_on = [
    google_project_service.enabled,
    google_cloud_run_v2_service_iam_member.scheduler_invokes_tick,
  ]
}
