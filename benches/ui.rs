//! The UI and search over a data dir with 10,000 runs and 100,000 task-log lines: each page's
//! server-side time (request in, HTML out, through the real router) and search query latency.
//!
//! The data is written the way mlbox writes it (runs, task instances and attempts in SQLite,
//! one log file per attempt) for the three demo pipelines, then indexed by mlbox's own rebuild
//! path. Log lines follow the shapes the trainers and data ops print, with varying numbers, ids
//! and a few rare words. Each query is run 300 times against a warm reader, snippets included;
//! each page 50 times. `cargo bench --bench ui` prints one JSON line per query and per page
//! (p50/p99 in ms) and summary lines.

use std::io::Write;
use std::time::Instant;

use mlbox::config::{Config, Overrides};
use mlbox::logs::LogKey;
use mlbox::search::Request;
use mlbox::store::{pipelines, runs};
use serde_json::json;

const RUNS: usize = 10_000;
const LOGGED_RUNS: usize = 2_000;
const LINES_PER_RUN: usize = 50;

/// A small deterministic generator, so every run of the bench indexes the same text.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.next() as usize % xs.len()]
    }
}

fn log_line(r: &mut Lcg, run: usize, i: usize) -> String {
    let v = |r: &mut Lcg| (r.next() % 100_000) as f64 / 10_000.0;
    match r.next() % 10 {
        0 => format!("ingest: read {} rows from sample-data/taxi/nyc_yellow_trips.parquet", 1000 + r.next() % 300_000),
        1 => format!(
            "validate: column {} null rate {:.4} psi {:.3}",
            r.pick(&["fare", "trip_distance", "pickup_location_id", "close", "volume"]),
            v(r) / 10.0,
            v(r) / 20.0
        ),
        2 => format!("sql: wrote dataset taxi_features v{} ({} rows)", run % 40 + 1, 5000 + r.next() % 90_000),
        3..=5 => format!(
            "epoch {}/{} train_loss {:.5} val_loss {:.5} ({} ms)",
            i % 30 + 1,
            30,
            v(r),
            v(r),
            100 + r.next() % 5000
        ),
        6 => format!("checkpoint saved to artifacts/run-{run}/train/epoch-{}.ckpt", i % 30 + 1),
        7 => format!("evaluate: rmse {:.3} mae {:.3} slice pickup_hour={} rmse {:.3}", v(r), v(r), r.next() % 24, v(r)),
        8 => format!(
            "warning: {} in shard {} (retrying in {} ms)",
            r.pick(&["connection reset by peer", "slow disk", "timeout waiting for lock", "checksum mismatch"]),
            r.next() % 64,
            r.next() % 1000
        ),
        _ => format!("forecast: {} next 10 days return {:+.3}%", r.pick(&["btc", "eth", "ltc"]), v(r) - 5.0),
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let o = Overrides { data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let config = Config::resolve(&o).unwrap();
    let lock = match mlbox::app::acquire(dir.path()).unwrap() {
        mlbox::lock::Acquire::Owned(l) => l,
        mlbox::lock::Acquire::HeldBy(_) => panic!("data dir locked"),
    };
    let app = std::sync::Arc::new(mlbox::app::App::open(config, lock, false).unwrap());
    let store = app.store.clone();
    let logs_dir = app.logs.dir().to_path_buf();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let names = ["taxi", "crypto", "hello"];
    let t0 = Instant::now();
    for name in names {
        let yaml = std::fs::read_to_string(root.join(format!("pipelines/{name}.yaml"))).unwrap();
        store
            .write(move |tx| {
                let p = pipelines::NewPipeline {
                    name,
                    yaml: &yaml,
                    spec_hash: "bench",
                    description: "",
                    schedule: None,
                    source: "bench",
                    next_logical: None,
                    reschedule: false,
                };
                pipelines::upsert(tx, &p, 0).map(|_| ())
            })
            .unwrap();
    }
    let tasks = ["ingest", "validate", "features", "train", "evaluate"];
    let mut rng = Lcg(7);
    let mut rows = Vec::new();
    for i in 0..RUNS {
        let failed = i % 17 == 0;
        let word = if i % 1000 == 0 { " zanzibar" } else { "" };
        rows.push((names[i % 3], i, failed, format!("task train failed: loss diverged at epoch {}{word}", i % 30)));
    }
    let ids = store
        .write(move |tx| {
            let mut ids = Vec::new();
            for (p, i, failed, err) in &rows {
                let params = json!({"epochs": 5 + i % 20, "learning_rate": 0.001 * (1 + i % 5) as f64, "seed": i});
                let r = runs::NewRun {
                    pipeline: p,
                    trigger: "manual",
                    logical_date: *i as i64,
                    params: &params,
                    yaml: "",
                    spec_hash: "bench",
                    tasks: tasks.iter().map(|t| (t.to_string(), 1)).collect(),
                };
                let id = runs::create(tx, &r, *i as i64 * 1_000_000)?.unwrap();
                let state = if *failed { "failed" } else { "success" };
                runs::set_run_state(tx, id, state, *i as i64, failed.then_some(err.as_str()))?;
                ids.push(id);
            }
            Ok(ids)
        })
        .unwrap();
    let mut lines = 0;
    for (n, &id) in ids.iter().enumerate().take(LOGGED_RUNS) {
        let task = tasks[n % tasks.len()];
        let key = LogKey { run_id: id, task_id: task.to_string(), map_index: -1, try_number: 1 };
        let path = key.path(&logs_dir);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..LINES_PER_RUN {
            writeln!(f, "{}", log_line(&mut rng, id as usize, i)).unwrap();
            lines += 1;
        }
        store
            .write(move |tx| {
                let ti: i64 = tx.query_row(
                    "SELECT id FROM task_instances WHERE run_id = ?1 AND task_id = ?2",
                    rusqlite::params![id, task],
                    |r| r.get(0),
                )?;
                runs::start_attempt(tx, ti, 1, 0)?;
                runs::finish_attempt(tx, ti, 1, "success", 1, None)
            })
            .unwrap();
    }
    let written = t0.elapsed();

    let t1 = Instant::now();
    let search = app.search.clone();
    let docs = search.reindex().unwrap();
    let rebuild = t1.elapsed();

    let queries: &[(&str, Option<&str>)] = &[
        ("epoch", None),
        ("zanzibar", None),
        ("\"checksum mismatch\"", None),
        ("train_loss val_loss", Some("log")),
        ("diverged", Some("run")),
        ("timeout OR reset", None),
        ("taxi_features", None),
        ("learning_rate", Some("run")),
        ("btc -eth", Some("log")),
        ("pickup_location_id", None),
    ];
    let mut all = Vec::new();
    for (q, kind) in queries {
        let req = Request { q: q.to_string(), kind: kind.map(String::from), limit: Some(20), offset: None };
        let total = search.query(&req).unwrap().total;
        for _ in 0..30 {
            search.query(&req).unwrap();
        }
        let mut ms: Vec<f64> = (0..300)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(search.query(&req).unwrap());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        all.extend(ms.iter().copied());
        ms.sort_by(f64::total_cmp);
        println!(
            "{}",
            json!({"query": q, "kind": kind, "matches": total, "p50_ms": ms[ms.len() / 2], "p99_ms": ms[ms.len() * 99 / 100]})
        );
    }
    all.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "summary": true, "runs": RUNS, "log_lines": lines, "documents": docs,
            "write_s": written.as_secs_f64(), "rebuild_s": rebuild.as_secs_f64(),
            "p50_ms": all[all.len() / 2], "p99_ms": all[all.len() * 99 / 100], "max_ms": all[all.len() - 1],
            "index_bytes": dir_size(&dir.path().join("search")),
        })
    );

    // Pages: the same router `mlbox serve` runs, one request at a time.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let router = mlbox::server::router(app.clone());
    let hash = mlbox::auth::hash_password("bench-password").unwrap();
    let (_, token) = app
        .store
        .write(move |tx| {
            mlbox::auth::add_user(tx, "bench", mlbox::auth::Role::Viewer, &hash)?;
            mlbox::auth::create_token(tx, "bench", "bench")
        })
        .unwrap();
    let mid = ids[ids.len() / 2];
    let pages = [
        "/".to_string(),
        "/pipelines".into(),
        "/pipelines/taxi".into(),
        "/runs".into(),
        "/runs?state=failed".into(),
        format!("/runs/{mid}"),
        format!("/runs/{}?task=ingest&map_index=-1&try=1", ids[0]),
        "/experiments".into(),
        "/datasets".into(),
        "/models".into(),
        "/search?q=epoch".into(),
    ];
    let mut worst: f64 = 0.0;
    for path in pages {
        let get = |path: &str| {
            // Signed in as a viewer with an API token, as a team's server is used.
            let req = axum::http::Request::get(path)
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap();
            let r = router.clone();
            rt.block_on(async move {
                let resp = tower::ServiceExt::oneshot(r, req).await.unwrap();
                let status = resp.status().as_u16();
                let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
                (status, body.len())
            })
        };
        let (status, bytes) = get(&path);
        assert_eq!(status, 200, "{path}");
        let mut ms: Vec<f64> = (0..50)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(get(&path));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        worst = worst.max(ms[ms.len() * 99 / 100]);
        println!(
            "{}",
            json!({"page": path, "bytes": bytes, "p50_ms": ms[ms.len() / 2], "p99_ms": ms[ms.len() * 99 / 100]})
        );
    }
    println!("{}", json!({"summary": "pages", "runs": RUNS, "worst_page_p99_ms": worst}));
    app.shutdown(std::time::Duration::from_secs(5));
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() { dir_size(&e.path()) } else { m.len() }
        })
        .sum()
}
