"""RAG indexing: curated lakeFS corpus -> chunks -> embeddings -> pgvector, incremental by diff."""
