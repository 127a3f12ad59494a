"""The Assets that chain the pipelines, each defined once: curated corpus -> pretrain -> finetune -> deploy, and
curated corpus -> RAG index."""

from typing import Any

from airflow.sdk import Asset, Param

CURATED_CORPUS = Asset("lakefs://corpus/main/curated")
PRETRAINED = Asset("llmops://checkpoints/pretrain")
FINETUNED = Asset("llmops://models/finetuned")
RAG_INDEX = Asset("llmops://rag/index")
DEPLOYED = Asset("llmops://serving/deployed")
# what monitor_llm asks for when a check it maps to them breaches (include/monitoring/monitoring.yaml `actions`)
REINDEX_REQUESTED = Asset("llmops://monitoring/reindex_requested")
FINETUNE_REQUESTED = Asset("llmops://monitoring/finetune_requested")


def newest_extra(triggering_asset_events: Any, asset: Asset) -> dict[str, Any] | None:
    """The extra of the newest event of `asset` that triggered this run; None for a run not started by it."""
    events = (triggering_asset_events or {}).get(asset) or []
    return max(events, key=lambda event: event.timestamp).extra if events else None


def curated_input_params(what: str) -> dict[str, Param]:
    """The Params of a DAG that reads the curated corpus: the repository and an optional commit."""
    return {
        "repo": Param("corpus", type="string", pattern="^[a-z0-9][a-z0-9-]{2,62}$",
                      description="lakeFS repository curate_corpus published to"),
        "data_commit": Param(None, type=["null", "string"],
                             description=f"lakeFS commit id or ref {what}; empty = the triggering Asset event's "
                                         "commit, else the head of main"),
    }


def curated_input(params: dict[str, Any], triggering_asset_events: Any) -> tuple[str, str]:
    """(repo, ref) to read: the data_commit Param, else the triggering curated-corpus event's, else main."""
    event = newest_extra(triggering_asset_events, CURATED_CORPUS)
    if not params["data_commit"] and event:
        return event["repo"], event["commit_id"]
    return params["repo"], params["data_commit"] or "main"
