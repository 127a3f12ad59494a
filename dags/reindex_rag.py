"""reindex_rag: the curated corpus on lakeFS -> chunks -> MiniLM embeddings -> a pgvector HNSW index.

Triggered by the curated-corpus Asset (its event names the commit), by monitor_llm's reindex request, nightly, from
the UI or the REST API (`data_commit` Param, else the head of `main`). `validate` resolves the commit and checks the corpus, the config and the database
before anything is embedded, and says whether the run is incremental (only the documents the lakeFS diff names since
the commit the live index reflects) or a full rebuild (no live index, another chunker / model / storage, or
`full_rebuild`). `reindex` runs through the launcher; `publish` reads the freshness table back and emits the index
Asset with the version and the commit it now reflects.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from plugins.assets import CURATED_CORPUS, RAG_INDEX, REINDEX_REQUESTED, curated_input, curated_input_params
from plugins.conf_guard import check_conf
from plugins.connections import lakefs_endpoint, postgres_dsn
from plugins.dag_defaults import DEFAULT_ARGS
from plugins.launchers.step import Resources
from plugins.step_operator import StepOperator

PLAN = "ti.xcom_pull(task_ids='validate')"


@dag(
    dag_id="reindex_rag",
    # new data, monitor_llm seeing the queries drift, or nightly (an unchanged corpus costs one lakeFS diff)
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"),
                                 assets=CURATED_CORPUS | REINDEX_REQUESTED),
    catchup=False,
    tags=["rag", "pgvector", "lakefs"],
    default_args=DEFAULT_ARGS,
    max_active_runs=1,
    params={
        **curated_input_params("to index"),
        "index": Param("rag_chunks", type="string", pattern="^[a-z][a-z0-9_]{2,40}$",
                       description="index name: the view readers query"),
        "full_rebuild": Param(False, type="boolean",
                              description="build a new version, evaluate it and swap it in, even if incremental "
                                          "would do"),
        "chunker": Param(None, type=["null", "string"],
                         description="a chunker of include/rag/rag.yaml (tokens | sections); empty = its default"),
        "batch_size": Param(None, type=["null", "integer"], minimum=1, maximum=4096,
                            description="embedding batch size; empty = rag.yaml's"),
        "storage": Param(None, type=["null", "string"],
                         description="vector | halfvec for a new version; empty = rag.yaml's"),
        "gate_mode": Param(None, type=["null", "string"], pattern="^(vector|fulltext|hybrid)$",
                           description="how the retrieval gate searches before a swap; empty = rag.yaml's"),
    },
    doc_md=__doc__,
)
def reindex_rag():
    @task
    def validate(params=None, triggering_asset_events=None) -> dict:
        """Every Param, the commit, each corpus record and the database checked before anything is embedded."""
        from tasks.rag import config as rag_config
        from tasks.rag import steps

        repo, ref = curated_input(params, triggering_asset_events)
        cfg = rag_config.load(params["chunker"], params["batch_size"], params["storage"], gate_mode=params["gate_mode"])
        planned = steps.validate(lakefs_endpoint(), postgres_dsn(), repo, ref, params["index"], cfg,
                                 params["full_rebuild"])
        print(f"plan: {planned}")
        return planned

    reindex = StepOperator(
        task_id="reindex",
        module="tasks.rag.steps",
        # null Params render as "", which the step reads as "as configured"
        args=["reindex", "--repo", f"{{{{ {PLAN}['repo'] }}}}", "--ref", f"{{{{ {PLAN}['commit_id'] }}}}",
              "--index", "{{ params.index }}", "--chunker", "{{ params.chunker or '' }}",
              "--batch-size", "{{ params.batch_size or '' }}", "--storage", "{{ params.storage or '' }}",
              "--gate-mode", "{{ params.gate_mode or '' }}",
              "{{ '--full-rebuild' if params.full_rebuild else '--no-full-rebuild' }}"],
        step_resources=Resources(cpu="2", memory="4Gi"),
        lakefs=True,
        postgres=True,
    )

    @task(outlets=[RAG_INDEX])
    def publish(plan: dict, outlet_events=None) -> dict:
        """What the index now serves, read back from the freshness table, must be the commit this run planned."""
        from tasks.common import platform_db
        from tasks.rag import store

        with platform_db.connect(postgres_dsn()) as conn:
            serving = store.live(conn, plan["index"])
            last = conn.execute("SELECT mode, chunks_embedded, chunks_deleted FROM rag_index_refreshes "
                                "WHERE index_name = %s ORDER BY id DESC LIMIT 1", (plan["index"],)).fetchone()
        if serving is None or serving.commit_id != plan["commit_id"]:
            raise RuntimeError(f"index {plan['index']!r} does not reflect {plan['commit_id']} after reindex "
                               f"(live: {serving})")
        extra = {"index": serving.index_name, "version": serving.version, "table": serving.table_name,
                 "repo": serving.repo, "commit_id": serving.commit_id, "rows": serving.rows,
                 "embedding_model": serving.embedding_model, "chunker": serving.chunker, "storage": serving.storage,
                 "last_refresh": {"mode": last[0], "chunks_embedded": last[1], "chunks_deleted": last[2]}}
        outlet_events[RAG_INDEX].extra = extra
        return extra

    plan = validate()
    check_conf() >> plan >> reindex >> publish(plan)


reindex_rag()
