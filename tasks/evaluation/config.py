"""monitor_llm's configuration: include/monitoring/monitoring.yaml plus the test thresholds in thresholds.yaml.

Read and checked in one place: a missing key, a wrong type or a value outside its range fails here with the file,
the key and the rule, before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

INCLUDE = Path(__file__).resolve().parents[2] / "include" / "monitoring"
CHECKS = ("input_drift", "output_drift", "quality", "performance", "cost", "offline_eval")
ACTIONS = ("reindex", "finetune", "none")


class ConfigError(ValueError):
    """A monitoring setting that cannot be used; the message names the file, the key and the rule."""


@dataclass(frozen=True)
class MonitoringConfig:
    window_hours: float
    reference_hours: float
    min_requests: int
    index: str
    performance: dict[str, float]
    quality: dict[str, float]
    cost: dict[str, float]
    actions: dict[str, str]
    webhook: str | None
    offline: dict[str, Any]  # offline evaluation: question set path, held-out data, when a candidate is worse
    thresholds: dict[str, Any]  # thresholds.yaml: `drift` and `quality` test settings


def _number(where: str, raw: dict, key: str, minimum: float = 0, maximum: float | None = None) -> float:
    if key not in raw:
        raise ConfigError(f"{where}: `{key}` is missing")
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: `{key}` is {value!r}; a number is required")
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{where}: `{key}` is {value}; it must be in [{minimum}, {maximum if maximum is not None else 'inf'}]")
    return float(value)


def load(path: Path | None = None, thresholds_path: Path | None = None) -> MonitoringConfig:
    path = path or INCLUDE / "monitoring.yaml"
    thresholds_path = thresholds_path or path.parent / "thresholds.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        thresholds = yaml.safe_load(thresholds_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"monitoring config: {error}") from error
    name = path.name
    for section in ("window", "performance", "quality", "cost", "offline", "actions", "notifier"):
        if not isinstance(raw.get(section), dict):
            raise ConfigError(f"{name}: section `{section}` is missing or not a mapping")
    window = raw["window"]
    actions = raw["actions"]
    unknown = set(actions) - set(CHECKS)
    if unknown or set(CHECKS) - set(actions):
        raise ConfigError(f"{name}: `actions` must name each of {', '.join(CHECKS)} once (unknown: "
                          f"{', '.join(sorted(unknown)) or 'none'}; missing: {', '.join(sorted(set(CHECKS) - set(actions))) or 'none'})")
    for check, action in actions.items():
        if action not in ACTIONS:
            raise ConfigError(f"{name}: actions.{check} is {action!r}; one of {', '.join(ACTIONS)}")
    for section in ("drift", "quality"):
        if not isinstance(thresholds.get(section), dict):
            raise ConfigError(f"{thresholds_path.name}: section `{section}` is missing or not a mapping")
    webhook = raw["notifier"].get("webhook")
    if webhook is not None and not str(webhook).startswith(("http://", "https://")):
        raise ConfigError(f"{name}: notifier.webhook {webhook!r} must be an http(s) URL or null")
    return MonitoringConfig(
        window_hours=_number(f"{name} window", window, "hours", minimum=1 / 60),
        reference_hours=_number(f"{name} window", window, "reference_hours", minimum=1 / 60),
        min_requests=int(_number(f"{name} window", window, "min_requests", minimum=2)),
        index=str(raw.get("index") or "rag_chunks"),
        performance={k: _number(f"{name} performance", raw["performance"], k)
                     for k in ("max_ttft_p95_ms", "max_latency_p95_ms", "max_error_rate")},
        quality={k: _number(f"{name} quality", raw["quality"], k, maximum=1)
                 for k in ("min_grounded_share", "min_relevant_share", "max_toxicity_rate")},
        cost={k: _number(f"{name} cost", raw["cost"], k) for k in (
            "accelerator_hour_usd", "input_per_1k_tokens_usd", "output_per_1k_tokens_usd", "max_window_usd")},
        actions=dict(actions), webhook=webhook, offline=_offline(name, path.parent, raw["offline"]),
        thresholds=thresholds,
    )


def _offline(name: str, directory: Path, raw: dict) -> dict[str, Any]:
    where = f"{name} offline"
    questions = directory / str(raw.get("questions") or "")
    if not raw.get("questions") or not questions.is_file():
        raise ConfigError(f"{where}: `questions` is {raw.get('questions')!r}; a file next to {name} is required")
    if not isinstance(raw.get("data_repo"), str) or not raw["data_repo"]:
        raise ConfigError(f"{where}: `data_repo` must name the lakeFS repository of the curated corpus")
    return {"questions": questions, "data_repo": raw["data_repo"],
            "max_documents": int(_number(where, raw, "max_documents", minimum=1)),
            "max_tokens": int(_number(where, raw, "max_tokens", minimum=2)),
            "max_perplexity_rise": _number(where, raw, "max_perplexity_rise"),
            "max_accuracy_drop": _number(where, raw, "max_accuracy_drop", maximum=1)}
