"""The Assets that chain the pipelines, each defined once: curated corpus -> pretrain -> finetune -> deploy, and
curated corpus -> RAG index."""

from airflow.sdk import Asset

CURATED_CORPUS = Asset("lakefs://corpus/main/curated")
PRETRAINED = Asset("llmops://checkpoints/pretrain")
FINETUNED = Asset("llmops://models/finetuned")
RAG_INDEX = Asset("llmops://rag/index")
