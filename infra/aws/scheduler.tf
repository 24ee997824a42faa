# The tick: EventBridge Scheduler invokes the function every minute of the trading hours in
# New York time, passing the scheduled minute in the event so a re-delivery carries the same T.

# The schedule lives in a group of its own: AWS scopes the execution role's confused-deputy guard to
# a schedule GROUP ("Do not scope the aws:SourceArn statement to a specific schedule"), so the
# group holds this one schedule and nothing else may use the role.
resource "aws_scheduler_schedule_group" "engine" {
  name = var.name_prefix
}

data "aws_iam_policy_document" "scheduler_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    # Confused-deputy guard as AWS documents it for EventBridge Scheduler: this account, and the
    # schedule group ARN (a schedule ARN here makes every AssumeRole fail: no tick would run).
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_scheduler_schedule_group.engine.arn]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name_prefix}-scheduler"
  description        = "Identity of the tick schedule: may invoke the engine function and nothing else."
  assume_role_policy = data.aws_iam_policy_document.scheduler_trust.json
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "InvokeEngineOnly"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.engine.arn]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "invoke-engine"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_scheduler_schedule" "tick" {
  name                         = local.schedule_name
  group_name                   = aws_scheduler_schedule_group.engine.name
  description                  = "Strategy engine tick, every minute of the NYSE trading hours."
  schedule_expression          = var.tick_schedule
  schedule_expression_timezone = "America/New_York"
  state                        = var.schedule_enabled ? "ENABLED" : "DISABLED"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.engine.arn
    role_arn = aws_iam_role.scheduler.arn
    # Scheduler substitutes the context attribute; it is the same on every retry of one
    # scheduled invocation, which is what makes the tick's minute T stable. A template, not
    # jsonencode: jsonencode writes < and > as \u003c and \u003e, which Scheduler does not
    # recognise as its keyword, so the handler would receive the placeholder itself.
    input = local.tick_input

    # Delivery retries stay inside the minute: a tick older than 60 s is dropped, not replayed.
    retry_policy {
      maximum_event_age_in_seconds = 60
      maximum_retry_attempts       = 3
    }
  }

  depends_on = [aws_iam_role_policy.scheduler]
}
