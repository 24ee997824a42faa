# `terraform test` (offline): a plan of this stack with the real hashicorp/aws provider and no AWS
# account. The provider is told not to call AWS; the two values a plan would fetch or leave
# unknown (the account id, the ARNs AWS assigns) are fixed below. tests/test_infra.py runs it
# against the local provider mirror.

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "offline-plan"
  secret_key                  = "offline-plan"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}

override_data {
  target = data.aws_caller_identity.current
  values = { account_id = "123456789012" }
}

override_resource {
  target          = aws_scheduler_schedule_group.engine
  override_during = plan
  values          = { arn = "arn:aws:scheduler:us-east-1:123456789012:schedule-group/strategy-engine" }
}

override_resource {
  target          = aws_sns_topic.alerts
  override_during = plan
  values          = { arn = "arn:aws:sns:us-east-1:123456789012:strategy-engine-alerts" }
}

variables {
  lambda_zip         = "tests/render.tftest.hcl" # any existing file: the plan only hashes it
  database_url       = "offline-plan-not-a-url"
  alpaca_api_key     = "offline-plan"
  alpaca_secret_key  = "offline-plan"
  engine_http_secret = "offline-plan"
}

run "tick_input_and_role_trust" {
  command = plan

  # The keyword reaches the schedule's input as written: Scheduler substitutes only the literal
  # <aws.scheduler.scheduled-time>, not its \u003c...\u003e escape.
  assert {
    condition     = strcontains(aws_scheduler_schedule.tick.target[0].input, "\"<aws.scheduler.scheduled-time>\"")
    error_message = "rendered input: ${aws_scheduler_schedule.tick.target[0].input}"
  }
  assert {
    condition     = jsondecode(aws_scheduler_schedule.tick.target[0].input) == { source = "scheduler", minute = "<aws.scheduler.scheduled-time>" }
    error_message = "rendered input is not the handler's event: ${aws_scheduler_schedule.tick.target[0].input}"
  }
  assert {
    condition     = aws_scheduler_schedule.tick.group_name == aws_scheduler_schedule_group.engine.name
    error_message = "the schedule must sit in the group the role trusts"
  }
  assert {
    condition = {
      for c in data.aws_iam_policy_document.scheduler_trust.statement[0].condition : "${c.test} ${c.variable}" => join(",", c.values)
      } == {
      "StringEquals aws:SourceAccount" = "123456789012"
      "ArnEquals aws:SourceArn"        = "arn:aws:scheduler:us-east-1:123456789012:schedule-group/strategy-engine"
    }
    error_message = "the scheduler role must trust this account's schedule group, not a schedule"
  }
}

run "alarms_notify_the_topic_nobody_subscribed" {
  command = plan

  assert {
    condition = alltrue([
      for a in [aws_cloudwatch_metric_alarm.tick_errors, aws_cloudwatch_metric_alarm.run_problems] :
      a.alarm_actions == toset(["arn:aws:sns:us-east-1:123456789012:strategy-engine-alerts"]) &&
      a.ok_actions == toset(["arn:aws:sns:us-east-1:123456789012:strategy-engine-alerts"])
    ])
    error_message = "every alarm notifies the alerts topic on ALARM and on OK"
  }
  assert {
    condition     = length(aws_sns_topic_subscription.alert_email) == 0
    error_message = "no e-mail given, no subscription"
  }
  assert {
    condition     = aws_cloudwatch_log_metric_filter.run_problems.log_group_name == "/aws/lambda/strategy-engine"
    error_message = "the filter reads the function's own log group"
  }
}

run "alarms_notify_an_email" {
  command = plan

  variables {
    alert_email = "oncall@example.com"
  }

  assert {
    condition     = aws_sns_topic_subscription.alert_email[0].endpoint == "oncall@example.com" && aws_sns_topic_subscription.alert_email[0].protocol == "email"
    error_message = "the e-mail is subscribed to the alerts topic"
  }
}
