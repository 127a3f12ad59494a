-- The RAG indexes' freshness: which lakeFS commit each index reflects, since when, built with which embedding
-- model and chunker. The chunk tables themselves (<index>_v<version>) are made by tasks/rag/store.py, because
-- their vector type and HNSW parameters come from include/rag/rag.yaml per build.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE rag_indexes (
    index_name      text        NOT NULL,
    version         integer     NOT NULL,
    table_name      text        NOT NULL UNIQUE,
    state           text        NOT NULL CHECK (state IN ('building', 'live', 'retired', 'failed', 'dropped')),
    repo            text        NOT NULL,
    commit_id       text        NOT NULL,
    embedding_model text        NOT NULL,
    chunker         text        NOT NULL,
    storage         text        NOT NULL CHECK (storage IN ('vector', 'halfvec')),
    hnsw            jsonb       NOT NULL,
    rows            bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    refreshed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (index_name, version)
);
-- at most one live version per index: the one its view points at
CREATE UNIQUE INDEX rag_indexes_one_live ON rag_indexes (index_name) WHERE state = 'live';

CREATE TABLE rag_index_refreshes (
    id            bigserial   PRIMARY KEY,
    index_name    text        NOT NULL,
    version       integer     NOT NULL,
    mode          text        NOT NULL CHECK (mode IN ('full', 'incremental', 'unchanged')),
    base_commit   text,
    commit_id     text        NOT NULL,
    docs_added    integer     NOT NULL,
    docs_changed  integer     NOT NULL,
    docs_removed  integer     NOT NULL,
    chunks_embedded integer   NOT NULL,
    chunks_deleted  integer   NOT NULL,
    rows          bigint      NOT NULL,
    seconds       real        NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (index_name, version) REFERENCES rag_indexes (index_name, version)
);
