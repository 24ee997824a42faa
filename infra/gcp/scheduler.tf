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

resource "google_cloud_scheduler_job" "tick" {
  name        = "${var.name_prefix}-tick"
  description = "Strategy engine tick, every minute of the NYSE trading hours. Pause it (strategy-engine schedule pause) to stop all ticks."
  region      = var.region
  schedule    = var.tick_schedule
  time_zone   = "America/New_York"
  paused      = var.start_paused
  # Longer than the tick's own 55 s timeout, so Scheduler never gives up on a tick that is
  # still working and fires a concurrent duplicate.
  attempt_deadline = "60s"

  # A 5xx (database or broker outage) is retried inside the minute with the same
  # X-CloudScheduler-ScheduleTime; later than 50 s the next tick owns the market.
  retry_config {
    retry_count          = var.tick_retry_count
    min_backoff_duration = "5s"
    max_backoff_duration = "20s"
    max_doublings        = 2
    max_retry_duration   = "50s"
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
