//! Training throughput of the two fixed benchmark configs on the real sample data, in release:
//! - LSTM: window 50, 1 feature (log return), hidden 64, 1 layer, linear head (10 steps), batch
//!   512, Adam, MSE; every (exchange, coin) daily series of `sample-data/crypto`.
//! - wide&deep: the taxi features of `pipelines/taxi.yaml`, embeddings dim 8, MLP 64-32-1, batch
//!   1024, Adam, MSE on the standardised duration.
//!
//! `cargo bench --bench training -- DIR [--epochs N]` trains both with mlbox's own trainers and
//! prints one JSON line each (median samples/s over epochs 2.., final validation loss). It also
//! writes the exact training and validation arrays to DIR, so `bench/peers/torch_training.py DIR`
//! trains PyTorch on the same numbers. `bench/run_training.sh` runs both.

use std::io::Write;
use std::path::{Path, PathBuf};

use mlbox::train::forecast::{self, LstmParams};
use mlbox::train::tabular::{self, Columns, DEEP_SIZES, TabularPrep};
use mlbox::train::wide_deep::{self, WideDeepParams};
use mlbox::train::{EpochReport, Hooks};
use polars::prelude::*;
use polars::sql::SQLContext;
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn query(file: &str, sql: &str) -> DataFrame {
    let f = std::fs::File::open(root().join("sample-data").join(file)).expect("sample data");
    let df = ParquetReader::new(f).finish().expect("parquet");
    let mut ctx = SQLContext::new();
    ctx.register("t", df.lazy());
    ctx.execute(sql).and_then(|l| l.collect()).expect("query")
}

/// The first 80% of rows by time for training and the next 10% for validation.
fn split(df: &DataFrame, time: &str) -> (DataFrame, DataFrame) {
    let df = df.sort([time], SortMultipleOptions::default().with_maintain_order(true)).unwrap();
    let n = df.height();
    let (a, b) = (n * 8 / 10, n * 9 / 10);
    (df.slice(0, a), df.slice(a as i64, b - a))
}

fn write<T: Copy>(dir: &Path, name: &str, v: &[T]) {
    let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) };
    std::fs::File::create(dir.join(name)).unwrap().write_all(bytes).unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run_hooks(dir: &Path, name: &str, f: impl FnOnce(Hooks<'_>)) -> Vec<EpochReport> {
    let mut reports = Vec::new();
    let ckpt = dir.join(format!("{name}.ckpt"));
    let _ = std::fs::remove_file(&ckpt);
    let mut on_epoch = |r: &EpochReport| {
        eprintln!("{name} epoch {}: {:.0} samples/s, val_loss {:.5}", r.epoch, r.samples_per_s, r.val_loss);
        reports.push(r.clone());
    };
    f(Hooks { checkpoint: ckpt.clone(), on_epoch: &mut on_epoch, on_resume: &mut |_| {}, stopped: &|| None });
    let _ = std::fs::remove_file(&ckpt);
    reports
}

fn summary(model: &str, r: &[EpochReport], n: usize) -> serde_json::Value {
    let tput: Vec<f64> = r.iter().map(|e| e.samples_per_s).collect();
    json!({
        "peer": "mlbox", "model": model, "train_n": n,
        "samples_per_s": median(if tput.len() > 1 { tput[1..].to_vec() } else { tput.clone() }),
        "epoch_samples_per_s": tput,
        "final_val_loss": r.last().map(|e| e.val_loss),
        "val_loss_history": r.iter().map(|e| e.val_loss).collect::<Vec<_>>(),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let dir = PathBuf::from(args.first().cloned().unwrap_or_else(|| "/tmp/mlbox-training-bench".into()));
    let epochs: usize = args
        .iter()
        .position(|a| a == "--epochs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    std::fs::create_dir_all(&dir).unwrap();

    // LSTM on every daily series (exchange/coin).
    let prices = query(
        "crypto/daily_ohlcv.parquet",
        "SELECT exchange || '/' || symbol AS series, date, AVG(close) AS close FROM t WHERE close > 0 \
         GROUP BY exchange, symbol, date ORDER BY series, date",
    );
    let (tr, va) = split(&prices, "date");
    let p: LstmParams = serde_json::from_value(json!({
        "series": "series", "time": "date", "target": "close", "features": ["log_return"],
        "window": 50, "horizon": 10, "hidden": 64, "layers": 1, "dropout": 0.0, "epochs": epochs,
        "batch_size": 512, "learning_rate": 0.001, "seed": 0, "patience": 0
    }))
    .unwrap();
    let spec = p.spec();
    let norms = forecast::fit_norms(&spec, &tr).unwrap();
    let export = |df: &DataFrame, part: &str| -> usize {
        let s = forecast::stack(&spec, df, &norms).unwrap();
        write(&dir, &format!("lstm_{part}_x.f32"), &s.x);
        write(&dir, &format!("lstm_{part}_y.f32"), &s.y);
        s.n
    };
    let (lstm_train_n, lstm_val_n) = (export(&tr, "train"), export(&va, "val"));
    let lstm = run_hooks(&dir, "lstm", |h| {
        forecast::train(&p, &tr, &va, h).expect("lstm training");
    });

    // wide&deep on the taxi trips.
    let trips = query(
        "taxi/nyc_yellow_trips.parquet",
        "SELECT pickup_datetime, pickup_location_id, dropoff_location_id, passenger_count, trip_distance, \
         (date_part('epoch', dropoff_datetime) - date_part('epoch', pickup_datetime)) / 60.0 AS duration_min \
         FROM t WHERE pickup_datetime >= '2018-01-01' \
         AND (date_part('epoch', dropoff_datetime) - date_part('epoch', pickup_datetime)) BETWEEN 60 AND 10800",
    );
    let (ttr, tva) = split(&trips, "pickup_datetime");
    let wp: WideDeepParams = serde_json::from_value(json!({
        "target": "duration_min", "embed_dim": 8, "mlp": [64, 32], "epochs": epochs,
        "batch_size": 1024, "learning_rate": 0.002, "seed": 0, "patience": 0
    }))
    .unwrap();
    let prep = TabularPrep::fit(&ttr, Columns::default()).unwrap();
    let ys = |df: &DataFrame| mlbox::data::numeric(df, "duration_min", "target").unwrap();
    let (m, s) = mlbox::train::windows::mean_std(&ys(&ttr));
    let export_wd = |df: &DataFrame, part: &str| -> usize {
        let mut e = prep.encode(&tabular::trips(df, &prep.columns).unwrap());
        wide_deep::deep_offsets(&mut e.deep);
        let y: Vec<f32> = ys(df).iter().map(|v| ((v - m) / s) as f32).collect();
        write(&dir, &format!("wd_{part}_wide.i64"), &e.wide);
        write(&dir, &format!("wd_{part}_deep.i64"), &e.deep);
        write(&dir, &format!("wd_{part}_dense.f32"), &e.dense);
        write(&dir, &format!("wd_{part}_y.f32"), &y);
        e.rows
    };
    let (wd_train_n, wd_val_n) = (export_wd(&ttr, "train"), export_wd(&tva, "val"));
    let wd = run_hooks(&dir, "wide_deep", |h| {
        wide_deep::train(&wp, &ttr, &tva, h).expect("wide&deep training");
    });

    let meta = json!({
        "lstm": {"train_n": lstm_train_n, "val_n": lstm_val_n, "window": 50, "features": 1, "horizon": 10,
                 "hidden": 64, "batch_size": 512, "learning_rate": 0.001, "epochs": epochs},
        "wide_deep": {"train_n": wd_train_n, "val_n": wd_val_n, "wide_size": TabularPrep::wide_size(),
                      "deep_rows": DEEP_SIZES.iter().sum::<usize>(), "wide_fields": 6, "deep_fields": 4, "dense": 2,
                      "embed_dim": 8, "mlp": [64, 32], "batch_size": 1024, "learning_rate": 0.002, "epochs": epochs},
    });
    std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
    println!("{}", summary("lstm", &lstm, lstm_train_n));
    println!("{}", summary("wide_deep", &wd, wd_train_n));
}
