variable "region" {
  description = "AWS region for every resource. us-east-1 sits next to the US market data and Alpaca."
  type        = string
  default     = "us-east-1"
}

variable "name_prefix" {
  description = "Prefix for every resource name, so several deployments can share an account."
  type        = string
  default     = "strategy-engine"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,19}$", var.name_prefix))
    error_message = "name_prefix must be 3-20 characters of lower-case letters, digits and dashes (S3 bucket prefixes are short)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "lambda_zip" {
  description = "Path of the Lambda package built by `deploy.sh --cloud aws` (our code plus dependencies from requirements-runtime.lock)."
  type        = string
  default     = "../../build/aws/lambda.zip"
}

variable "lambda_runtime" {
  description = "Lambda runtime. python3.12 runs on Amazon Linux 2023 (glibc 2.34); the numpy wheels pinned in the lock need glibc >= 2.28, which python3.11's Amazon Linux 2 lacks."
  type        = string
  default     = "python3.12"
}

variable "lambda_memory_mb" {
  description = "Lambda memory in MB; CPU scales with it, and importing numpy/pandas is CPU-bound on a cold start."
  type        = number
  default     = 1024
}

variable "lambda_timeout_seconds" {
  description = "Lambda timeout. A tick must finish inside its minute; backfills through the Function URL share it (the URL itself allows at most 15 minutes)."
  type        = number
  default     = 300

  validation {
    condition     = var.lambda_timeout_seconds >= 30 && var.lambda_timeout_seconds <= 900
    error_message = "lambda_timeout_seconds must be between 30 and 900."
  }
}

variable "tick_schedule" {
  description = "EventBridge Scheduler cron for the tick, evaluated in America/New_York. The default fires every minute 09:00-15:59 on weekdays; the engine's NYSE calendar records minutes outside the session (and holidays, half days) as market_closed."
  type        = string
  default     = "cron(* 9-15 ? * MON-FRI *)"

  validation {
    condition     = can(regex("^(cron|rate)\\(.+\\)$", var.tick_schedule))
    error_message = "tick_schedule must be an EventBridge Scheduler cron(...) or rate(...) expression."
  }
}

variable "schedule_enabled" {
  description = "Whether the tick schedule fires. Setting false and applying is the AWS kill switch (the strategies' is_active flag is the finer one)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "CloudWatch log retention for the function's logs."
  type        = number
  default     = 30
}

variable "backfill_invoker_arns" {
  description = "IAM principals (role or user ARNs) granted the right to call the AWS_IAM Function URL for backfills. Same-account principals can also be allowed by their own identity policies."
  type        = list(string)
  default     = []
}

variable "alert_email" {
  description = "E-mail address subscribed to the alerts topic (tick errors, failed/abandoned/late runs); empty subscribes nobody. SNS sends a confirmation message first. Pass as TF_VAR_alert_email."
  type        = string
  default     = ""

  validation {
    condition     = var.alert_email == "" || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be an e-mail address or empty."
  }
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can be recovered; 0 deletes at once (for throwaway stacks)."
  type        = number
  default     = 7
}

variable "secrets_version" {
  description = "Bump to push new secret values: write-only arguments are not stored, so Terraform only sends them when this number changes."
  type        = number
  default     = 1
}

# The four secrets below are ephemeral: they exist only during a plan or apply, go to AWS through
# the write-only secret_string_wo, and are never written to the plan or the state. deploy.sh
# takes them from TF_VAR_* environment variables; nothing here or on a command line holds them.
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
  description = "Bearer secret for HTTP callers that cannot sign with AWS credentials. Secret: pass as TF_VAR_engine_http_secret."
  type        = string
  sensitive   = true
  ephemeral   = true
}
