"""What a breach does besides failing its check: a JSON POST to the configured webhook (Slack, PagerDuty, ...)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def notify(webhook: str | None, result: dict[str, Any], timeout: float = 10) -> str:
    """Post {"status", "breaches", "report"} when something breached; says what it did (for the task log)."""
    if not result["breaches"]:
        return "clean run: nothing to notify"
    if not webhook:
        return f"breaches {sorted(result['breaches'])} but no webhook configured (notifier.webhook)"
    request = urllib.request.Request(webhook, data=json.dumps({"source": "monitor_llm", **result}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return f"posted {sorted(result['breaches'])} to {webhook}: {response.status}"
    except urllib.error.URLError as error:
        raise RuntimeError(f"webhook {webhook} refused the notification: {error}") from error
