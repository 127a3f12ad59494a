-- One row per monitor_llm run: its windows, every figure it computed (for trends), the checks it breached, and
-- where its HTML report is.
CREATE TABLE monitor_runs (
    run_key       text        PRIMARY KEY,           -- dag id/run id: a retried run replaces its own row
    at            timestamptz NOT NULL DEFAULT now(),
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    requests      integer     NOT NULL,
    reference     integer     NOT NULL,
    figures       jsonb       NOT NULL,
    breaches      jsonb       NOT NULL,              -- {check: "what, measured vs threshold"}
    report        text        NOT NULL
);
CREATE INDEX monitor_runs_by_time ON monitor_runs (window_end DESC);
