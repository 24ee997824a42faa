# Failures notify someone: a log-based alert on the lines the engine writes when a run or a
# strategy ends failed, abandoned or late, and on any ERROR line of the functions (an outage's
# 503, an unexpected 500, a request that hit its timeout).

locals {
  # Cloud Functions (2nd gen) log as their Cloud Run service. The engine's JSON lines
  # (strategy_engine.logs) arrive as jsonPayload with the `outcome` field at the top level.
  # The service names are the entry points' function names (main.tf); =~ is an RE2 match.
  alert_log_filter = <<-EOT
    resource.type = "cloud_run_revision" AND
    resource.labels.service_name =~ "^${var.name_prefix}-(tick|backfill|webhook|health)$" AND
    (severity >= ERROR OR jsonPayload.outcome = ("failed" OR "abandoned" OR "late"))
  EOT
}

resource "google_monitoring_notification_channel" "email" {
  count        = var.alert_email == "" ? 0 : 1
  display_name = "${var.name_prefix} alerts e-mail"
  type         = "email"
  labels       = { email_address = var.alert_email }

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_alert_policy" "run_problems" {
  display_name = "${var.name_prefix}: failed, abandoned or late runs"
  combiner     = "OR"

  conditions {
    display_name = "engine log line with a problem outcome or severity ERROR"
    condition_matched_log {
      filter = local.alert_log_filter
    }
  }

  # Required for a log-match condition: at most one notification per period.
  alert_strategy {
    notification_rate_limit {
      period = "300s"
    }
    auto_close = "1800s"
  }

  notification_channels = concat(var.alert_notification_channels, google_monitoring_notification_channel.email[*].id)

  documentation {
    mime_type = "text/markdown"
    content   = "A tick, webhook or backfill of ${var.name_prefix} logged a failed, abandoned or late outcome, or an ERROR. Read the matching log lines (run_id, minute, error); docs/operations.md says what each outcome means."
  }

  depends_on = [google_project_service.enabled]
}
