"""default_args every DAG shares, so owner and retry policy live in one place."""

from datetime import timedelta

DEFAULT_ARGS = {
    "owner": "llmops-platform",
    "retries": 1,
    "retry_delay": timedelta(seconds=15),
}
