//! The ML ops end to end on real sample data: validate, train (LSTM and wide&deep), evaluate with
//! gates, forecast, experiment tracking, checkpoint resume after kill -9, and determinism.

use serde_json::{Value, json};

use crate::common::*;

fn log_of(s: &TestServer, run: i64, task: &str) -> String {
    ureq::get(&format!("{}/api/v1/runs/{run}/tasks/{task}/logs", s.base))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

#[test]
fn validate_records_statistics_and_flags_drift_against_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    s.apply(&format!(
        r#"
name: checks
params:
  scale: {{type: float, default: 1.0}}
  on_anomaly: warn
tasks:
  - id: load
    op: ingest
    with: {{source: "{pq}", name: trips}}
  - id: sample
    op: sql
    depends_on: [load]
    with:
      inputs: {{trips: "${{{{ tasks.load.outputs.dataset }}}}"}}
      query: "SELECT pickup_datetime, passenger_count, payment_type, trip_distance * ${{{{ params.scale }}}} AS trip_distance FROM trips"
      name: trips_sample
  - id: check
    op: validate
    depends_on: [sample]
    with:
      input: "${{{{ tasks.sample.outputs.dataset }}}}"
      rules: {{skip_drift: [pickup_datetime]}}
      on_anomaly: "${{{{ params.on_anomaly }}}}"
  - id: against_schema
    op: validate
    depends_on: [sample]
    with:
      input: "${{{{ tasks.sample.outputs.dataset }}}}"
      baseline: none
      schema: {{pickup_datetime: "datetime[μs]", passenger_count: i64, payment_type: i32, fare: f64}}
"#,
        pq = sample("taxi/nyc_yellow_trips.parquet")
    ));
    let first = s.wait_run(s.trigger("checks", json!({})), 180);
    assert_eq!(first["run"]["state"], "success", "{first}");
    let out = &task(&first, "check")["outputs"];
    assert_eq!(out["baseline"], Value::Null, "the first version has nothing to compare with");
    assert_eq!(out["ok"], true, "{out}");
    let schema_out = &task(&first, "against_schema")["outputs"];
    let kinds: Vec<(&str, &str)> = schema_out["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["column"].as_str().unwrap(), a["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("passenger_count", "type_change"), ("fare", "missing_column"), ("trip_distance", "new_column")],
        "checked in schema order, then the columns the schema does not name"
    );

    let (st, stats) = s.get("/api/v1/datasets/trips_sample/versions/1/stats?task=check");
    assert_eq!(st, 200, "{stats}");
    let cols = stats["statistics"]["columns"].as_array().unwrap();
    let dist = cols.iter().find(|c| c["name"] == "trip_distance").unwrap();
    assert_eq!(dist["count"].as_u64().unwrap() + dist["nulls"].as_u64().unwrap(), 300_000);
    assert_eq!(dist["histogram"]["counts"].as_array().unwrap().len(), 20);
    assert_eq!(dist["quantiles"].as_array().unwrap().len(), 7);
    let pas = cols.iter().find(|c| c["name"] == "passenger_count").unwrap();
    assert!(pas["nulls"].as_u64().unwrap() > 1000, "the sample's known empty passenger counts: {pas}");
    assert!(!pas["top"].as_array().unwrap().is_empty());
    assert_eq!(stats["schema"]["trip_distance"]["type"], "f64");

    // Same data scaled ×3: a new version whose distances drifted from the previous one. With
    // on_anomaly: fail the task fails and says why; the statistics are kept all the same.
    let second = s.wait_run(s.trigger("checks", json!({"scale": 3.0, "on_anomaly": "fail"})), 180);
    assert_eq!(second["run"]["state"], "failed", "{second}");
    let check = task(&second, "check");
    assert_eq!(check["state"], "failed");
    let err = check["error"].as_str().unwrap();
    assert!(err.contains("trip_distance") && err.contains("PSI"), "{err}");
    // Two tasks checked version 2, against different baselines: each record is kept.
    let (st, v2) = s.get("/api/v1/datasets/trips_sample/versions/2/stats?task=check");
    assert_eq!(st, 200);
    assert_eq!(v2["baseline"], "trips_sample v1");
    assert!(v2["anomalies"].as_array().unwrap().iter().any(|a| a["kind"] == "drift"), "{v2}");
    let (_, other) = s.get("/api/v1/datasets/trips_sample/versions/2/stats?task=against_schema");
    assert_eq!(other["baseline"], Value::Null, "{other}");
    assert_eq!(other["task_id"], "against_schema");
    let (st, _) = s.get("/api/v1/datasets/trips_sample/versions/9/stats");
    assert_eq!(st, 404);
}

pub fn crypto_pipeline() -> String {
    format!(
        r#"
name: fc
params:
  epochs: {{type: int, default: 3}}
tasks:
  - id: load
    op: ingest
    with: {{source: "{pq}", name: prices}}
  - id: daily
    op: sql
    depends_on: [load]
    with:
      inputs: {{p: "${{{{ tasks.load.outputs.dataset }}}}"}}
      query: "SELECT symbol, date, AVG(close) AS close, AVG(volume) AS volume FROM p WHERE exchange = 'coinbase-pro' AND close > 0 GROUP BY symbol, date ORDER BY symbol, date"
      name: daily
  - id: split
    op: split
    depends_on: [daily]
    with: {{input: "${{{{ tasks.daily.outputs.dataset }}}}", name: daily, by: time, column: date}}
  - id: train
    op: train
    depends_on: [split]
    with:
      model: lstm
      train: "${{{{ tasks.split.outputs.train }}}}"
      validation: "${{{{ tasks.split.outputs.validation }}}}"
      params: {{series: symbol, time: date, target: close, features: [log_return, "log:volume"], window: 14, horizon: 5, hidden: 8, epochs: "${{{{ params.epochs }}}}", batch_size: 64, seed: 3}}
  - id: gate
    op: evaluate
    depends_on: [train]
    with:
      model: "${{{{ tasks.train.outputs.model }}}}"
      dataset: "${{{{ tasks.split.outputs.validation }}}}"
      prefix: validation
      gates: [{{metric: mae, beat: naive}}]
  - id: forecast
    op: forecast
    depends_on: [train]
    with:
      model: "${{{{ tasks.train.outputs.model }}}}"
      dataset: "${{{{ tasks.daily.outputs.dataset }}}}"
      name: forecasts
"#,
        pq = sample("crypto/daily_ohlcv.parquet")
    )
}

#[test]
fn lstm_on_real_crypto_prices_is_tracked_gated_against_naive_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    s.apply(&crypto_pipeline());
    let a = s.trigger("fc", json!({}));
    let run = s.wait_run(a, 300);
    assert_eq!(run["run"]["state"], "success", "{run}");
    let tr = &task(&run, "train")["outputs"];
    let exp = tr["experiment"].as_i64().unwrap();
    assert_eq!(tr["model"]["kind"], "lstm");
    assert!(tr["data"]["train_windows"].as_u64().unwrap() > 3000, "{tr}");

    // The gate: metrics per horizon step next to both baselines, per coin, and a verdict.
    let gate = &task(&run, "gate")["outputs"];
    assert_eq!(gate["per_step"].as_array().unwrap().len(), 5);
    for coin in ["btc", "eth", "ltc"] {
        assert!(gate["slices"][coin]["metrics"]["mae"].as_f64().unwrap() > 0.0, "{coin}: {gate}");
    }
    let (mae, naive) = (gate["metrics"]["mae"].as_f64().unwrap(), gate["baselines"]["naive"]["mae"].as_f64().unwrap());
    assert!(gate["baselines"]["seasonal_naive"]["mae"].as_f64().unwrap() > 0.0);
    assert_eq!(gate["blessed"], mae < naive, "blessed exactly when the model beats naive: {mae} vs {naive}");

    // Forecasts: the next 5 days of each coin, as a dataset.
    let fc = &task(&run, "forecast")["outputs"];
    assert_eq!(fc["dataset"]["rows"], 15, "{fc}");
    assert!(fc["series"]["btc"]["forecast"].as_f64().unwrap() > 0.0);

    // Tracking: params with defaults filled in, datasets, live per-epoch history, eval metrics.
    let (_, e) = s.get(&format!("/api/v1/experiments/{exp}"));
    let x = &e["experiment"];
    assert_eq!(x["params"]["hidden"], 8);
    assert_eq!(x["params"]["layers"], 1, "defaults are recorded too");
    assert_eq!(x["datasets"]["train"]["name"], "daily_train");
    assert!(x["metrics"]["validation_mae"].as_f64().is_some(), "evaluate records its metrics: {x}");
    let (_, h) = s.get(&format!("/api/v1/experiments/{exp}/metrics/val_loss"));
    let epochs = tr["epochs_run"].as_u64().unwrap() as usize;
    assert_eq!(h["points"].as_array().unwrap().len(), epochs, "{h}");
    let (_, h1) = s.get(&format!("/api/v1/experiments/{exp}/metrics/val_loss?max_points=1"));
    assert_eq!(h1["points"].as_array().unwrap().len(), 1);
    assert!(log_of(&s, a, "train").contains("epoch 1: train_loss"));

    // Same seed, same data: the same weights. A different seed: different ones.
    let b = s.wait_run(s.trigger("fc", json!({})), 300);
    let tr_b = &task(&b, "train")["outputs"];
    assert_eq!(tr_b["weights_sha256"], tr["weights_sha256"], "same seed and data must give the same model");

    // Filter, sort and compare over the API and the CLI.
    let (_, list) = s.get("/api/v1/experiments?where=params.hidden=8,model=lstm&order=-metrics.best_val_loss");
    assert_eq!(list["experiments"].as_array().unwrap().len(), 2, "{list}");
    let (st, bad) = s.get("/api/v1/experiments?where=nonsense%3E1");
    assert_eq!(st, 400, "{bad}");
    let (_, cmp) = s.get(&format!("/api/v1/experiments/compare?runs={a},{}", b["run"]["id"]));
    assert_eq!(cmp["params"]["hidden"]["differs"], false);
    assert_eq!(cmp["metrics"]["best_val_loss"]["values"].as_array().unwrap().len(), 2);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlbox"))
        .args(["--server", &s.base, "runs", "compare", &a.to_string(), &b["run"]["id"].to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("hidden") && text.contains("best_val_loss") && text.contains("validation_mae"), "{text}");
}

pub fn taxi_pipeline(epochs: u32, extra: &str) -> String {
    format!(
        r#"
name: taxi_small
tasks:
  - id: load
    op: ingest
    with: {{source: "{pq}", name: trips}}
  - id: features
    op: sql
    depends_on: [load]
    with:
      inputs: {{trips: "${{{{ tasks.load.outputs.dataset }}}}"}}
      name: taxi_features
      query: |
        SELECT pickup_datetime, pickup_location_id, dropoff_location_id, passenger_count, trip_distance,
               date_part('hour', pickup_datetime) AS pickup_hour,
               (date_part('epoch', dropoff_datetime) - date_part('epoch', pickup_datetime)) / 60.0 AS duration_min
        FROM trips
        WHERE pickup_datetime >= '2018-01-01' AND pickup_datetime < '2018-07-01'
          AND (date_part('epoch', dropoff_datetime) - date_part('epoch', pickup_datetime)) BETWEEN 60 AND 10800
  - id: split
    op: split
    depends_on: [features]
    with: {{input: "${{{{ tasks.features.outputs.dataset }}}}", name: taxi, by: time, column: pickup_datetime}}
  - id: train
    op: train
    depends_on: [split]
    retries: 1
    with:
      model: wide_deep
      train: "${{{{ tasks.split.outputs.train }}}}"
      validation: "${{{{ tasks.split.outputs.validation }}}}"
      params: {{target: duration_min, epochs: {epochs}, seed: 5{extra}}}
"#,
        pq = sample("taxi/nyc_yellow_trips.parquet")
    )
}

#[test]
fn wide_deep_on_real_taxi_trips_beats_the_mean_and_the_linear_model_per_hour() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    let mut yaml = taxi_pipeline(2, "");
    yaml += r#"
  - id: train_linear
    op: train
    depends_on: [split]
    with:
      model: wide_deep
      train: "${{ tasks.split.outputs.train }}"
      validation: "${{ tasks.split.outputs.validation }}"
      params: {target: duration_min, deep: false, epochs: 2, learning_rate: 0.01, seed: 5}
  - id: evaluate
    op: evaluate
    depends_on: [train, train_linear]
    with:
      model: "${{ tasks.train.outputs.model }}"
      dataset: "${{ tasks.split.outputs.test }}"
      slice_by: pickup_hour
      compare: {linear: "${{ tasks.train_linear.outputs.model }}"}
      gates: [{metric: rmse, beat: mean}, {metric: rmse, beat: linear}, {metric: r2, min: 0.99}]
  - id: long_trips
    op: train
    depends_on: [split]
    with:
      model: wide_deep
      train: "${{ tasks.split.outputs.train }}"
      validation: "${{ tasks.split.outputs.validation }}"
      params: {target: duration_min, task: classification, threshold: 20, epochs: 1, seed: 5}
  - id: evaluate_long
    op: evaluate
    depends_on: [long_trips]
    with:
      model: "${{ tasks.long_trips.outputs.model }}"
      dataset: "${{ tasks.split.outputs.test }}"
"#;
    s.apply(&yaml);
    let run = s.wait_run(s.trigger("taxi_small", json!({})), 600);
    assert_eq!(run["run"]["state"], "success", "{run}");
    let ev = &task(&run, "evaluate")["outputs"];
    let rmse = ev["metrics"]["rmse"].as_f64().unwrap();
    let mean = ev["baselines"]["mean"]["rmse"].as_f64().unwrap();
    let linear = ev["baselines"]["linear"]["rmse"].as_f64().unwrap();
    assert!(rmse < mean, "wide&deep {rmse} must beat the mean baseline {mean}");
    assert!(rmse < linear, "wide&deep {rmse} must beat the linear-only model {linear}");
    assert_eq!(ev["slices"].as_object().unwrap().len(), 24, "one slice per pickup hour");
    // The r2 ≥ 0.99 gate is out of reach: the model is not blessed, and the reasons say why.
    assert_eq!(ev["blessed"], false);
    let why = ev["why_not"].as_array().unwrap();
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].as_str().unwrap().contains("r2"), "{why:?}");
    let (_, lin) = s.get("/api/v1/experiments?where=params.deep=false");
    let lin = lin["experiments"].as_array().unwrap();
    assert_eq!(lin.len(), 1, "booleans filter as booleans: {lin:?}");
    assert_eq!(lin[0]["task_id"], "train_linear");
    let cls = &task(&run, "evaluate_long")["outputs"];
    let auc = cls["metrics"]["auc"].as_f64().unwrap();
    assert!(auc > 0.7, "long-trip classifier AUC {auc}");
    assert!(cls["metrics"]["log_loss"].as_f64().unwrap() < cls["baselines"]["base_rate"]["log_loss"].as_f64().unwrap());
}

/// Training checkpoints every epoch: kill -9 the server mid-training, restart, and the retry
/// resumes from the checkpoint and ends with the same weights an uninterrupted training gives.
#[test]
fn a_training_killed_with_kill_9_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start(dir.path());
    // Enough epochs (and no early stop) that the kill lands long before training could end.
    s.apply(&taxi_pipeline(16, ", batch_size: 256, patience: 0"));
    let id = s.trigger("taxi_small", json!({}));
    // The epoch line is logged just before its checkpoint is written: once epoch 3 is in the
    // log, the checkpoint after epoch 2 is surely on disk.
    wait_for(300, "epoch 3 to finish", || log_of(&s, id, "train").contains("epoch 3:").then_some(()));
    s.kill9();
    let s = TestServer::start(dir.path());
    let run = s.wait_run(id, 600);
    assert_eq!(run["run"]["state"], "success", "{run}");
    let tr = &task(&run, "train")["outputs"];
    let from = tr["resumed_from_epoch"].as_u64().expect("the retry resumed from a checkpoint");
    assert!(from >= 2, "{tr}");
    assert!(log_of(&s, id, "train").contains(&format!("resuming from the checkpoint after epoch {from}")));
    let exp = tr["experiment"].as_i64().unwrap();
    let (_, h) = s.get(&format!("/api/v1/experiments/{exp}/metrics/train_loss"));
    let steps: Vec<i64> = h["points"].as_array().unwrap().iter().map(|p| p["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, (1..=tr["epochs_run"].as_i64().unwrap()).collect::<Vec<_>>(), "one history, no duplicates");

    let again = s.wait_run(s.trigger("taxi_small", json!({})), 600);
    let tr2 = &task(&again, "train")["outputs"];
    assert_eq!(tr2["resumed_from_epoch"], Value::Null);
    assert_eq!(tr2["weights_sha256"], tr["weights_sha256"], "resuming changed the result");
}

#[test]
fn tune_runs_tracked_trials_in_parallel_and_keeps_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    let yaml = crypto_pipeline().replace(
        "  - id: gate\n",
        r#"  - id: tune
    op: tune
    depends_on: [split]
    threads: 2
    with:
      model: lstm
      train: "${{ tasks.split.outputs.train }}"
      validation: "${{ tasks.split.outputs.validation }}"
      params: {series: symbol, time: date, target: close, window: 14, horizon: 5, epochs: 2, batch_size: 64, seed: 1}
      space: {hidden: [4, 8], learning_rate: [0.001, 0.01]}
  - id: tuned_gate
    op: evaluate
    depends_on: [tune]
    with:
      model: "${{ tasks.tune.outputs.model }}"
      dataset: "${{ tasks.split.outputs.validation }}"
      gates: [{metric: mae, beat: naive}]
  - id: gate
"#,
    );
    s.apply(&yaml);
    let run = s.wait_run(s.trigger("fc", json!({})), 300);
    assert_eq!(run["run"]["state"], "success", "{run}");
    let t = &task(&run, "tune")["outputs"];
    let trials = t["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4, "the 2 × 2 grid: {t}");
    let losses: Vec<f64> = trials.iter().map(|x| x["val_loss"].as_f64().unwrap()).collect();
    let min = losses.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(t["best"]["val_loss"].as_f64().unwrap(), min, "the best trial has the lowest val_loss");
    assert_eq!(t["model"], t["best"]["model"]);
    let parent = t["experiment"].as_i64().unwrap();
    let (_, kids) = s.get(&format!("/api/v1/experiments?parent={parent}&order=metrics.best_val_loss"));
    let kids = kids["experiments"].as_array().unwrap();
    assert_eq!(kids.len(), 4, "each trial is a tracked child experiment");
    assert!(kids.iter().all(|k| k["kind"] == "trial" && k["state"] == "success"));
    assert_eq!(kids[0]["metrics"]["best_val_loss"].as_f64().unwrap(), min, "sorted by the metric");
    let hidden: Vec<i64> = kids.iter().map(|k| k["params"]["hidden"].as_i64().unwrap()).collect();
    assert!(hidden.contains(&4) && hidden.contains(&8));
    assert!(task(&run, "tuned_gate")["outputs"]["metrics"]["mae"].as_f64().is_some());
    let (st, bad) = s.post_raw(
        "/api/v1/pipelines",
        "name: t2\ntasks:\n  - id: t\n    op: tune\n    with: {model: lstm, train: {}, validation: {}, space: {hidden: {min: 1, max: 4}}}\n",
    );
    assert_eq!(st, 422, "a range needs random search: {bad}");
}
