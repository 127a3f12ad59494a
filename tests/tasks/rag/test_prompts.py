"""Prompts are versioned code: a template edited without a new version is refused; A/B arms are stable per user
and follow the split; rendering keeps the best passages and the size limit."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from tasks.rag.prompts import PROMPTS, load

LOCK = PROMPTS / "versions.lock"


def every_prompt():
    for path in sorted(PROMPTS.glob("*.yaml")):
        yield from load(path.stem).variants.values()


def test_no_template_changed_without_a_new_version():
    locked = json.loads(LOCK.read_text())
    for prompt in every_prompt():
        key = f"{prompt.id}/{prompt.variant}/{prompt.version}"
        assert key in locked, f"{key} is new: add its sha256 {prompt.sha256} to {LOCK.name} (and keep the old ones)"
        assert locked[key] == prompt.sha256, (f"{key} was edited without a new version: give the variant a new "
                                              f"version in {prompt.id}.yaml and lock that")


def test_an_edited_template_is_caught(tmp_path: Path):
    text = (PROMPTS / "rag_answer.yaml").read_text().replace("### Answer:", "### Reply:", 1)
    (tmp_path / "rag_answer.yaml").write_text(text)
    edited = load("rag_answer", tmp_path).variants["a"]
    assert json.loads(LOCK.read_text())[f"rag_answer/a/{edited.version}"] != edited.sha256


def test_a_user_always_gets_the_same_arm_and_arms_follow_the_split():
    prompts = load("rag_answer")
    assert {prompts.for_user("alice").variant for _ in range(5)} == {prompts.for_user("alice").variant}
    counts = collections.Counter(prompts.for_user(f"user-{i}").variant for i in range(4000))
    for arm, share in prompts.split.items():
        assert abs(counts[arm] / 4000 - share / 100) < 0.03


def test_rendering_keeps_the_best_passages_within_the_limit():
    prompt = load("rag_answer").variants["a"]
    text, used = prompt.render("How?", ["first passage " * 5, "second passage " * 5, "third " * 80])
    assert len(text) <= prompt.max_chars and used >= 2
    assert text.index("[1] first") < text.index("[2] second") and "How?" in text


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("{a: 50, b: 50}", "{a: 50, b: 40}"), "sum to 100"),
    (lambda t: t.replace("{question}", "{q}", 1), "needs both"),
])
def test_a_broken_prompt_file_is_refused_by_name(tmp_path: Path, edit, message):
    (tmp_path / "rag_answer.yaml").write_text(edit((PROMPTS / "rag_answer.yaml").read_text()))
    with pytest.raises(ValueError, match=message):
        load("rag_answer", tmp_path)
