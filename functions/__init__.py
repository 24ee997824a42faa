"""Thin cloud entry points over strategy_engine.http_api: main.py (functions-framework targets
for Cloud Functions / Cloud Run) and lambda_handler.py (AWS Lambda)."""
