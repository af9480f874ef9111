-- Dataset versions (issue 3): each is a Parquet file in the content store, by its SHA-256.

CREATE TABLE datasets (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL,
    version         INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    rows            INTEGER NOT NULL,
    schema          TEXT NOT NULL,
    source          TEXT NOT NULL,
    run_id          INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    task_id         TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (name, version)
);
CREATE INDEX datasets_sha ON datasets(sha256);
