"""The monitoring config is checked before any data is read: each broken setting fails naming file, key and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.evaluation.config import INCLUDE, ConfigError, load


def test_the_shipped_config_loads():
    cfg = load()
    assert cfg.min_requests >= 2 and set(cfg.actions.values()) <= {"reindex", "finetune", "none"}
    assert {"drift", "quality"} <= set(cfg.thresholds)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("max_error_rate: 0.05", "max_error_rate: lots"), "`max_error_rate` is 'lots'; a number"),
    (lambda t: t.replace("min_relevant_share: 0.50", "min_relevant_share: 3"), "`min_relevant_share` is 3"),
    (lambda t: t.replace("input_drift: reindex", "input_drift: retrain"), "actions.input_drift is 'retrain'"),
    (lambda t: t.replace("  cost: none\n", ""), "missing: cost"),
    (lambda t: t.replace("  hours: 24 ", "  hourz: 24 "), "`hours` is missing"),
    (lambda t: t.replace("webhook: null", "webhook: slack"), "must be an http(s) URL"),
    (lambda t: t + "\n  : [", "monitoring config"),
    (lambda t: t.replace("max_perplexity_rise: 0.02", "max_perplexity_rise: -1"), "`max_perplexity_rise` is -1"),
    (lambda t: t.replace("questions: offline_questions.yaml", "questions: nowhere.yaml"), "`questions` is 'nowhere"),
    (lambda t: t.replace("  offline_eval: none ", "  offline_eval: page "), "actions.offline_eval is 'page'"),
])
def test_a_broken_setting_is_named(tmp_path: Path, edit, message):
    (tmp_path / "monitoring.yaml").write_text(edit((INCLUDE / "monitoring.yaml").read_text()))
    for name in ("thresholds.yaml", "offline_questions.yaml"):
        (tmp_path / name).write_text((INCLUDE / name).read_text())
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load(tmp_path / "monitoring.yaml")


def test_missing_thresholds_are_named(tmp_path: Path):
    (tmp_path / "monitoring.yaml").write_text((INCLUDE / "monitoring.yaml").read_text())
    (tmp_path / "thresholds.yaml").write_text("drift: {}\n")
    with pytest.raises(ConfigError, match="thresholds.yaml: section `quality`"):
        load(tmp_path / "monitoring.yaml")
