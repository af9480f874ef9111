-- Dataset statistics from `validate`, and experiment tracking (issue 3).

-- The statistics, inferred schema and anomalies of a dataset version, one row per validate task
-- that checked it (several tasks may check one version against different baselines).
CREATE TABLE dataset_stats (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL,
    version         INTEGER NOT NULL,
    stats           TEXT NOT NULL,
    schema          TEXT NOT NULL,
    anomalies       TEXT NOT NULL,
    baseline        TEXT,
    run_id          INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    task_id         TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (name, version, run_id, task_id)
);

-- One tracked experiment per training task instance (and per tuning trial).
CREATE TABLE experiments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    task_id         TEXT NOT NULL,
    map_index       INTEGER NOT NULL DEFAULT -1,
    parent_id       INTEGER REFERENCES experiments(id) ON DELETE CASCADE,
    pipeline        TEXT NOT NULL,
    spec_hash       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    model           TEXT,
    params          TEXT NOT NULL,
    tags            TEXT NOT NULL,
    datasets        TEXT NOT NULL,
    metrics         TEXT NOT NULL DEFAULT '{}',
    artifact        TEXT,
    state           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX experiments_run ON experiments(run_id);
CREATE INDEX experiments_parent ON experiments(parent_id);

-- Step-wise metric history of an experiment.
CREATE TABLE metric_points (
    experiment_id   INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    step            INTEGER NOT NULL,
    value           REAL NOT NULL,
    ts              INTEGER NOT NULL,
    PRIMARY KEY (experiment_id, key, step)
) WITHOUT ROWID;
