//! In-process inference latency of the two model families, without HTTP: what one prediction
//! costs inside the server (decode → model → outputs).
//! - wide&deep: one taxi record (the taxi features, embeddings dim 8, MLP 64-32-1);
//! - LSTM: one 50-step window (1 feature, hidden 64, 1 layer, 10-step head).
//!
//! Both models are trained for one epoch on the sample data first (weights do not change the
//! cost). `cargo bench --bench serving` prints one JSON line per model with p50/p99/mean in µs.
//! The HTTP side (wrk against mlbox, MLflow and KServe) is `bench/run_serving.sh`.

use std::path::PathBuf;
use std::time::Instant;

use mlbox::serving::{predict, signature};
use mlbox::train::forecast::{self, LstmParams};
use mlbox::train::wide_deep::{self, WideDeepParams};
use mlbox::train::{Hooks, load_bytes, pack};
use polars::prelude::*;
use polars::sql::SQLContext;
use serde_json::{Value, json};

fn query(file: &str, sql: &str) -> DataFrame {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let df = ParquetReader::new(std::fs::File::open(root.join("sample-data").join(file)).unwrap()).finish().unwrap();
    let mut ctx = SQLContext::new();
    ctx.register("t", df.lazy());
    ctx.execute(sql).and_then(|l| l.collect()).unwrap()
}

fn hooks(dir: &std::path::Path, f: impl FnOnce(Hooks<'_>)) {
    f(Hooks { checkpoint: dir.join("bench.ckpt"), on_epoch: &mut |_| {}, on_resume: &mut |_| {}, stopped: &|| None });
}

fn time(name: &str, n: usize, mut f: impl FnMut()) -> Value {
    for _ in 0..n / 10 {
        f();
    }
    let mut us: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    us.sort_by(f64::total_cmp);
    let q = |p: f64| us[((us.len() as f64 * p) as usize).min(us.len() - 1)];
    json!({"bench": name, "n": n, "p50_us": q(0.5), "p99_us": q(0.99), "mean_us": us.iter().sum::<f64>() / n as f64})
}

fn main() {
    let dir = tempfile_dir();
    let trips = query(
        "taxi/nyc_yellow_trips.parquet",
        "SELECT pickup_datetime, pickup_location_id, dropoff_location_id, passenger_count, trip_distance, \
         (date_part('epoch', dropoff_datetime) - date_part('epoch', pickup_datetime)) / 60.0 AS duration_min \
         FROM t WHERE pickup_datetime >= '2019-01-01' AND pickup_datetime < '2019-03-01' \
         AND (date_part('epoch', dropoff_datetime) - date_part('epoch', pickup_datetime)) BETWEEN 60 AND 10800",
    );
    let wp: WideDeepParams = serde_json::from_value(json!({"target": "duration_min", "epochs": 1, "seed": 0})).unwrap();
    let mut wd = None;
    hooks(&dir, |h| wd = Some(wide_deep::train(&wp, &trips, &trips, h).unwrap()));
    let wd = wd.unwrap();
    let (_, wd) = load_bytes(&pack(wd.header, &[("weights", &wd.weights)])).unwrap();
    let sig = predict::signature(&wd);
    let rec = json!([{"pickup_datetime": "2019-03-14 08:30:00", "pickup_location_id": 132,
                      "dropoff_location_id": 236, "passenger_count": 1}]);
    let rec = rec.as_array().unwrap();
    println!(
        "{}",
        time("wide_deep one record", 20_000, || {
            let b = signature::decode_records(&sig, rec, 0).unwrap();
            std::hint::black_box(predict::predict(&wd, &b).unwrap());
        })
    );

    let prices = query(
        "crypto/daily_ohlcv.parquet",
        "SELECT symbol, date, AVG(close) AS close FROM t WHERE exchange = 'coinbase-pro' AND close > 0 \
         GROUP BY symbol, date ORDER BY symbol, date",
    );
    let p: LstmParams = serde_json::from_value(json!({
        "series": "symbol", "time": "date", "target": "close", "features": ["log_return"],
        "window": 50, "horizon": 10, "hidden": 64, "layers": 1, "epochs": 1, "batch_size": 512, "seed": 0
    }))
    .unwrap();
    let mut lstm = None;
    hooks(&dir, |h| lstm = Some(forecast::train(&p, &prices, &prices, h).unwrap()));
    let lstm = lstm.unwrap();
    let (_, lstm) = load_bytes(&pack(lstm.header, &[("weights", &lstm.weights)])).unwrap();
    let sig = predict::signature(&lstm);
    let closes: Vec<f64> = (0..51).map(|i| 30_000.0 * (1.0 + 0.002 * (i as f64).sin())).collect();
    let rec = json!([{"symbol": "btc", "close": closes}]);
    let rec = rec.as_array().unwrap();
    println!(
        "{}",
        time("lstm one 50-step window", 5_000, || {
            let b = signature::decode_records(&sig, rec, 0).unwrap();
            std::hint::black_box(predict::predict(&lstm, &b).unwrap());
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("mlbox-serving-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
