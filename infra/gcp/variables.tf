variable "project_id" {
  description = "Google Cloud project that holds the functions, the schedule and the secrets."
  type        = string
}

variable "region" {
  description = "Region of the functions and the Cloud Scheduler job. us-east4 (Virginia) is nearest the US exchanges and Alpaca."
  type        = string
  default     = "us-east4"
}

variable "name_prefix" {
  description = "Prefix for every resource name, so several deployments can share a project."
  type        = string
  default     = "strategy-engine"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name_prefix))
    error_message = "name_prefix must be 3-21 characters of lower-case letters, digits and dashes (service account ids are short)."
  }
}

variable "labels" {
  description = "Labels added to every resource."
  type        = map(string)
  default     = {}
}

variable "source_zip" {
  description = "Path of the function source archive built by `deploy.sh --cloud gcp` (main.py, requirements.txt, functions/, strategy_engine/)."
  type        = string
  default     = "../../build/gcp/function-source.zip"
}

variable "runtime" {
  description = "Cloud Functions runtime; python311 is the version the engine is tested on."
  type        = string
  default     = "python311"
}

variable "tick_schedule" {
  description = "Unix cron for the tick, evaluated in America/New_York. The default fires every minute 09:00-15:59 on weekdays; the engine's NYSE calendar records minutes outside the session (and holidays, half days) as market_closed."
  type        = string
  default     = "* 9-15 * * 1-5"

  validation {
    condition     = length(split(" ", trimspace(var.tick_schedule))) == 5
    error_message = "tick_schedule must be a five-field unix cron expression."
  }
}

variable "start_paused" {
  description = "Create the Cloud Scheduler job paused. Later pauses and resumes belong to `strategy-engine schedule pause|resume`; Terraform ignores the job's paused state after creation so an apply never undoes the kill switch."
  type        = bool
  default     = false
}

variable "public_entry_points" {
  description = "Entry points that anyone may reach (allUsers run.invoker) and that therefore authenticate with the ENGINE_HTTP_SECRET bearer instead of Google IAM. Supabase webhooks and Supabase Cron cannot mint Google OIDC tokens: list \"webhook\" (and \"tick\" if Supabase Cron drives the tick). Everything else requires IAM."
  type        = set(string)
  default     = ["webhook"]

  validation {
    condition     = length(setsubtract(var.public_entry_points, ["tick", "backfill", "webhook", "health"])) == 0
    error_message = "public_entry_points may only name tick, backfill, webhook and health."
  }
}

variable "tick_min_instances" {
  description = "Warm instances kept for the tick function; 0 saves money, 1 removes the cold start from the first tick of the day."
  type        = number
  default     = 0
}

variable "alert_notification_channels" {
  description = "Cloud Monitoring notification channels (projects/P/notificationChannels/ID) the run-problems alert notifies, in addition to alert_email."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.alert_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "alert_notification_channels must be full channel names: projects/P/notificationChannels/ID."
  }
}

variable "alert_email" {
  description = "E-mail address given its own notification channel for the run-problems alert; empty creates none. Pass as TF_VAR_alert_email."
  type        = string
  default     = ""

  validation {
    condition     = var.alert_email == "" || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be an e-mail address or empty."
  }
}

variable "secrets_version" {
  description = "Bump to push new secret values: write-only arguments are not stored, so Terraform only sends them when this number changes. Upgrading a stack whose secret versions were created without deletion_policy = DISABLE: apply once without bumping it first (docs/operations.md, Rotating secrets), or the first rotation destroys the old versions."
  type        = number
  default     = 1
}

# The four secrets below are ephemeral: they exist only during a plan or apply, go to Secret
# Manager through the write-only secret_data_wo, and are never written to the plan or the state.
# deploy.sh takes them from TF_VAR_* environment variables; nothing here or on a command line
# holds them.
variable "database_url" {
  description = "Postgres URL of the Supabase database (transaction pooler, port 6543). Secret: pass as TF_VAR_database_url."
  type        = string
  sensitive   = true
  ephemeral   = true
}

variable "alpaca_api_key" {
  description = "Alpaca paper API key id. Secret: pass as TF_VAR_alpaca_api_key."
  type        = string
  sensitive   = true
  ephemeral   = true
}

variable "alpaca_secret_key" {
  description = "Alpaca paper API secret key. Secret: pass as TF_VAR_alpaca_secret_key."
  type        = string
  sensitive   = true
  ephemeral   = true
}

variable "engine_http_secret" {
  description = "Bearer secret for callers that cannot present a Google OIDC token (Supabase webhooks and Cron). Secret: pass as TF_VAR_engine_http_secret."
  type        = string
  sensitive   = true
  ephemeral   = true
}
