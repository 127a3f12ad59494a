-- Every answer-path request: who asked, which prompt (id, version, A/B variant), what was retrieved from which
-- index version, which served model version answered, tokens, latency, and the error if it failed.
CREATE TABLE requests (
    id              bigserial   PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    user_id         text        NOT NULL,
    question        text        NOT NULL,
    prompt_id       text,
    prompt_version  integer,
    prompt_variant  text,
    retrieval_mode  text,
    retrieved       jsonb       NOT NULL DEFAULT '[]',   -- [{chunk_hash, doc_id, source, score}] in rank order
    cited           integer     NOT NULL DEFAULT 0,      -- how many of them fit in the prompt
    index_name      text,
    index_version   integer,
    served_model    text,
    model_version   text,                                -- the registered version Triton serves under that name
    tokens_in       integer,
    tokens_out      integer,
    ttft_ms         real,
    latency_ms      real,
    answer          text,
    error           text
);
CREATE INDEX requests_by_time ON requests (at DESC);
CREATE INDEX requests_by_user ON requests (user_id, at DESC);
