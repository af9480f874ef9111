-- The model registry and serving (issue 4).

-- A registered model: a name that versions, aliases and serving endpoints hang off.
CREATE TABLE models (
    name            TEXT PRIMARY KEY,
    description     TEXT NOT NULL DEFAULT '',
    tags            TEXT NOT NULL DEFAULT '{}',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- One registered version: a model file in the content store with its signature, metrics and
-- lineage. Versions count 1, 2, 3... per model and are never reused.
CREATE TABLE model_versions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    model           TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    version         INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    signature       TEXT NOT NULL,
    metrics         TEXT NOT NULL DEFAULT '{}',
    -- NULL: registered without an evaluation; 0/1: what the evaluate task decided.
    blessed         INTEGER,
    evaluation      TEXT,
    lineage         TEXT NOT NULL DEFAULT '{}',
    description     TEXT NOT NULL DEFAULT '',
    tags            TEXT NOT NULL DEFAULT '{}',
    -- The run and task that registered it (a retried register task finds its own version again).
    run_id          INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    task_id         TEXT,
    map_index       INTEGER NOT NULL DEFAULT -1,
    archived_at     INTEGER,
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (model, version)
);
CREATE INDEX model_versions_sha ON model_versions(sha256);

-- Where each alias points now.
CREATE TABLE model_aliases (
    model           TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    alias           TEXT NOT NULL,
    version         INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (model, alias)
) WITHOUT ROWID;

-- Every alias move: who, when, from which version to which (NULL = removed), and why.
CREATE TABLE alias_history (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    model           TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    alias           TEXT NOT NULL,
    from_version    INTEGER,
    to_version      INTEGER,
    actor           TEXT NOT NULL,
    reason          TEXT NOT NULL DEFAULT '',
    at              INTEGER NOT NULL
);
CREATE INDEX alias_history_model ON alias_history(model, alias, at);

-- A sample of served predictions, per model version, pruned to the configured retention.
CREATE TABLE prediction_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    model           TEXT NOT NULL,
    version         INTEGER NOT NULL,
    endpoint        TEXT NOT NULL,
    request         TEXT NOT NULL,
    response        TEXT NOT NULL,
    status          INTEGER NOT NULL,
    latency_us      INTEGER NOT NULL,
    at              INTEGER NOT NULL
);
CREATE INDEX prediction_log_model ON prediction_log(model, version, id);
