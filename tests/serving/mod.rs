//! The registry and serving against the real server: register and promote from a pipeline, both
//! inference endpoints, batch = online, hot swap under load, streams, events, bad input.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use polars::prelude::*;
use serde_json::{Value, json};

use crate::common::{BIN, TestServer, task, wait_for};

/// The small taxi pipeline of the ML tests, plus evaluate → register → promote (if blessed) and
/// batch `predict` over the test split.
pub fn taxi_serving_pipeline() -> String {
    crate::ml::taxi_pipeline(2, "")
        + r#"
  - id: check
    op: validate
    depends_on: [load]
    with: {input: "${{ tasks.load.outputs.dataset }}", on_anomaly: warn}
  - id: evaluate
    op: evaluate
    depends_on: [train]
    with:
      model: "${{ tasks.train.outputs.model }}"
      dataset: "${{ tasks.split.outputs.test }}"
      compare: {production: "models:/taxi-duration@production"}
      gates:
        - {metric: rmse, beat: mean}
        - {metric: rmse, than: production, max_worse: 0.5}
  - id: register
    op: register
    depends_on: [evaluate]
    with:
      name: taxi-duration
      model: "${{ tasks.train.outputs.model }}"
      evaluation: "${{ tasks.evaluate.outputs }}"
  - id: promote
    op: promote
    depends_on: [register]
    with: {name: taxi-duration, version: "${{ tasks.register.outputs.version }}", require_blessed: true}
  - id: batch
    op: predict
    depends_on: [promote]
    with: {model: "models:/taxi-duration@production", dataset: "${{ tasks.split.outputs.test }}", name: scored}
"#
}

/// The first `n` rows of a dataset file as serving records (times as text).
fn records(df: &DataFrame, n: usize) -> Vec<Value> {
    let col = |c: &str| df.column(c).unwrap().clone();
    let t = col("pickup_datetime").cast(&DataType::String).unwrap();
    let t = t.str().unwrap();
    let pu = col("pickup_location_id").cast(&DataType::Int64).unwrap();
    let dr = col("dropoff_location_id").cast(&DataType::Int64).unwrap();
    let pa = col("passenger_count").cast(&DataType::Float64).unwrap();
    let (pu, dr, pa) = (pu.i64().unwrap(), dr.i64().unwrap(), pa.f64().unwrap());
    (0..n)
        .map(|i| {
            json!({"pickup_datetime": t.get(i).unwrap(), "pickup_location_id": pu.get(i).unwrap(),
                   "dropoff_location_id": dr.get(i).unwrap(), "passenger_count": pa.get(i)})
        })
        .collect()
}

fn oip_request(recs: &[Value]) -> Value {
    let col = |k: &str| recs.iter().map(|r| r[k].clone()).collect::<Vec<_>>();
    let n = recs.len();
    json!({"id": "req-1", "inputs": [
        {"name": "pickup_datetime", "datatype": "BYTES", "shape": [n], "data": col("pickup_datetime")},
        {"name": "pickup_location_id", "datatype": "INT64", "shape": [n], "data": col("pickup_location_id")},
        {"name": "dropoff_location_id", "datatype": "INT64", "shape": [n], "data": col("dropoff_location_id")},
        {"name": "passenger_count", "datatype": "FP64", "shape": [n], "data": col("passenger_count")},
    ]})
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|x| x.as_f64().unwrap()).collect()
}

fn dataset(s: &TestServer, r: &Value) -> DataFrame {
    let path = mlbox::artifacts::path_of(&s.data_dir, r["sha256"].as_str().unwrap());
    ParquetReader::new(std::fs::File::open(path).unwrap()).finish().unwrap()
}

/// Put with the test client.
fn put(s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.put(&format!("{}{path}", s.base)).send_json(body).unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap())
}

#[test]
fn taxi_model_is_registered_promoted_and_served_the_same_online_and_in_batch() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    s.apply(&taxi_serving_pipeline());
    let run = s.wait_run(s.trigger("taxi_small", json!({})), 300);
    assert_eq!(run["run"]["state"], "success", "{run}");
    let reg = &task(&run, "register")["outputs"];
    assert_eq!((reg["version"].as_i64(), reg["blessed"].as_bool()), (Some(1), Some(true)), "{reg}");
    assert_eq!(task(&run, "promote")["outputs"]["promoted"], true);

    // The registry: the version with its signature, evaluation and lineage.
    let (st, m) = s.get("/api/v1/models/taxi-duration");
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["model"]["aliases"]["production"], 1);
    let v1 = &m["versions"][0];
    assert_eq!(v1["signature"]["inputs"].as_array().unwrap().len(), 4);
    assert!(v1["metrics"]["eval_rmse"].as_f64().is_some(), "{v1}");
    assert_eq!(v1["lineage"]["run_id"], run["run"]["id"]);
    assert_eq!(v1["lineage"]["task_id"], "train");
    assert!(v1["lineage"]["datasets"].to_string().contains("taxi"), "{v1}");

    // Search finds the model, its version by alias, and datasets by a column name.
    let found = |q: &str, kind: &str| {
        wait_for(20, &format!("{kind} hits for {q}"), || {
            let (_, v) = s.get(&format!("/api/v1/search?q={q}&kind={kind}"));
            let ids: Vec<String> =
                v["hits"].as_array()?.iter().filter_map(|h| h["id"].as_str().map(String::from)).collect();
            (!ids.is_empty()).then_some(ids)
        })
    };
    assert_eq!(found("taxi", "model"), vec!["model:taxi-duration".to_string()]);
    assert_eq!(found("production", "version"), vec!["version:taxi-duration/1".to_string()]);
    assert!(found("dropoff_location_id", "dataset").iter().all(|id| id.starts_with("dataset:")));

    // Batch (the `predict` op over the test split) = friendly endpoint = OIP endpoint, exactly.
    let scored = dataset(&s, &task(&run, "batch")["outputs"]["dataset"]);
    let batch: Vec<f64> = scored.column("prediction").unwrap().f64().unwrap().into_no_null_iter().take(40).collect();
    let recs = records(&scored, 40);
    let (st, online) = s.post_json("/api/v1/models/taxi-duration/predict", &json!(recs));
    assert_eq!(st, 200, "{online}");
    assert_eq!(online["version"], 1);
    assert_eq!(floats(&online["predictions"]), batch, "friendly endpoint = batch");
    let (st, oip) = s.post_json("/v2/models/taxi-duration/infer", &oip_request(&recs));
    assert_eq!(st, 200, "{oip}");
    assert_eq!((oip["model_version"].as_str(), oip["id"].as_str()), (Some("1"), Some("req-1")));
    assert_eq!(oip["outputs"][0]["shape"], json!([40]));
    assert_eq!(floats(&oip["outputs"][0]["data"]), batch, "OIP endpoint = batch");

    // `mlbox predict` over a CSV of the same rows (text times) gives the same numbers.
    let mut head = scored.head(Some(40));
    let csv = dir.path().join("rows.csv");
    CsvWriter::new(std::fs::File::create(&csv).unwrap()).finish(&mut head).unwrap();
    let out = dir.path().join("out.parquet");
    let st = std::process::Command::new(BIN)
        .args(["predict", "taxi-duration@production", "--server", &s.base, "--input"])
        .arg(&csv)
        .arg("--output")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let cli = ParquetReader::new(std::fs::File::open(&out).unwrap()).finish().unwrap();
    // The CSV already has a `prediction` column from the op; the CLI's is named the same, so it replaced it.
    let cli: Vec<f64> = cli.column("prediction").unwrap().f64().unwrap().into_no_null_iter().collect();
    assert_eq!(cli, batch, "mlbox predict = batch op");

    // OIP metadata, readiness, health and the repository index.
    assert_eq!(s.get("/v2/health/live").1["live"], true);
    assert_eq!(s.get("/v2/health/ready").1["ready"], true);
    assert_eq!(s.get("/v2").1["extensions"], json!(["model_repository"]));
    let (_, meta) = s.get("/v2/models/taxi-duration");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(meta["inputs"][1], json!({"name": "pickup_location_id", "datatype": "INT64", "shape": [-1]}));
    assert_eq!(s.get("/v2/models/taxi-duration/versions/1/ready").1["ready"], true);
    let (st, idx) = s.post_json("/v2/repository/index", &json!({}));
    assert_eq!((st, &idx[0]["state"]), (200, &json!("READY")), "{idx}");

    // Bad input: a clear 4xx naming the field; nothing else breaks.
    let bad = |path: &str, body: Value, status: u16, text: &str| {
        let (st, v) = s.post_json(path, &body);
        assert_eq!(st, status, "{path} {body} → {v}");
        assert!(v.to_string().contains(text), "{path}: expected {text:?} in {v}");
        v
    };
    let mut r = recs[0].clone();
    r.as_object_mut().unwrap().remove("pickup_location_id");
    bad("/api/v1/models/taxi-duration/predict", json!([r]), 400, "missing field `pickup_location_id` (INT64");
    let mut r = recs[0].clone();
    r["tip"] = json!(3);
    bad("/api/v1/models/taxi-duration/predict", json!([r]), 400, "unknown field `tip`");
    let mut r = recs[0].clone();
    r["dropoff_location_id"] = json!("JFK");
    bad("/api/v1/models/taxi-duration/predict", json!([r]), 400, "`dropoff_location_id` must be an integer");
    let mut r = recs[0].clone();
    r["pickup_datetime"] = json!("yesterday");
    bad("/api/v1/models/taxi-duration/predict", json!([r]), 400, "must be a time like");
    let e = bad("/v2/models/nope/infer", oip_request(&recs), 404, "no registered model `nope`");
    assert!(e["error"].is_string(), "OIP errors are {{\"error\": \"...\"}}: {e}");
    bad("/api/v1/models/nope/predict", json!([recs[0]]), 404, "no registered model `nope`");
    let mut req = oip_request(&recs);
    req["inputs"][1]["shape"] = json!([40, 1]);
    let e =
        bad("/v2/models/taxi-duration/infer", req, 400, "input `pickup_location_id` has shape [40, 1]; expected [-1]");
    assert!(e["error"].is_string());
    let mut req = oip_request(&recs);
    req["inputs"][0]["datatype"] = json!("FP32");
    bad("/v2/models/taxi-duration/infer", req, 400, "has datatype FP32; expected BYTES");
    bad("/v2/models/taxi-duration/versions/7/infer", oip_request(&recs), 404, "has no version 7");
    let (st, e) = s.post_headers_only("/v2/models/taxi-duration/infer", 50 * 1024 * 1024);
    assert_eq!(st, 413, "{e}");
    bad(
        "/api/v1/models/taxi-duration/predict?alias=staging",
        json!([recs[0]]),
        503,
        "no version under the alias `staging`",
    );

    // Unloaded: 503 until loaded again.
    assert_eq!(s.post_json("/v2/repository/models/taxi-duration/unload", &json!({})).0, 200);
    bad("/v2/models/taxi-duration/infer", oip_request(&recs), 503, "is unloaded");
    assert_eq!(s.get("/v2/models/taxi-duration/ready").0, 503);
    assert_eq!(s.post_json("/v2/repository/models/taxi-duration/load", &json!({})).0, 200);
    assert_eq!(s.post_json("/v2/models/taxi-duration/infer", &oip_request(&recs)).0, 200);

    // A second run registers version 2; promoting stays gated on its evaluation.
    let run2 = s.wait_run(s.trigger("taxi_small", json!({})), 300);
    assert_eq!(run2["run"]["state"], "success", "{run2}");
    assert_eq!(task(&run2, "register")["outputs"]["version"], 2);
    assert!(log_has(&s, &run2, "evaluate", "production"), "the gate compared against the serving version");

    hot_swap_under_load(&s, &recs[..1]);
    stream_answers_every_record(&s, &recs[0]);

    // The CLI: promote with a reason, then list, show and the history name who did it and why.
    let cli = |args: &[&str]| -> String {
        let out = std::process::Command::new(BIN).args(args).args(["--server", &s.base]).output().unwrap();
        assert!(out.status.success(), "mlbox {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let cur = s.get("/api/v1/models/taxi-duration").1["model"]["aliases"]["production"].as_i64().unwrap();
    let out = cli(&["models", "promote", "taxi-duration", &(3 - cur).to_string(), "--reason", "cli check"]);
    assert!(out.contains(&format!("version {cur} → {}", 3 - cur)), "{out}");
    assert!(cli(&["models", "list"]).contains(&format!("production→{}", 3 - cur)));
    assert!(cli(&["models", "show", "taxi-duration"]).contains("wide_deep"));
    let out = cli(&["models", "history", "taxi-duration", "--alias", "production"]);
    assert!(out.contains("cli check") && out.contains("cli ("), "{out}");

    // The alias history: who moved it when, and what served at a given time.
    let (_, h) = s.get("/api/v1/models/taxi-duration/history?alias=production");
    let h = h["history"].as_array().unwrap().clone();
    assert!(h.len() >= 6, "{h:?}");
    assert!(h.iter().any(|m| m["actor"].as_str().unwrap().starts_with("pipeline taxi_small")));
    let first = h.last().unwrap();
    assert_eq!((first["from_version"].clone(), first["to_version"].clone()), (Value::Null, json!(1)));
    let (_, at) = s.get("/api/v1/models/taxi-duration/history?at=2001-01-01");
    assert_eq!(at["version"], Value::Null);
    let t = chrono::DateTime::from_timestamp_micros(first["at"].as_i64().unwrap()).unwrap().to_rfc3339();
    let (_, at) = s.get(&format!("/api/v1/models/taxi-duration/history?at={}", t.replace('+', "%2B")));
    assert_eq!(at["version"], 1, "{at}");

    // Archive: an archived version cannot take an alias; the one serving cannot be archived.
    let (_, m) = s.get("/api/v1/models/taxi-duration");
    let serving = m["model"]["aliases"]["production"].as_i64().unwrap();
    let other = 3 - serving;
    assert_eq!(s.post_json(&format!("/api/v1/models/taxi-duration/versions/{serving}/archive"), &json!({})).0, 409);
    assert_eq!(s.post_json(&format!("/api/v1/models/taxi-duration/versions/{other}/archive"), &json!({})).0, 200);
    let (st, _) = s.post_json(&format!("/v2/models/taxi-duration/versions/{other}/infer"), &oip_request(&recs));
    assert_eq!(st, 404, "an archived version is not served by number");
    let (st, e) = put(&s, "/api/v1/models/taxi-duration/aliases/production", &json!({"version": other}));
    assert_eq!(st, 409, "{e}");
    assert!(e.to_string().contains("archived"), "{e}");
    assert_eq!(s.get("/api/v1/models/taxi-duration").1["model"]["aliases"]["production"], serving);

    // The prediction log and per-version counters.
    let (_, p) = s.get("/api/v1/models/taxi-duration/predictions?limit=5");
    let p = p["predictions"].as_array().unwrap();
    assert!(!p.is_empty() && p[0]["latency_us"].as_i64().is_some(), "{p:?}");
    let (_, stats) = s.get("/api/v1/serving");
    let total: u64 = stats["loaded"].as_array().unwrap().iter().map(|v| v["stats"]["requests"].as_u64().unwrap()).sum();
    assert!(total > 100, "{stats}");

    crate::ui::ml_pages_show_models_experiments_and_datasets(&s);
    crate::ops::backup_restores_every_run_model_and_artifact(&s);
}

fn log_has(s: &TestServer, run: &Value, t: &str, text: &str) -> bool {
    let (_, v) = s.get(&format!("/api/v1/runs/{}/tasks/{t}/logs", run["run"]["id"]));
    v.to_string().contains(text)
}

/// Connect to the event feed; the names of the events seen so far.
fn listen(s: &TestServer) -> Arc<Mutex<Vec<String>>> {
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let ev = events.clone();
    let addr = s.base.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        let mut sock = std::net::TcpStream::connect(&addr).unwrap();
        write!(sock, "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        for line in BufReader::new(sock).lines() {
            let Ok(line) = line else { return };
            if let Some(e) = line.strip_prefix("event: ") {
                ev.lock().unwrap().push(e.to_string());
            }
        }
    });
    wait_for(10, "the event feed to connect", || events.lock().unwrap().contains(&"hello".to_string()).then_some(()));
    events
}

/// Requests run continuously on both endpoints while the alias moves back and forth: none fails,
/// both versions answer, and the event feed reports every promotion and swap.
fn hot_swap_under_load(s: &TestServer, recs: &[Value]) {
    let events = listen(s);

    let stop = Arc::new(AtomicBool::new(false));
    let (errors, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (base, stop, errors, done, seen) =
                (s.base.clone(), stop.clone(), errors.clone(), done.clone(), seen.clone());
            let (rec, oip) = (json!(recs), oip_request(recs));
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                while !stop.load(Ordering::Relaxed) {
                    let (url, body) = if i % 2 == 0 {
                        (format!("{base}/api/v1/models/taxi-duration/predict"), &rec)
                    } else {
                        (format!("{base}/v2/models/taxi-duration/infer"), &oip)
                    };
                    match agent.post(&url).send_json(body) {
                        Ok(mut r) if r.status() == 200 => {
                            let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
                            let ver = v["version"].as_i64().or_else(|| v["model_version"].as_str()?.parse().ok());
                            seen.lock().unwrap().insert(ver.unwrap());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let cur = s.get("/api/v1/models/taxi-duration").1["model"]["aliases"]["production"].as_i64().unwrap();
    for v in [3 - cur, cur, 3 - cur, cur, 3 - cur] {
        let (st, r) =
            put(s, "/api/v1/models/taxi-duration/aliases/production", &json!({"version": v, "reason": "swap test"}));
        assert_eq!(st, 200, "{r}");
        let before = done.load(Ordering::Relaxed);
        wait_for(20, "requests after the swap", || (done.load(Ordering::Relaxed) > before + 20).then_some(()));
    }
    stop.store(true, Ordering::Relaxed);
    workers.into_iter().for_each(|w| w.join().unwrap());
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no request may fail during a swap");
    assert!(done.load(Ordering::Relaxed) > 100);
    assert_eq!(*seen.lock().unwrap(), [1, 2].into_iter().collect(), "both versions answered");
    let count = |kind: &str| events.lock().unwrap().iter().filter(|x| *x == kind).count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (count("promotion") < 5 || count("swap") < 5) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(count("promotion") >= 5 && count("swap") >= 5, "events: {:?}", events.lock().unwrap());
}

/// NDJSON in, one line out per record as it goes: predictions, an error for a bad record, and an
/// explicit skip while the model is unloaded.
fn stream_answers_every_record(s: &TestServer, rec: &Value) {
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    write!(
        sock,
        "POST /api/v1/streams/taxi-duration HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-ndjson\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(sock.try_clone().unwrap());
    let mut send = |line: &str| {
        let data = format!("{line}\n");
        write!(sock, "{:x}\r\n{data}\r\n", data.len()).unwrap();
        sock.flush().unwrap();
    };
    let mut head = String::new();
    // Each answer arrives before the next record is sent: the stream answers as it goes.
    send(&rec.to_string());
    loop {
        head.clear();
        reader.read_line(&mut head).unwrap();
        if head == "\r\n" {
            break;
        }
        assert!(!head.is_empty(), "the stream closed early");
    }
    let mut next_line = || -> Value {
        // Chunked response: a size line, then the data line.
        loop {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            let l = l.trim();
            if l.starts_with('{') {
                return serde_json::from_str(l).unwrap();
            }
        }
    };
    let first = next_line();
    assert!(first["prediction"].as_f64().is_some() && first["line"] == 1, "{first}");
    send("{\"pickup_datetime\": 5}");
    let second = next_line();
    assert!(
        second["error"].as_str().unwrap().contains("missing field")
            || second["error"].as_str().unwrap().contains("must be"),
        "{second}"
    );
    assert_eq!(s.post_json("/v2/repository/models/taxi-duration/unload", &json!({})).0, 200);
    send(&rec.to_string());
    let third = next_line();
    assert_eq!((third["line"].as_i64(), third["skipped"].as_bool()), (Some(3), Some(true)), "{third}");
    assert_eq!(s.post_json("/v2/repository/models/taxi-duration/load", &json!({})).0, 200);
    send(&rec.to_string());
    assert!(next_line()["prediction"].as_f64().is_some());
    write!(sock, "0\r\n\r\n").unwrap();
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
}

#[test]
fn the_crypto_forecaster_serves_ten_day_forecasts_equal_to_the_forecast_op() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    let yaml = crate::ml::crypto_pipeline().replace("horizon: 5", "horizon: 10")
        + r#"
  - id: register
    op: register
    depends_on: [gate]
    with: {name: crypto-lstm, model: "${{ tasks.train.outputs.model }}", evaluation: "${{ tasks.gate.outputs }}"}
  - id: stage
    op: promote
    depends_on: [register]
    with: {name: crypto-lstm, version: "${{ tasks.register.outputs.version }}", alias: staging}
"#;
    s.apply(&yaml);
    let events = listen(&s);
    let run = s.wait_run(s.trigger("fc", json!({"epochs": 1})), 300);
    assert_eq!(run["run"]["state"], "success", "{run}");
    // The feed saw the run change state, the version registered, staging move and serving swap.
    wait_for(10, "run, registered, promotion and swap events", || {
        let e = events.lock().unwrap();
        ["run", "registered", "promotion", "swap"].iter().all(|k| e.iter().any(|x| x == k)).then_some(())
    });
    // The forecast op's answer for BTC from the full history...
    let fc = &task(&run, "forecast")["outputs"];
    let want: Vec<f64> = fc["forecasts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["series"] == "btc")
        .map(|r| r["forecast"].as_f64().unwrap())
        .collect();
    assert_eq!(want.len(), 10);
    // ...equals serving's answer for the last 15 days of BTC sent as a record.
    let daily = dataset(&s, &task(&run, "daily")["outputs"]["dataset"]);
    let btc = daily.clone().lazy().filter(col("symbol").eq(lit("btc"))).collect().unwrap();
    let tail = btc.tail(Some(15));
    let vals = |c: &str| -> Vec<f64> { tail.column(c).unwrap().f64().unwrap().into_no_null_iter().collect() };
    let rec = json!({"symbol": "btc", "close": vals("close"), "volume": vals("volume")});
    let (st, v) = s.post_json("/api/v1/models/crypto-lstm/predict?alias=staging", &json!([rec]));
    assert_eq!(st, 200, "{v}");
    assert_eq!(floats(&v["predictions"][0]["forecast"]), want, "online = the forecast op");
    // Too short a history is a 400 that says how much is needed.
    let short = json!({"symbol": "btc", "close": [1.0, 2.0], "volume": [1.0, 2.0]});
    let (st, e) = s.post_json("/api/v1/models/crypto-lstm/predict?alias=staging", &json!([short]));
    assert_eq!(st, 400, "{e}");
    assert!(e.to_string().contains("at least 15 values"), "{e}");
    // This pipeline never promotes to production: a 503 that says to promote one.
    let (st, e) = s.post_json("/api/v1/models/crypto-lstm/predict", &json!([rec]));
    assert_eq!(st, 503, "{e}");
    assert!(e.to_string().contains("no version under the alias `production`"), "{e}");
}
