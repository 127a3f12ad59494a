"""Offline evaluation: the serving model and the registry's candidate, side by side, on the same fixed data.

Two figures per model, both deterministic (greedy scoring, no sampling):
- perplexity on the curated corpus's held-out split (the records `tokenize` put in `valid`, decided by id, so
  no model was trained on them). Reported per token and per byte; models are compared per byte, which does not
  depend on the tokenizer, so a candidate with a new vocabulary is compared fairly.
- accuracy on the fixed multiple-choice set in include/monitoring/offline_questions.yaml: a question is answered
  when the right choice has the highest mean log-probability after the prompt, and the only highest.

A candidate whose byte perplexity rises more than `max_perplexity_rise` or whose accuracy drops more than
`max_accuracy_drop` below the serving model's is worse: `comparison` names it and the monitor's `offline_eval`
check fails with both models' numbers.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

PROMPT = "Question: {question}\nAnswer:"


class OfflineEvalError(ValueError):
    """Offline evaluation cannot run as configured; the message names the input and the rule."""


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class ModelScores:
    role: str  # serving | candidate
    model: str  # registered name/version
    perplexity: float  # per token, the model's own tokenizer
    byte_perplexity: float  # exp(NLL per UTF-8 byte): comparable across tokenizers
    tokens: int
    documents: int
    accuracy: float
    questions: int


def load_questions(path: Path) -> list[Question]:
    """The question set; a malformed item fails naming its position and the rule it breaks."""
    try:
        items = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("questions")
    except (OSError, yaml.YAMLError, AttributeError) as error:
        raise OfflineEvalError(f"{path}: {error}") from error
    if not isinstance(items, list) or not items:
        raise OfflineEvalError(f"{path}: `questions` must be a non-empty list")
    questions = []
    for number, item in enumerate(items, 1):
        choices = item.get("choices") if isinstance(item, dict) else None
        if not (isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) and c for c in choices)
                and isinstance(item.get("question"), str) and item["question"].strip()
                and isinstance(item.get("answer"), int) and 0 <= item["answer"] < len(choices)):
            raise OfflineEvalError(f"{path}: question {number} needs a non-empty `question`, two or more non-empty "
                                   f"`choices` and an `answer` index into them; got {item!r}")
        questions.append(Question(item["question"], tuple(choices), item["answer"]))
    return questions


def _windows(ids: list[int], size: int) -> Iterator[list[int]]:
    """Consecutive windows of at most `size` tokens; each scores all its tokens but the first."""
    for start in range(0, max(len(ids) - 1, 1), size):
        window = ids[start:start + size]
        if len(window) > 1:
            yield window


def perplexity(model: Any, tokenizer: Any, texts: Sequence[str], max_tokens: int) -> dict[str, float]:
    """Token and byte perplexity over the texts, scored in windows of the model's context (or max_tokens)."""
    import torch

    size = min(max_tokens, int(getattr(model.config, "max_position_embeddings", max_tokens)))
    nll, tokens, scored_bytes = 0.0, 0, 0
    with torch.inference_mode():
        for text in texts:
            for window in _windows(tokenizer(text, add_special_tokens=False).input_ids, size):
                ids = torch.tensor([window])
                nll += float(model(ids, labels=ids).loss) * (len(window) - 1)
                tokens += len(window) - 1
                scored_bytes += len(tokenizer.decode(window[1:]).encode("utf-8"))
    if not tokens:
        raise OfflineEvalError("the held-out texts hold no token to score")
    return {"perplexity": math.exp(nll / tokens), "byte_perplexity": math.exp(nll / max(scored_bytes, 1)),
            "tokens": tokens}


def accuracy(model: Any, tokenizer: Any, questions: Sequence[Question]) -> float:
    """Share of questions whose right choice has the highest mean token log-probability, and the only highest."""
    import torch

    limit = int(getattr(model.config, "max_position_embeddings", 2048))
    right = 0
    with torch.inference_mode():
        for question in questions:
            prompt = tokenizer(PROMPT.format(question=question.question), add_special_tokens=False).input_ids
            scores = []
            for choice in question.choices:
                answer = tokenizer(" " + choice, add_special_tokens=False).input_ids
                ids = (prompt + answer)[-limit:]
                logits = model(torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
                picked = logits[-len(answer):].gather(1, torch.tensor(ids[-len(answer):]).unsqueeze(1))
                scores.append(float(picked.mean()))
            best = max(scores)
            right += scores[question.answer] == best and scores.count(best) == 1
    return right / len(questions)


def score(role: str, model_name: str, checkpoint: Path, texts: Sequence[str], questions: Sequence[Question],
          max_tokens: int) -> ModelScores:
    """Both figures for one Hugging Face checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    ppl = perplexity(model, tokenizer, texts, max_tokens)
    scores = ModelScores(role, model_name, ppl["perplexity"], ppl["byte_perplexity"], ppl["tokens"], len(texts),
                         accuracy(model, tokenizer, questions), len(questions))
    print(f"offline eval: {role} {model_name}: perplexity {scores.perplexity:.3f} (per byte "
          f"{scores.byte_perplexity:.4f}) on {scores.documents} held-out documents, accuracy {scores.accuracy:.3f} "
          f"on {scores.questions} questions", flush=True)
    return scores


def comparison(serving: ModelScores, candidate: ModelScores | None, max_perplexity_rise: float,
               max_accuracy_drop: float) -> str | None:
    """Why the candidate is worse than the serving model, with both numbers; None when it is not (or is absent)."""
    if candidate is None:
        return None
    worse = []
    rise = candidate.byte_perplexity / serving.byte_perplexity - 1
    if rise > max_perplexity_rise:
        worse.append(f"held-out perplexity per byte {candidate.byte_perplexity:.4f} vs serving "
                     f"{serving.byte_perplexity:.4f} (+{rise:.1%} > {max_perplexity_rise:.1%}; per token "
                     f"{candidate.perplexity:.2f} vs {serving.perplexity:.2f})")
    if candidate.accuracy < serving.accuracy - max_accuracy_drop:
        worse.append(f"question-set accuracy {candidate.accuracy:.3f} vs serving {serving.accuracy:.3f} "
                     f"(drop > {max_accuracy_drop:g})")
    return f"candidate {candidate.model} is worse than serving {serving.model}: " + "; ".join(worse) if worse else None


def held_out_texts(endpoint: Any, repo: str, ref: str, max_documents: int) -> tuple[str, list[str]]:
    """(commit, texts) of the curated corpus's held-out split at ref, the first max_documents by id."""
    from tasks.common.versioned_data import VersionedRepo
    from tasks.curation.steps import CURATED, TOKENIZED, read_rows
    from tasks.curation.tokenize import split_of

    versioned = VersionedRepo(endpoint, repo)
    commit = versioned.head(ref)
    stats = json.loads(versioned.get_object(commit, f"{TOKENIZED}stats.json"))
    rows = sorted(read_rows(versioned.get_object(commit, CURATED)), key=lambda row: row["id"])
    held_out = [row["text"] for row in rows if split_of(row["id"], stats["valid_fraction"], stats["seed"]) == "valid"]
    if not held_out:
        raise OfflineEvalError(f"lakeFS {repo}@{commit[:12]}: the curated corpus has no held-out record "
                               f"(valid_fraction {stats['valid_fraction']})")
    return commit, held_out[:max_documents]


def serving_checkpoint(repository: Path, served_name: str) -> tuple[str, Path] | None:
    """(registered name/version, hf checkpoint dir) of the version Triton's config pins; None when none is served."""
    from tasks.serving.repository import ModelRepository
    from tasks.serving.triton_config import served_versions

    repo = ModelRepository(repository)
    text = repo.read_config(served_name)
    versions = served_versions(text) if text else []
    if not versions:
        return None
    version_dir = repo.version_dir(served_name, versions[0])
    lineage = json.loads((version_dir / "deployment.json").read_text())
    return f"{lineage['registered_model']}/{lineage['registered_version']}", version_dir / "hf"


@contextmanager
def registered_checkpoint(tracking_uri: str, name: str, version_or_alias: str) -> Iterator[tuple[str, Path]]:
    """A registered version downloaded into a temporary directory for the duration of the block."""
    import mlflow.artifacts

    from tasks.common import registry

    version = registry.resolve(tracking_uri, name, version_or_alias)
    with tempfile.TemporaryDirectory() as scratch:
        path = mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=scratch,
                                                   tracking_uri=tracking_uri)
        yield f"{version.name}/{version.version}", Path(path)


def evaluate_models(settings: dict[str, Any], texts: Sequence[str], serving: tuple[str, Path],
                    candidate: tuple[str, Path] | None) -> dict[str, Any]:
    """Figures for the serving model and the candidate (if any), and why the candidate is worse (or None)."""
    questions = load_questions(settings["questions"])
    scored = {"serving": score("serving", *serving, texts, questions, settings["max_tokens"])}
    if candidate is not None:
        scored["candidate"] = score("candidate", *candidate, texts, questions, settings["max_tokens"])
    worse = comparison(scored["serving"], scored.get("candidate"), settings["max_perplexity_rise"],
                       settings["max_accuracy_drop"])
    return {"models": {role: asdict(s) for role, s in scored.items()}, "worse": worse}


def run(settings: dict[str, Any], endpoint: Any, repository: Path, served_name: str, tracking_uri: str | None,
        candidate_uri: str | None = None, data_ref: str = "main") -> dict[str, Any]:
    """The offline evaluation of what `served_name` serves against the candidate: `candidate_uri`
    (models:/<name>/<version or alias>), else the registry's `candidate` alias of the served registered model when
    it points elsewhere. Nothing served, or no curated corpus: a `skipped` reason, never an error; no candidate to
    compare: the serving model's figures and, under `candidate`, why there is none."""
    from tasks.common import registry
    from tasks.common.versioned_data import VersionedDataError
    from tasks.serving.build import parse_model_uri

    try:
        name, version = parse_model_uri(candidate_uri) if candidate_uri else (None, registry.CANDIDATE)
    except ValueError as error:
        raise OfflineEvalError(f"candidate {error}") from error
    serving = serving_checkpoint(repository, served_name)
    if serving is None:
        return {"skipped": f"no version of {served_name} is served from {repository}"}
    try:
        commit, texts = held_out_texts(endpoint, settings["data_repo"], data_ref, settings["max_documents"])
    except VersionedDataError as error:
        return {"skipped": f"no curated corpus to evaluate on: {error}"}
    name = name or serving[0].split("/")[0]
    figures: dict[str, Any] = {"data": {"repo": settings["data_repo"], "commit": commit, "documents": len(texts)}}
    with ExitStack() as downloads:
        candidate, why_none = None, "no MLflow tracking URI"
        if tracking_uri is not None:
            try:
                candidate, why_none = downloads.enter_context(registered_checkpoint(tracking_uri, name, version)), None
            except LookupError as error:
                why_none = str(error)
        if candidate is not None and candidate[0] == serving[0]:
            candidate, why_none = None, f"models:/{name}/{version} is the serving version"
        return figures | evaluate_models(settings, texts, serving, candidate) | (
            {"candidate": why_none} if why_none else {})
