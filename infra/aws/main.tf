# The engine on AWS: one Lambda function (functions.lambda_handler.handler) that answers both
# EventBridge Scheduler ticks and AWS_IAM Function URL requests (backfills), its secrets in
# Secrets Manager, its logs in a log group with a retention, and two roles that can each do
# exactly one job.

data "aws_caller_identity" "current" {}

locals {
  function_name = var.name_prefix
  schedule_name = "${var.name_prefix}-tick"
  account_id    = data.aws_caller_identity.current.account_id
  # The event the schedule sends (functions/lambda_handler.py reads `source` and `minute`).
  tick_input = "{\"source\":\"scheduler\",\"minute\":\"<aws.scheduler.scheduled-time>\"}"

  metric_namespace = "StrategyEngine/${var.name_prefix}"
  # CloudWatch Logs JSON filter syntax: $.field selects a key of a JSON log event, || ORs terms.
  run_problem_pattern = "{ ($.outcome = \"failed\") || ($.outcome = \"abandoned\") || ($.outcome = \"late\") }"

  # TICK_DEADLINE_SECONDS: the last POST may start at it and retry for one broker budget (the
  # settings default, 20 s: the handler does not set ALPACA_RETRY_BUDGET_SECONDS), and the
  # minute's commit needs a margin (3 s), all inside the Lambda timeout; at most the engine's
  # default 45 s (a tick belongs to its minute: AWS does not retry it).
  tick_deadline_seconds = min(45, var.lambda_timeout_seconds - 20 - 3)
}

# ---- secrets --------------------------------------------------------------------------------

resource "aws_secretsmanager_secret" "engine" {
  name                    = "${var.name_prefix}/engine"
  description             = "Runtime secrets of the strategy engine, one JSON document: DATABASE_URL, ALPACA_API_KEY, ALPACA_SECRET_KEY, ENGINE_HTTP_SECRET."
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "engine" {
  secret_id = aws_secretsmanager_secret.engine.id
  # Write-only: sent to Secrets Manager, never stored in the plan or the state.
  secret_string_wo = jsonencode({
    DATABASE_URL       = var.database_url
    ALPACA_API_KEY     = var.alpaca_api_key
    ALPACA_SECRET_KEY  = var.alpaca_secret_key
    ENGINE_HTTP_SECRET = var.engine_http_secret
  })
  secret_string_wo_version = var.secrets_version
}

# ---- the function's identity: read its one secret, write its own logs ------------------------

data "aws_iam_policy_document" "lambda_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "lambda" {
  name               = "${var.name_prefix}-lambda"
  description        = "Runtime identity of the engine function: reads its secret, writes its logs, nothing else."
  assume_role_policy = data.aws_iam_policy_document.lambda_trust.json
}

data "aws_iam_policy_document" "lambda" {
  statement {
    sid       = "ReadOwnSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.engine.arn]
  }

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.engine.arn}:*"]
  }
}

resource "aws_iam_role_policy" "lambda" {
  name   = "engine-runtime"
  role   = aws_iam_role.lambda.id
  policy = data.aws_iam_policy_document.lambda.json
}

# Created before the function so Lambda never auto-creates it without a retention.
resource "aws_cloudwatch_log_group" "engine" {
  name              = "/aws/lambda/${local.function_name}"
  retention_in_days = var.log_retention_days
}

# ---- the code: uploaded through S3 (direct uploads stop at 50 MB; numpy and pandas exceed it)

resource "aws_s3_bucket" "artifacts" {
  bucket_prefix = "${var.name_prefix}-artifacts-"
  force_destroy = true
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket                  = aws_s3_bucket.artifacts.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_object" "lambda_zip" {
  bucket = aws_s3_bucket.artifacts.id
  # Content-addressed: a new build is a new key, so the function update is explicit in the plan.
  key         = "lambda/${filesha256(var.lambda_zip)}.zip"
  source      = var.lambda_zip
  source_hash = filemd5(var.lambda_zip)
}

resource "aws_lambda_function" "engine" {
  function_name    = local.function_name
  description      = "AgentTrader strategy engine: scheduled ticks and IAM-signed backfills."
  role             = aws_iam_role.lambda.arn
  runtime          = var.lambda_runtime
  handler          = "functions.lambda_handler.handler"
  architectures    = ["x86_64"]
  s3_bucket        = aws_s3_object.lambda_zip.bucket
  s3_key           = aws_s3_object.lambda_zip.key
  source_code_hash = filebase64sha256(var.lambda_zip)
  memory_size      = var.lambda_memory_mb
  timeout          = var.lambda_timeout_seconds

  environment {
    variables = {
      # Where the handler fetches its secrets; no secret value here.
      ENGINE_SECRET_ARN = aws_secretsmanager_secret.engine.arn
      # The version Terraform wrote. The handler fetches it by VersionId and caches per (ARN,
      # version), so a rotation (secrets_version + 1) changes this configuration: Lambda moves
      # new invocations onto fresh containers that read the new version, instead of warm ones
      # keeping the old values for their whole life.
      ENGINE_SECRET_VERSION = aws_secretsmanager_secret_version.engine.version_id
      # Function URL callers are authenticated by AWS_IAM, scheduled events by the Scheduler role.
      ENGINE_TRUST_PLATFORM_AUTH = "true"
      # A run still `running` after twice the function's timeout is closed as abandoned by the
      # next tick: a live run never is (the one function serves ticks and backfills).
      ENGINE_RUN_TIMEOUT_SECONDS = tostring(2 * var.lambda_timeout_seconds)
      TICK_DEADLINE_SECONDS      = tostring(local.tick_deadline_seconds)
    }
  }

  depends_on = [
    aws_cloudwatch_log_group.engine,
    aws_iam_role_policy.lambda,
    aws_secretsmanager_secret_version.engine,
  ]
}

# The scheduler invokes asynchronously, so its retry_policy covers delivery only; a tick that
# fails (an outage raises, and Lambda records an error) would be retried by Lambda itself 1 and
# 2 minutes later. By then the next tick owns the market and a late order on old data is worse
# than none, so those retries are off and the failure is surfaced by the alarm below instead.
resource "aws_lambda_function_event_invoke_config" "engine" {
  function_name                = aws_lambda_function.engine.function_name
  maximum_event_age_in_seconds = 60
  maximum_retry_attempts       = 0
}

# ---- alarms: every failure signal reaches a person ------------------------------------------

# Alarm and OK notifications of the alarms below. Confirm the e-mail subscription from the
# message SNS sends; other subscribers (chat, paging) subscribe to the topic outside this stack.
resource "aws_sns_topic" "alerts" {
  name = "${var.name_prefix}-alerts"
}

resource "aws_sns_topic_subscription" "alert_email" {
  count     = var.alert_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = var.alert_email
}

resource "aws_cloudwatch_metric_alarm" "tick_errors" {
  alarm_name          = "${var.name_prefix}-tick-errors"
  alarm_description   = "Ticks failed (database or broker outage): minutes were skipped, nothing half-written."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.engine.function_name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  ok_actions          = [aws_sns_topic.alerts.arn]
}

# The engine logs one JSON object per line (strategy_engine.logs); a run or strategy that ends
# failed, abandoned or late says so in its `outcome` field. The filter counts those lines.
resource "aws_cloudwatch_log_metric_filter" "run_problems" {
  name           = "${var.name_prefix}-run-problems"
  log_group_name = aws_cloudwatch_log_group.engine.name
  pattern        = local.run_problem_pattern

  metric_transformation {
    name          = "RunProblems"
    namespace     = local.metric_namespace
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "run_problems" {
  alarm_name          = "${var.name_prefix}-run-problems"
  alarm_description   = "A run or strategy ended failed, abandoned or late (see the function's log lines with that outcome)."
  namespace           = local.metric_namespace
  metric_name         = aws_cloudwatch_log_metric_filter.run_problems.metric_transformation[0].name
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  ok_actions          = [aws_sns_topic.alerts.arn]
}

# ---- backfills: a Function URL that only signed (SigV4) IAM callers can use -----------------

resource "aws_lambda_function_url" "engine" {
  function_name      = aws_lambda_function.engine.function_name
  authorization_type = "AWS_IAM"
}

# Function URLs created since October 2025 need both actions granted to the caller.
resource "aws_lambda_permission" "backfill_url" {
  for_each               = toset(var.backfill_invoker_arns)
  statement_id           = "BackfillUrl${substr(sha256(each.value), 0, 12)}"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.engine.function_name
  principal              = each.value
  function_url_auth_type = "AWS_IAM"
}

resource "aws_lambda_permission" "backfill_invoke" {
  for_each      = toset(var.backfill_invoker_arns)
  statement_id  = "BackfillInvoke${substr(sha256(each.value), 0, 12)}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.engine.function_name
  principal     = each.value
}
