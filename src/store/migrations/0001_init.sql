-- mlbox metadata, version 1. Released migrations are never edited: add a new numbered file instead.
-- Times are microseconds since the Unix epoch (UTC).

CREATE TABLE pipelines (
    name            TEXT PRIMARY KEY,
    yaml            TEXT NOT NULL,
    spec_hash       TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    schedule        TEXT,
    paused          INTEGER NOT NULL DEFAULT 0,
    source          TEXT NOT NULL DEFAULT 'api',
    next_logical    INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline        TEXT NOT NULL REFERENCES pipelines(name) ON DELETE CASCADE,
    state           TEXT NOT NULL,
    trigger         TEXT NOT NULL,
    logical_date    INTEGER NOT NULL,
    params          TEXT NOT NULL,
    yaml            TEXT NOT NULL,
    spec_hash       TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    error           TEXT
);
CREATE INDEX runs_pipeline ON runs(pipeline, id);
CREATE INDEX runs_state ON runs(state, id);
CREATE UNIQUE INDEX runs_scheduled_once ON runs(pipeline, logical_date) WHERE trigger IN ('schedule', 'backfill');

CREATE TABLE task_instances (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    task_id         TEXT NOT NULL,
    map_index       INTEGER NOT NULL DEFAULT -1,
    item            TEXT,
    state           TEXT NOT NULL,
    try_number      INTEGER NOT NULL DEFAULT 0,
    max_tries       INTEGER NOT NULL,
    queued_at       INTEGER,
    started_at      INTEGER,
    finished_at     INTEGER,
    next_try_at     INTEGER,
    outputs         TEXT,
    error           TEXT,
    UNIQUE (run_id, task_id, map_index)
);

CREATE TABLE task_attempts (
    ti_id           INTEGER NOT NULL REFERENCES task_instances(id) ON DELETE CASCADE,
    try_number      INTEGER NOT NULL,
    state           TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    error           TEXT,
    PRIMARY KEY (ti_id, try_number)
);

CREATE TABLE artifacts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    task_id         TEXT NOT NULL,
    map_index       INTEGER NOT NULL,
    name            TEXT NOT NULL,
    sha256          TEXT NOT NULL,
    size            INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX artifacts_run ON artifacts(run_id);
