"""curate_corpus: raw text on lakeFS -> clean, deduplicated, PII-free, validated, tokenised corpus on `main`.

Write-audit-publish: everything is written on a branch of this run, committed there, checked by the
Great Expectations gate, and merged to `main` only when every gate passes. A failed run leaves `main`
as it was and its branch (`run-curate-corpus-...`) in lakeFS for inspection.

`executor`: `local` curates each shard in its own step, then dedupes in one; `ray` runs every stage, dedupe
included, as one Ray Data pipeline (Ray inside the step, or the cluster of the `ray_default` Connection).
Both publish the same corpus.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from plugins.assets import CURATED_CORPUS
from plugins.conf_guard import check_conf
from plugins.connections import lakefs_endpoint
from plugins.dag_defaults import DEFAULT_ARGS
from plugins.launchers.base import platform_config
from plugins.launchers.step import Resources
from plugins.step_operator import StepOperator

CURATION_STEPS = "tasks.curation.steps"
STEP_RESOURCES = Resources(cpu="2", memory="4Gi")
RUN_BRANCH = "{{ ti.xcom_pull(task_ids='open_run_branch')['branch'] }}"
INPUT_COMMIT = "{{ ti.xcom_pull(task_ids='open_run_branch')['input_commit'] }}"


@dag(
    dag_id="curate_corpus",
    schedule=None,
    catchup=False,
    tags=["curation", "lakefs"],
    default_args=DEFAULT_ARGS,
    max_active_runs=1,
    params={
        "repo": Param("corpus", type="string", pattern="^[a-z0-9][a-z0-9-]{2,62}$", description="lakeFS repository"),
        "source_prefix": Param("raw/", type="string", minLength=1, description="where raw files live on main"),
        "languages": Param(["en"], type="array", items={"type": "string"}, minItems=1,
                           description="ISO 639-1 codes to keep"),
        "executor": Param(platform_config().get("curation_executor", "local"), enum=["local", "ray"],
                          description="local: a step per shard + one dedupe step; ray: one Ray Data pipeline"),
        "fuzzy_threshold": Param(0.8, type="number", minimum=0.5, maximum=1.0,
                                 description="MinHash Jaccard threshold for near duplicates"),
        "min_words": Param(20, type="integer", minimum=1, description="Gopher quality: fewest words a doc may have"),
        "vocab_size": Param(8000, type="integer", minimum=512, maximum=262144, description="BPE vocabulary size"),
        "tokenizer": Param(None, type=["null", "string"],
                           description="reuse a pinned tokenizer.json at this lakeFS path on main; empty = train one"),
        "valid_fraction": Param(0.05, type="number", minimum=0.0, maximum=0.5),
    },
    doc_md=__doc__,
)
def curate_corpus():
    @task
    def open_run_branch(params=None, dag_run=None) -> dict:
        from tasks.curation import steps

        return steps.open_run(lakefs_endpoint(), params["repo"], dag_run.dag_id, dag_run.run_id)

    @task.branch
    def choose_executor(params=None) -> str:
        return "curate_on_ray" if params["executor"] == "ray" else "shard_args"

    @task
    def shard_args(run: dict, params=None) -> list[list[str]]:
        """One mapped step per raw file, so many pods can curate in parallel."""
        from tasks.curation import steps

        shards = steps.list_shards(lakefs_endpoint(), params["repo"], run["input_commit"], params["source_prefix"])
        return [steps.shard_cli_args(run, index, len(shards), params) for index in range(len(shards))]

    run = open_run_branch()
    common = dict(module=CURATION_STEPS, step_resources=STEP_RESOURCES, lakefs=True)
    on_branch = ["--repo", "{{ params.repo }}", "--branch", RUN_BRANCH]
    planned = shard_args(run)
    curate_shards = StepOperator.partial(task_id="curate_shard", **common).expand(args=planned)
    dedupe = StepOperator(
        task_id="dedupe", args=["dedupe", *on_branch, "--fuzzy-threshold", "{{ params.fuzzy_threshold }}"], **common
    )
    on_ray = StepOperator(
        task_id="curate_on_ray", ray=True, **common,
        args=["curate-ray", *on_branch, "--input-commit", INPUT_COMMIT, "--source-prefix", "{{ params.source_prefix }}",
              "--languages", "{{ params.languages | join(',') }}", "--min-words", "{{ params.min_words }}",
              "--fuzzy-threshold", "{{ params.fuzzy_threshold }}"],
    )
    gate = StepOperator(
        task_id="quality_gate",
        args=["gate", *on_branch, "--input-commit", INPUT_COMMIT, "--dag-id", "{{ dag.dag_id }}", "--run-id", "{{ run_id }}",
              "--languages", "{{ params.languages | join(',') }}"],
        trigger_rule="none_failed_min_one_success",  # after whichever executor ran
        **common,
    )
    tokenize = StepOperator(
        task_id="tokenize",
        # an unset (null) tokenizer renders as "", which the step reads as "train one", never as the path "None"
        args=["tokenize", *on_branch, "--vocab-size", "{{ params.vocab_size }}",
              "--tokenizer", "{{ params.tokenizer or '' }}", "--valid-fraction", "{{ params.valid_fraction }}"],
        **common,
    )

    @task(outlets=[CURATED_CORPUS])
    def publish(run: dict, dag_run=None, outlet_events=None) -> str:
        from tasks.curation import steps

        merged = steps.publish(lakefs_endpoint(), run, dag_run.dag_id, dag_run.run_id)
        outlet_events[CURATED_CORPUS].extra = {"repo": run["repo"], "commit_id": merged, "input_commit": run["input_commit"]}
        return merged

    check_conf() >> run >> choose_executor() >> [planned, on_ray]
    curate_shards >> dedupe >> gate
    on_ray >> gate >> tokenize >> publish(run)


curate_corpus()
