-- The datasets a run wrote are looked up by run (the search index reads them when a run ends).
CREATE INDEX datasets_run ON datasets(run_id);
