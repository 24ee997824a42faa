output "function_name" {
  description = "Name of the engine Lambda function."
  value       = aws_lambda_function.engine.function_name
}

output "function_url" {
  description = "AWS_IAM Function URL for backfills (sign requests with SigV4, service lambda)."
  value       = aws_lambda_function_url.engine.function_url
}

output "schedule_name" {
  description = "EventBridge Scheduler schedule that ticks the engine; disable it to stop all ticks."
  value       = aws_scheduler_schedule.tick.name
}

output "secret_arn" {
  description = "Secrets Manager secret holding the runtime secrets (values never in the state)."
  value       = aws_secretsmanager_secret.engine.arn
}

output "log_group" {
  description = "CloudWatch log group of the function."
  value       = aws_cloudwatch_log_group.engine.name
}

output "lambda_role_arn" {
  description = "Runtime role of the function."
  value       = aws_iam_role.lambda.arn
}

output "scheduler_role_arn" {
  description = "Role the schedule assumes to invoke the function."
  value       = aws_iam_role.scheduler.arn
}

output "alerts_topic_arn" {
  description = "SNS topic the alarms notify (alarm and OK); subscribe more endpoints to it."
  value       = aws_sns_topic.alerts.arn
}
