# The engine on Google Cloud: the four functions-framework targets of functions/main.py, each a
# Cloud Functions (2nd gen) function, i.e. a Cloud Run service built from the source archive
# that deploy.sh makes. Their secrets live in Secret Manager and reach them as environment
# variables by reference; their runtime identity can read exactly those secrets.

locals {
  # The tick's request timeout, which is also the scheduler's attempt deadline (scheduler.tf): a
  # request that outlives its function timeout is answered 504 while the instance keeps running,
  # so a deadline shorter than the timeout would retry a tick that is still working, and a longer
  # one would wait for an answer that cannot come. 20 s holds a cold start plus the broker's
  # retry budget below; the retry arithmetic in scheduler.tf is built on it.
  tick_deadline_seconds = 20
  # Alpaca calls give up after this (ALPACA_RETRY_BUDGET_SECONDS, strategy_engine.settings), so a
  # broker outage answers 503 inside the tick's deadline instead of timing out.
  tick_broker_budget_seconds = 12
  # A run still `running` after this is closed as abandoned by the next tick
  # (ENGINE_RUN_TIMEOUT_SECONDS): twice the longest timeout of the functions that tick (tick and
  # webhook), so a slow run that is still alive is never closed under it.
  run_timeout_seconds = 2 * max(local.tick_deadline_seconds, local.entry_points.webhook.timeout_seconds)

  # TICK_DEADLINE_SECONDS (below) leaves this much of a function's timeout after the last POST
  # that may start at the deadline and retry for one broker budget: the minute's commit and the
  # answer. The tick: 20 - 12 - 3 = 5 s to start sending (ALPACA_TIMEOUT_SECONDS 10 <= 12).
  send_margin_seconds = 3

  # One Cloud Run service per entry point: each gets its own limits, and the scheduler's
  # invoker grant covers the tick service only.
  entry_points = {
    tick = {
      description           = "One engine tick for the scheduled minute (Cloud Scheduler, OIDC)."
      memory                = "1Gi"
      timeout_seconds       = local.tick_deadline_seconds
      broker_budget_seconds = local.tick_broker_budget_seconds
      max_instances         = 3
    }
    backfill = {
      description           = "Replay of a time range through the same core; answers the summary JSON."
      memory                = "2Gi"
      timeout_seconds       = 900
      broker_budget_seconds = 20
      max_instances         = 2
    }
    webhook = {
      description           = "Supabase database webhook on market_data_1m inserts: ticks the bar's minute + 1."
      memory                = "1Gi"
      timeout_seconds       = 55
      broker_budget_seconds = 20
      max_instances         = 5
    }
    health = {
      description           = "Liveness and database reachability."
      memory                = "512Mi"
      timeout_seconds       = 10
      broker_budget_seconds = 5
      max_instances         = 1
    }
  }

  # Environment variable name -> value. The values are ephemeral (see variables.tf), so this
  # map is too: it is only ever read by the write-only secret_data_wo below.
  secret_values = {
    DATABASE_URL       = var.database_url
    ALPACA_API_KEY     = var.alpaca_api_key
    ALPACA_SECRET_KEY  = var.alpaca_secret_key
    ENGINE_HTTP_SECRET = var.engine_http_secret
  }
  secret_names = toset(["DATABASE_URL", "ALPACA_API_KEY", "ALPACA_SECRET_KEY", "ENGINE_HTTP_SECRET"])

  # Every API the stack calls. iam.googleapis.com must be on before the service accounts are
  # created (Google: a custom build service account "requires the IAM API to be enabled");
  # monitoring and logging carry the alert policy.
  services = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])

  # What Google documents for the build service account of a gen2 function ("Configure the build
  # service account", Cloud Run docs) and what the provider's own "Cloudfunctions2 Basic Builder"
  # example grants: build logs, the built image, and storage.objectAdmin to fetch the function
  # source (Cloud Functions copies the archive into its own gcf-v2-sources-<project number>-<region>
  # bucket, created on the first deploy, so a grant on our bucket alone is not enough) and to store
  # the build's images. storage.objectViewer, which the 1st-gen page lists, is not what either
  # source grants for gen2. Nothing broader, no cloudbuild.builds.builder.
  build_roles = toset([
    "roles/artifactregistry.writer",
    "roles/logging.logWriter",
    "roles/storage.objectAdmin",
  ])
}

resource "google_project_service" "enabled" {
  for_each           = local.services
  service            = each.value
  disable_on_destroy = false # other workloads in the project may use the same APIs
}

# ---- secrets --------------------------------------------------------------------------------

resource "google_secret_manager_secret" "engine" {
  for_each  = local.secret_names
  secret_id = "${var.name_prefix}-${lower(replace(each.value, "_", "-"))}"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_version" "engine" {
  for_each = local.secret_names
  secret   = google_secret_manager_secret.engine[each.value].id
  # Write-only: sent to Secret Manager, never stored in the plan or the state.
  secret_data_wo         = local.secret_values[each.value]
  secret_data_wo_version = var.secrets_version
  # A rotation (secrets_version + 1) replaces every version: secret_data_wo_version forces a new
  # resource. Create the new version first, redeploy the functions onto it, and only then retire
  # the old one, and retire it by disabling (recoverable with `gcloud secrets versions enable`),
  # not by destroying (the provider's default deletion_policy is DELETE). The other order leaves
  # a window in which a cold start of the running revision reads a destroyed version.
  deletion_policy = "DISABLE"

  lifecycle {
    create_before_destroy = true
  }
}

# ---- identities -----------------------------------------------------------------------------

resource "google_service_account" "runtime" {
  account_id   = "${var.name_prefix}-run"
  display_name = "Strategy engine runtime"
  description  = "Identity the engine functions run as: reads its four secrets, nothing else."

  depends_on = [google_project_service.enabled] # the IAM API first, on a fresh project
}

resource "google_service_account" "scheduler" {
  account_id   = "${var.name_prefix}-sched"
  display_name = "Strategy engine scheduler"
  description  = "Identity Cloud Scheduler signs its OIDC token with: may invoke the tick service, nothing else."

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "build" {
  account_id   = "${var.name_prefix}-build"
  display_name = "Strategy engine build"
  description  = "Identity Cloud Build uses to turn the source archive into the function image (instead of the broad default compute account)."

  depends_on = [google_project_service.enabled]
}

resource "google_project_iam_member" "build" {
  for_each = local.build_roles
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.build.email}"
}

# The runtime identity may read exactly the engine's secrets: one grant per secret, none on the
# project.
resource "google_secret_manager_secret_iam_member" "runtime" {
  for_each  = local.secret_names
  secret_id = google_secret_manager_secret.engine[each.value].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.runtime.email}"
}

# ---- source ---------------------------------------------------------------------------------

resource "google_storage_bucket" "source" {
  name                        = "${var.project_id}-${var.name_prefix}-src"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket_object" "source" {
  # Content-addressed: a new build is a new object, which is what makes the functions redeploy.
  name   = "source/${filemd5(var.source_zip)}.zip"
  bucket = google_storage_bucket.source.name
  source = var.source_zip
}

# IAM grants take time to reach every Google service; the provider's own Cloud Functions
# example ("Cloudfunctions2 Basic Builder") waits 60 s after the builder's grants before it
# creates the function, or the first build cannot read the source. The runtime's secret grants
# wait too: Cloud Run checks the runtime identity can read each referenced secret at deploy.
resource "time_sleep" "iam_propagation" {
  create_duration = "60s"

  depends_on = [
    google_project_iam_member.build,
    google_secret_manager_secret_iam_member.runtime,
  ]
}

# ---- the functions --------------------------------------------------------------------------

resource "google_cloudfunctions2_function" "engine" {
  for_each    = local.entry_points
  name        = "${var.name_prefix}-${each.key}"
  location    = var.region
  description = each.value.description

  build_config {
    runtime         = var.runtime
    entry_point     = each.key
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = each.value.memory
    timeout_seconds                  = each.value.timeout_seconds
    min_instance_count               = each.key == "tick" ? var.tick_min_instances : 0
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = 1
    ingress_settings                 = "ALLOW_ALL"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime.email

    environment_variables = {
      # Private services are only reachable with a Google identity token that Cloud Run has
      # already checked (the scheduler's OIDC token); public ones must check the bearer secret.
      ENGINE_TRUST_PLATFORM_AUTH = contains(var.public_entry_points, each.key) ? "false" : "true"
      # The broker gives up inside the request timeout (see tick_deadline_seconds).
      ALPACA_RETRY_BUDGET_SECONDS = tostring(each.value.broker_budget_seconds)
      ENGINE_RUN_TIMEOUT_SECONDS  = tostring(local.run_timeout_seconds)
      # Nothing new is sent after this: deadline + broker budget + margin fit the timeout.
      TICK_DEADLINE_SECONDS = tostring(min(45, each.value.timeout_seconds - each.value.broker_budget_seconds - local.send_margin_seconds))
    }

    # Secrets by reference, pinned to the version Terraform wrote: a rotation (secrets_version)
    # redeploys the functions, so no instance keeps running on a stale key.
    dynamic "secret_environment_variables" {
      for_each = local.secret_names
      content {
        key        = secret_environment_variables.value
        project_id = var.project_id
        secret     = google_secret_manager_secret.engine[secret_environment_variables.value].secret_id
        version    = google_secret_manager_secret_version.engine[secret_environment_variables.value].version
      }
    }
  }

  depends_on = [
    google_project_service.enabled,
    time_sleep.iam_propagation, # after the build and secret grants, and their propagation
  ]
}

# Callers that cannot mint a Google identity token (Supabase webhooks, Supabase Cron) reach only
# the entry points listed in public_entry_points, and those check ENGINE_HTTP_SECRET.
resource "google_cloud_run_v2_service_iam_member" "public" {
  for_each = var.public_entry_points
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.engine[each.value].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
