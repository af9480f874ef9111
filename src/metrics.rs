//! Prometheus metrics for `GET /metrics` (OpenMetrics text, which Prometheus scrapes as is).
//! Counters and histograms are updated where things happen (HTTP requests, finished task
//! attempts, inference requests); gauges are read from the store and the data dir at scrape time
//! (runs and tasks by state, queue depth, executor slots, file sizes). One process-wide set, as
//! there is one server per process.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};

type Labels = Vec<(String, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Mutex<Registry>,
    http_requests: Family<Labels, Counter>,
    http_seconds: Histograms,
    inference_requests: Family<Labels, Counter>,
    inference_seconds: Histograms,
    task_seconds: Histograms,
    runs: Family<Labels, Gauge>,
    tasks: Family<Labels, Gauge>,
    queued: Gauge,
    slots_busy: Gauge,
    slots_total: Gauge,
    sqlite_bytes: Gauge,
    index_bytes: Gauge,
    artifact_bytes: Gauge,
    /// Executor slots taken right now (the executor keeps it current).
    pub busy: Arc<AtomicUsize>,
}

fn latency_buckets() -> Histogram {
    // 0.25 ms to 32 s.
    Histogram::new([0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 8.0, 32.0])
}

fn task_buckets() -> Histogram {
    // 10 ms to 2 h.
    Histogram::new([0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0])
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("mlbox")),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(latency_buckets),
            inference_requests: Family::default(),
            inference_seconds: Family::new_with_constructor(latency_buckets),
            task_seconds: Family::new_with_constructor(task_buckets),
            runs: Family::default(),
            tasks: Family::default(),
            queued: Gauge::default(),
            slots_busy: Gauge::default(),
            slots_total: Gauge::default(),
            sqlite_bytes: Gauge::default(),
            index_bytes: Gauge::default(),
            artifact_bytes: Gauge::default(),
            busy: Arc::new(AtomicUsize::new(0)),
        };
        {
            let mut r = m.registry.lock().expect("metrics registry");
            r.register("http_requests", "HTTP requests by route, method and status", m.http_requests.clone());
            r.register("http_request_duration_seconds", "HTTP request latency by route", m.http_seconds.clone());
            r.register(
                "inference_requests",
                "Inference requests by model, version and outcome",
                m.inference_requests.clone(),
            );
            r.register(
                "inference_duration_seconds",
                "Inference latency by model and version",
                m.inference_seconds.clone(),
            );
            r.register("task_duration_seconds", "Finished task attempts by pipeline and state", m.task_seconds.clone());
            r.register("runs", "Runs by state", m.runs.clone());
            r.register("tasks", "Task instances by state", m.tasks.clone());
            r.register("queue_depth", "Task instances queued for an executor slot", m.queued.clone());
            r.register("executor_slots_busy", "Executor slots in use", m.slots_busy.clone());
            r.register("executor_slots", "Executor slots", m.slots_total.clone());
            r.register("sqlite_bytes", "Size of mlbox.db with its write-ahead log", m.sqlite_bytes.clone());
            r.register("search_index_bytes", "Size of the search index", m.index_bytes.clone());
            r.register("artifact_bytes", "Size of the artifact store", m.artifact_bytes.clone());
        }
        m
    }

    pub fn http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        self.http_requests.get_or_create(&labels(&[("route", route), ("method", method), ("status", &status)])).inc();
        self.http_seconds.get_or_create(&labels(&[("route", route), ("method", method)])).observe(seconds);
    }

    pub fn inference(&self, model: &str, version: i64, ok: bool, seconds: f64) {
        let v = version.to_string();
        let outcome = if ok { "ok" } else { "error" };
        self.inference_requests
            .get_or_create(&labels(&[("model", model), ("version", &v), ("outcome", outcome)]))
            .inc();
        self.inference_seconds.get_or_create(&labels(&[("model", model), ("version", &v)])).observe(seconds);
    }

    pub fn task_finished(&self, pipeline: &str, state: &str, seconds: f64) {
        self.task_seconds.get_or_create(&labels(&[("pipeline", pipeline), ("state", state)])).observe(seconds);
    }

    /// Read the gauges, then the whole exposition.
    pub fn render(&self, store: &crate::store::Store, data_dir: &Path, slots: usize) -> Result<String> {
        let (runs, tasks) = store.read(|c| {
            let group = |sql: &str| -> Result<Vec<(String, i64)>> {
                let mut st = c.prepare(sql)?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            };
            Ok((
                group("SELECT state, count(*) FROM runs GROUP BY state")?,
                group("SELECT state, count(*) FROM task_instances GROUP BY state")?,
            ))
        })?;
        self.runs.clear();
        self.tasks.clear();
        let mut queued = 0;
        for (state, n) in runs {
            self.runs.get_or_create(&labels(&[("state", &state)])).set(n);
        }
        for (state, n) in tasks {
            if state == "queued" {
                queued = n;
            }
            self.tasks.get_or_create(&labels(&[("state", &state)])).set(n);
        }
        self.queued.set(queued);
        self.slots_busy.set(self.busy.load(Ordering::Relaxed) as i64);
        self.slots_total.set(slots as i64);
        let file = |p: &Path| std::fs::metadata(p).map(|m| m.len() as i64).unwrap_or(0);
        self.sqlite_bytes.set(file(&data_dir.join("mlbox.db")) + file(&data_dir.join("mlbox.db-wal")));
        self.index_bytes.set(crate::maintenance::tree_size(&data_dir.join("search")).1 as i64);
        self.artifact_bytes.set(crate::maintenance::tree_size(&data_dir.join("artifacts")).1 as i64);
        let mut out = String::new();
        let registry = self.registry.lock().map_err(Error::internal)?;
        prometheus_client::encoding::text::encode(&mut out, &registry).map_err(Error::internal)?;
        Ok(out)
    }
}
