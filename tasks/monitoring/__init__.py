"""Monitoring of the served model: drift and answer-quality statistics for the monitor_llm pipeline."""
