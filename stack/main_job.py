"""The main job: bring the stack up, run the platform's DAGs in a model's-life order, say where to look."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

from stack import airflow, lakefs, triton
from stack.airflow_api import AirflowClient
from stack.components import mlflow_url
from stack.config import REPO_ROOT, StackConfig

CORPUS_REPO = "corpus"


def land_sample_corpus(cfg: StackConfig) -> None:
    """Raw documents land on lakeFS main before curation, as an upstream system would put them there."""
    out = cfg.home / "sample-corpus"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **lakefs.endpoint(cfg).to_env()}
    for argv in (
        ["-m", "tasks.curation.sample_corpus", "--out", str(out)],
        ["-m", "tasks.curation.steps", "land", "--repo", CORPUS_REPO, "--source-dir", str(out), "--prefix", "raw/"],
    ):
        subprocess.run([sys.executable, "-W", "ignore", *argv], env=env, cwd=REPO_ROOT, check=True)


def land_sft_sample(cfg: StackConfig) -> None:
    """The sample SFT set (questions about documented functions) lands on lakeFS main under sft/."""
    out = cfg.home / "sample-sft"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **lakefs.endpoint(cfg).to_env()}
    for argv in (
        ["-m", "tasks.training.sft", "sample", "--out", str(out)],
        ["-m", "tasks.curation.steps", "land", "--repo", CORPUS_REPO, "--source-dir", str(out), "--prefix", "sft/"],
    ):
        subprocess.run([sys.executable, "-W", "ignore", *argv], env=env, cwd=REPO_ROOT, check=True)


def land_sample_data(cfg: StackConfig) -> None:
    """The sample corpus (raw/) and the sample SFT set (sft/) land on lakeFS main, as upstream systems would."""
    land_sample_corpus(cfg)
    land_sft_sample(cfg)


SAMPLE_QUESTIONS = ("How do I wait until a thread terminates?", "How do I join path components?",
                    "How can I read a file line by line?")
ANSWERS: list[str] = []  # what the sample questions got, printed at the end


def ask_sample_questions(cfg: StackConfig) -> None:
    """Questions about the corpus, asked as a signed-in user through the platform plugin's answer endpoint."""
    client = AirflowClient.for_stack(cfg)
    for question in SAMPLE_QUESTIONS:
        response = client.answer(question, k=3)
        if response.status_code != 200:
            ANSWERS.append(f"Answer       {question!r} failed: {response.status_code} {response.text[:300]}")
            continue
        body = response.json()
        cited = ", ".join(f"[{c['n']}] {c['doc_id']}" for c in body["citations"])
        prompt = body["prompt"]
        ANSWERS.append(
            f"Answer       POST /llmops/answer {question!r}\n  -> {body['text']!r}\n  citing {cited}\n"
            f"  prompt {prompt['id']} v{prompt['version']} variant {prompt['variant']}, index version "
            f"{body['index_version']}, model {body['model_version']}, TTFT {body['ttft_ms']:.0f} ms; logged as "
            f"request {body['request_id']} in the platform database's requests table")
        print(ANSWERS[-1].splitlines()[0], flush=True)


# Grows with every pipeline: curate -> pretrain -> fine-tune -> build & deploy -> reindex -> answer -> monitor.
# (dag_id, conf, what to do before it, the DAG whose Asset triggers it): a DAG that follows another is not
# triggered by the main job but started by that DAG's Asset event, as in production; the job waits for that run.
PIPELINE: tuple[tuple[str, dict, Callable[[StackConfig], None] | None, str | None], ...] = (
    ("platform_smoke", {}, None, None),
    ("curate_corpus", {"repo": CORPUS_REPO}, land_sample_data, None),
    ("pretrain", {"repo": CORPUS_REPO}, None, "curate_corpus"),
    ("finetune", {"repo": CORPUS_REPO}, None, "pretrain"),
    ("build_and_deploy", {}, None, "finetune"),
    ("reindex_rag", {"repo": CORPUS_REPO}, None, "curate_corpus"),
    ("monitor_llm", {}, ask_sample_questions, None),
)
FINDINGS = "success; checks breached (findings, not errors):"
ASSET_RUN_TIMEOUT = 90  # seconds for the scheduler to turn an Asset event into a run; then the job triggers it


def curated_summary(cfg: StackConfig) -> str:
    """What curation made, read back from lakeFS main the way any consumer would."""
    from tasks.common.versioned_data import VersionedRepo

    repo = VersionedRepo(lakefs.endpoint(cfg), CORPUS_REPO)
    stats = json.loads(repo.get_object("main", "curated/stats.json"))
    tokens = json.loads(repo.get_object("main", "tokenized/stats.json"))
    return (
        f"Curated      lakefs://{CORPUS_REPO}/main/curated/corpus.jsonl at commit {repo.head('main')[:12]}: "
        f"{stats['curated']} of {stats['read']} records kept, {stats['quarantined']} quarantined with reasons "
        f"(curated/quarantine/); {sum(s['tokens'] for s in tokens['splits'].values())} tokens in tokenized/"
    )


def pretrained_summary(client: AirflowClient) -> str:
    """The checkpoint pretrain published, from its Asset event (what fine-tuning will be triggered by)."""
    extra = client.latest_asset_extra("pretrain")
    return (f"Pretrained   {extra['preset']} model, step {extra['step']}, loss {extra['loss']:.3f}, on lakeFS commit "
            f"{extra['data_commit'][:12]}: checkpoint {extra['checkpoint_uri']} (MLflow run {extra['mlflow_run_id']})")


def finetuned_summary(client: AirflowClient) -> str:
    """The registered versions fine-tuning made, from its Asset event (what deployment will be triggered by)."""
    registered = client.latest_asset_extra("finetune")["registered"]
    made = ", ".join(f"{kind} {v['name']} v{v['version']}" for kind, v in registered.items() if v)
    return f"Fine-tuned   registered in MLflow: {made} (alias 'candidate')"


SAMPLE_PROMPT = "def "


def deployed_summary(cfg: StackConfig, client: AirflowClient) -> str:
    """What serves now, from the deploy's Asset event, and a prompt streamed through Triton to base and adapter."""
    from tasks.serving.client import generate

    extra = client.latest_asset_extra("build_and_deploy")
    grpc = f"127.0.0.1:{cfg.triton_grpc_port}"
    lines = [f"Deployed     Triton model '{extra['served_name']}' version {extra['version']} = "
             f"{extra['registered_model']} v{extra['registered_version']} (MLflow alias 'champion'), adapters "
             f"{extra['adapters'] or 'none'}; history in the platform database's deployment_history table"]
    for adapter in [None, *extra["adapters"]]:
        answer = generate(grpc, extra["served_name"], SAMPLE_PROMPT, max_tokens=24,
                          **({"lora_name": adapter} if adapter else {}))
        lines.append(f"  streamed {SAMPLE_PROMPT!r} -> {answer.text!r} ({len(answer.token_times)} pieces, "
                     f"first after {answer.ttft * 1000:.0f} ms, {adapter or 'base'})")
    return "\n".join(lines)


def monitor_summary(cfg: StackConfig) -> str:
    """Where monitor_llm's report is and what it found, from its newest row in the platform database."""
    from stack import postgres
    from tasks.common import platform_db

    with platform_db.connect(postgres.dsn(cfg, "platform")) as conn:
        figures, breaches, report = conn.execute(
            "SELECT figures, breaches, report FROM monitor_runs ORDER BY at DESC LIMIT 1").fetchone()
    offline = figures.get("offline_eval", {})
    models = [f"{role} {m['model']}: held-out perplexity {m['perplexity']:.1f}, question-set accuracy "
              f"{m['accuracy']:.2f}" for role, m in offline.get("models", {}).items()]
    return "\n".join([f"Monitoring   {figures['status']}; breaches: {', '.join(breaches) or 'none'}",
                      *(f"  {check}: {why}" for check, why in breaches.items()),
                      *(f"  offline: {line}" for line in models or [offline.get("skipped", "not run")]),
                      *([f"  candidate: {offline['candidate']}"] if "candidate" in offline else []),
                      f"  report {report} (figures in the platform database's monitor_runs table)"])


def rag_summary(client: AirflowClient) -> str:
    """The index reindex_rag put live, from its Asset event (what the answer path will read)."""
    extra = client.latest_asset_extra("reindex_rag")
    return (f"RAG index    {extra['index']} version {extra['version']}: {extra['rows']} chunks ({extra['chunker']}, "
            f"{extra['embedding_model']}, {extra['storage']}) reflecting lakeFS commit {extra['commit_id'][:12]}")


def _say(line: str) -> None:
    print(line, flush=True)


def run(cfg: StackConfig, up: Callable[[StackConfig], None]) -> int:
    began = time.monotonic()
    print("==> bringing the embedded stack up", flush=True)
    up(cfg)
    client = AirflowClient.for_stack(cfg)
    results = []
    for dag_id, _, _, follows in PIPELINE:
        client.wait_for_dag(dag_id)
        if follows:
            client.follow_assets(dag_id)
    started: dict[str, str] = {}  # run_after of each DAG's run: the Asset-triggered runs it starts come later
    for dag_id, conf, before, follows in PIPELINE:
        if before is not None:
            print(f"==> preparing {dag_id}: {before.__doc__.splitlines()[0]}", flush=True)
            before(cfg)
        run_id = client.asset_triggered_run(dag_id, started.get(follows, ""), ASSET_RUN_TIMEOUT) if follows else None
        if run_id:
            print(f"==> {dag_id} run {run_id} was started by {follows}'s Asset event", flush=True)
        else:
            run_id = client.trigger(dag_id, conf)
            print(f"==> running {dag_id}: triggered run {run_id}", flush=True)
        started[dag_id] = client._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["run_after"]
        state = client.wait(dag_id, run_id, timeout=1800, progress=_say)
        if dag_id == "monitor_llm" and state == "failed":
            state = monitoring_findings(client, run_id) or state
        print(f"{dag_id} run {run_id}: {state}", flush=True)
        results.append((dag_id, state))
        if not _done(state):
            break
    print()
    print(f"main job finished in {time.monotonic() - began:.0f}s")
    for dag_id, state in results:
        print(f"  {dag_id:<24} {state}")
    print(f"Airflow UI   {airflow.api_url(cfg)}  (login: {airflow.ADMIN_USER} / {airflow.admin_password(cfg)})")
    print(f"MLflow       {mlflow_url(cfg)}")
    print(f"lakeFS       {lakefs.url(cfg)}/api/v1  (key pair in {cfg.home / 'lakefs' / 'credentials.json'})")
    print(f"Triton       {triton.url(cfg)}  (gRPC 127.0.0.1:{cfg.triton_grpc_port}, Prometheus metrics "
          f"http://127.0.0.1:{cfg.triton_metrics_port}/metrics)")
    if ("curate_corpus", "success") in results:
        print(curated_summary(cfg))
    if ("pretrain", "success") in results:
        print(pretrained_summary(client))
    if ("finetune", "success") in results:
        print(finetuned_summary(client))
    if ("build_and_deploy", "success") in results:
        print(deployed_summary(cfg, client))
    if ("reindex_rag", "success") in results:
        print(rag_summary(client))
    for answer in ANSWERS:
        print(answer)
    if any(dag_id == "monitor_llm" and _done(state) for dag_id, state in results):
        print(monitor_summary(cfg))
    print(f"stack state  {cfg.home}   (python -m stack status | logs <component> | down)")
    return 0 if all(_done(state) for _, state in results) else 1


def monitoring_findings(client: AirflowClient, run_id: str) -> str | None:
    """A monitor_llm run that failed only in its check_* tasks did its job: it found something about the model
    (the main job's fine-tuned candidate, for one, is worse than the base on held-out corpus text). Says which."""
    failed = sorted(task for task, state in client.task_states("monitor_llm", run_id).items() if state == "failed")
    if failed and all(task.startswith("check_") for task in failed):
        return f"{FINDINGS} {', '.join(task.removeprefix('check_') for task in failed)}"
    return None


def _done(state: str) -> bool:
    return state == "success" or state.startswith(FINDINGS)
