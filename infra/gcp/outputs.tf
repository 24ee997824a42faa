output "function_urls" {
  description = "URL of each entry point (tick, backfill, webhook, health)."
  value       = { for name, fn in google_cloudfunctions2_function.engine : name => fn.service_config[0].uri }
}

output "tick_url" {
  description = "URL the scheduler calls; also the audience of its OIDC token."
  value       = local.tick_url
}

output "scheduler_job" {
  description = "Full name of the Cloud Scheduler job (projects/P/locations/L/jobs/J)."
  value       = google_cloud_scheduler_job.tick.id
}

output "schedule_cli_env" {
  description = "Environment for `strategy-engine schedule pause|resume|run-now|status`."
  value = {
    SCHEDULER_PROJECT  = var.project_id
    SCHEDULER_LOCATION = var.region
    SCHEDULER_JOB      = google_cloud_scheduler_job.tick.name
  }
}

output "runtime_service_account" {
  description = "Service account the functions run as."
  value       = google_service_account.runtime.email
}

output "scheduler_service_account" {
  description = "Service account whose OIDC token the scheduler presents."
  value       = google_service_account.scheduler.email
}

output "secret_ids" {
  description = "Secret Manager secret per environment variable (values never in the state)."
  value       = { for name, s in google_secret_manager_secret.engine : name => s.secret_id }
}

output "alert_policy" {
  description = "Cloud Monitoring alert policy on failed, abandoned or late runs and ERROR lines."
  value       = google_monitoring_alert_policy.run_problems.name
}
