-- Every promotion, rollback and rejection of a served model: who, when, from which repository version to which,
-- why, and the gate figures. MLflow's registry keeps only where its aliases point now, not how they moved.
CREATE TABLE deployment_history (
    id                 bigserial   PRIMARY KEY,
    served_name        text        NOT NULL,
    action             text        NOT NULL CHECK (action IN ('promoted', 'rolled_back', 'rejected')),
    from_version       integer,
    to_version         integer     NOT NULL,
    registered_model   text        NOT NULL,
    registered_version text        NOT NULL,
    adapters           jsonb       NOT NULL DEFAULT '{}',
    actor              text        NOT NULL,
    reason             text        NOT NULL,
    gates              jsonb       NOT NULL DEFAULT '{}',
    dag_run            text,
    at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deployment_history_by_model ON deployment_history (served_name, at DESC);
