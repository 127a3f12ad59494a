"""Evaluation of the served model, as monitor_llm runs it: drift, answer quality, performance, cost, reports."""
