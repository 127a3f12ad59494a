"""Offline evaluation on real (tiny) Llama checkpoints: a model trained on the held-out kind of text and on the
question set scores better than an untrained one, deterministically; an untrained candidate is named worse with
both models' numbers; the whole run reads the held-out split from lakeFS, the served version from a Triton model
repository and the candidate from an MLflow registry."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.common import registry
from tasks.common.versioned_data import Lineage, VersionedRepo
from tasks.curation.tokenize import split_of
from tasks.evaluation import offline
from tasks.evaluation.config import load
from tests.tasks.serving.models import tiny_llama

QUESTIONS = [offline.Question("How do I join path components?", ("os.path.join", "json.dump", "heapq.merge"), 0),
             offline.Question("How do I write JSON to a file?", ("heapq.merge", "json.dump", "os.path.join"), 1),
             offline.Question("How do I merge sorted inputs?", ("json.dump", "os.path.join", "heapq.merge"), 2)]
HELD_OUT = ["Join one or more path components intelligently, inserting a separator between them.",
            "Serialize obj as a JSON formatted stream to a file, using the default encoder.",
            "Merge multiple sorted inputs into a single sorted output, lazily, like sorted(chain(*iterables))."]


def train(checkpoint: Path, texts: list[str], steps: int = 150) -> Path:
    """A few hundred Adam steps on the texts: enough for the tiny model to prefer them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = [torch.tensor([tokenizer(t, add_special_tokens=False).input_ids[:96]]) for t in texts]
    torch.manual_seed(0)
    for step in range(steps):
        ids = batches[step % len(batches)]
        model(ids, labels=ids).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.save_pretrained(checkpoint)
    return checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("offline-models")
    answers = [offline.PROMPT.format(question=q.question) + " " + q.choices[q.answer] for q in QUESTIONS]
    return {"untrained": tiny_llama(root / "untrained", positions=128),
            "trained": train(tiny_llama(root / "trained", positions=128), HELD_OUT + answers)}


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> dict:
    questions = tmp_path_factory.mktemp("questions") / "questions.yaml"
    questions.write_text(json.dumps({"questions": [{"question": q.question, "choices": list(q.choices),
                                                    "answer": q.answer} for q in QUESTIONS]}))
    return {**load().offline, "questions": questions}


def test_the_trained_model_scores_better_on_both_figures_and_scores_are_deterministic(models, settings):
    trained = offline.score("serving", "tiny/2", models["trained"], HELD_OUT, QUESTIONS, 512)
    untrained = offline.score("candidate", "tiny/3", models["untrained"], HELD_OUT, QUESTIONS, 512)
    assert trained.byte_perplexity < untrained.byte_perplexity and trained.perplexity < untrained.perplexity
    assert trained.accuracy == 1.0 and untrained.accuracy < 1.0
    assert trained.documents == 3 and trained.tokens > 30 and trained.questions == 3
    assert offline.score("serving", "tiny/2", models["trained"], HELD_OUT, QUESTIONS, 512) == trained


def test_a_worse_candidate_is_named_with_both_models_numbers_and_a_better_one_passes(models, settings):
    figures = offline.evaluate_models(settings, HELD_OUT, ("tiny/2", models["trained"]),
                                      ("tiny/3", models["untrained"]))
    assert figures["worse"].startswith("candidate tiny/3 is worse than serving tiny/2: held-out perplexity per byte")
    assert "question-set accuracy" in figures["worse"] and "(drop > 0.05)" in figures["worse"]
    assert set(figures["models"]) == {"serving", "candidate"}
    swapped = offline.evaluate_models(settings, HELD_OUT, ("tiny/3", models["untrained"]),
                                      ("tiny/2", models["trained"]))
    assert swapped["worse"] is None


def test_a_rise_within_the_allowed_share_is_not_worse():
    serving = offline.ModelScores("serving", "m/1", 10.0, 1.50, 100, 3, 0.50, 58)
    assert offline.comparison(serving, replace(serving, role="candidate", byte_perplexity=1.52), 0.02, 0.05) is None
    assert "+2.7% > 2.0%" in offline.comparison(serving, replace(serving, byte_perplexity=1.54), 0.02, 0.05)
    assert offline.comparison(serving, replace(serving, accuracy=0.46), 0.02, 0.05) is None
    assert offline.comparison(serving, None, 0.02, 0.05) is None


@pytest.mark.parametrize(("text", "message"), [
    ("questions: []", "non-empty list"),
    ("questions:\n  - {question: Why, choices: [a, b], answer: 2}", "question 1 needs"),
    ("questions:\n  - {question: Why, choices: [a, b], answer: 0}\n  - {question: '', choices: [a, b], answer: 0}",
     "question 2 needs"),
    ("questions: [", "questions.yaml"),
])
def test_a_malformed_question_set_is_named(tmp_path, text, message):
    path = tmp_path / "questions.yaml"
    path.write_text(text)
    with pytest.raises(offline.OfflineEvalError, match=message):
        offline.load_questions(path)


def test_the_shipped_question_set_loads():
    questions = offline.load_questions(load().offline["questions"])
    assert len(questions) >= 50 and {q.answer for q in questions} == {0, 1, 2, 3}


def test_a_run_compares_the_served_version_with_the_registry_candidate(models, settings, lakefs_endpoint, tmp_path):
    from tasks.serving import python_target
    from tasks.serving.repository import ModelRepository

    data = VersionedRepo(lakefs_endpoint, f"offline-{uuid.uuid4().hex[:8]}")
    settings = {**settings, "data_repo": data.repo_id}
    triton = ModelRepository(tmp_path / "triton")
    assert offline.run(settings, lakefs_endpoint, triton.root, "llm", None)["skipped"].startswith("no version of llm")
    with triton.writer():
        version = triton.add_version("llm", lambda d: python_target.populate(
            d, models["trained"], adapters_index=triton.adapters_index,
            lineage={"registered_model": "tiny", "registered_version": "1"}))
        triton.write_config("llm", python_target.config("llm", [version], registered_model="tiny",
                                                        registered_version="1"))
    assert offline.run(settings, lakefs_endpoint, triton.root, "llm", None)["skipped"].startswith("no curated corpus")

    data.ensure(storage_namespace=f"local://{data.repo_id}", protect_default=False)
    rows = [{"id": f"doc-{i}", "text": f"{HELD_OUT[i % 3]} Example {i}."} for i in range(200)]
    data.put_object("main", "curated/corpus.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    data.put_object("main", "tokenized/stats.json", json.dumps({"valid_fraction": 0.1, "seed": 3}).encode())
    commit = data.commit("main", "curated", Lineage("tests", "offline", "publish"))
    held_out = sorted(r["id"] for r in rows if split_of(r["id"], 0.1, 3) == "valid")

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for name, version_dir in (("trained", "1"), ("untrained", "2")):
        registered = register(uri, models[name], tmp_path / "artifacts")
        assert registered.version == version_dir
    figures = offline.run(settings, lakefs_endpoint, triton.root, "llm", uri)
    assert figures["data"] == {"repo": data.repo_id, "commit": commit, "documents": len(held_out)}
    assert figures["models"]["serving"]["model"] == "tiny/1" and figures["models"]["candidate"]["model"] == "tiny/2"
    assert figures["worse"].startswith("candidate tiny/2 is worse than serving tiny/1")
    same = offline.run(settings, lakefs_endpoint, triton.root, "llm", uri, candidate_uri="models:/tiny/1")
    assert same["candidate"] == "models:/tiny/1 is the serving version" and same["worse"] is None
    missing = offline.run(settings, lakefs_endpoint, triton.root, "llm", uri, candidate_uri="models:/tiny/9")
    assert "tiny/9" in missing["candidate"] and set(missing["models"]) == {"serving"}


def register(uri: str, checkpoint: Path, artifacts: Path) -> registry.ModelVersion:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("offline") or client.get_experiment(
        client.create_experiment("offline", artifact_location=artifacts.as_uri()))
    run = client.create_run(experiment.experiment_id)
    return registry.register(uri, "tiny", run.info.run_id, checkpoint, "model", {})


def test_a_malformed_candidate_uri_is_refused_before_anything_is_read(settings, tmp_path):
    with pytest.raises(offline.OfflineEvalError, match="candidate 'tiny/2': expected models:/<name>/<version or alias>"):
        offline.run(settings, None, tmp_path, "llm", None, candidate_uri="tiny/2")
