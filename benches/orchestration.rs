//! Orchestration overhead: 100 `noop` tasks as a chain and as a fan-out 1 → 98 → 1, timed from
//! trigger to "run finished" (every state change committed to SQLite in the data dir).
//! Run: `cargo bench --bench orchestration` (add `-- --runs 9` for more samples).
//! Peers: `bench/peers/run_peers.sh` runs Dagster, Prefect and Airflow on the same shapes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlbox::app::App;
use mlbox::config::{Config, Overrides};

fn chain() -> String {
    let mut y = String::from("name: chain\ntasks:\n  - id: t0\n    op: noop\n");
    for i in 1..100 {
        y.push_str(&format!("  - id: t{i}\n    op: noop\n    depends_on: [t{}]\n", i - 1));
    }
    y
}

fn fanout() -> String {
    let mut y = String::from("name: fanout\ntasks:\n  - id: start\n    op: noop\n");
    for i in 0..98 {
        y.push_str(&format!("  - id: m{i}\n    op: noop\n    depends_on: [start]\n"));
    }
    let mids: Vec<String> = (0..98).map(|i| format!("m{i}")).collect();
    y.push_str(&format!("  - id: end\n    op: noop\n    depends_on: [{}]\n", mids.join(", ")));
    y
}

fn time_run(app: &App, name: &str) -> Duration {
    let mut events = app.engine.subscribe();
    let t = Instant::now();
    let id = app.trigger(name, &BTreeMap::new(), None, "manual").expect("trigger");
    loop {
        let ev = events.blocking_recv().expect("event stream");
        if ev.kind == "run" && ev.run_id == id && matches!(ev.state, "success" | "failed" | "cancelled") {
            assert_eq!(ev.state, "success");
            // The run's final state is written (and waited on) before this event is sent.
            return t.elapsed();
        }
    }
}

fn main() {
    let runs: usize = std::env::args().skip_while(|a| a != "--runs").nth(1).and_then(|v| v.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().expect("temp dir");
    let o = Overrides { data_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let config = Config::resolve(&o).expect("config");
    let lock = match mlbox::app::acquire(dir.path()).expect("lock") {
        mlbox::lock::Acquire::Owned(l) => l,
        mlbox::lock::Acquire::HeldBy(_) => panic!("locked"),
    };
    let app = Arc::new(App::open(config, lock, false).expect("open"));
    for (name, yaml) in [("chain", chain()), ("fanout", fanout())] {
        app.upsert_pipeline(name, &yaml, "bench").expect("pipeline");
        time_run(&app, name); // warm-up: page cache, plan cache
        let mut ms: Vec<f64> = (0..runs).map(|_| time_run(&app, name).as_secs_f64() * 1000.0).collect();
        let samples = ms.clone();
        ms.sort_by(f64::total_cmp);
        let median = ms[ms.len() / 2];
        println!(
            "{{\"peer\":\"mlbox\",\"shape\":\"{name}\",\"runs_ms\":[{}],\"median_ms\":{median:.2}}}",
            samples.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(",")
        );
    }
    app.shutdown(Duration::from_secs(5));
}
