//! What serving remembers: per-version counters and a latency histogram (for the metrics
//! endpoint), and a rate-limited sample of requests and responses in the `prediction_log` table,
//! pruned to the newest N per version.

use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::params;
use serde_json::{Value, json};

use crate::store::{Store, now_us};

/// Upper bounds of the latency histogram buckets, in microseconds (the last bucket is +Inf).
pub const LATENCY_BUCKETS_US: [u64; 10] = [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000];

/// Request counters of one loaded version.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub records: AtomicU64,
    pub latency_us_sum: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    /// The second the sampler counts in, and how many were logged in it.
    window: AtomicU64,
    /// Entries logged, to prune this version's log every 256.
    logged: AtomicU64,
}

impl Stats {
    pub fn observe(&self, records: usize, latency_us: u64, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.latency_us_sum.fetch_add(latency_us, Ordering::Relaxed);
        let b = LATENCY_BUCKETS_US.iter().position(|le| latency_us <= *le).unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this request goes to the prediction log: at most `rate` per second.
    fn sample(&self, rate: u32) -> bool {
        if rate == 0 {
            return false;
        }
        let sec = (now_us() / 1_000_000) as u64;
        let cur = self.window.load(Ordering::Relaxed);
        let (cur_sec, n) = (cur >> 20, cur & 0xF_FFFF);
        if cur_sec != sec {
            return self.window.compare_exchange(cur, (sec << 20) | 1, Ordering::Relaxed, Ordering::Relaxed).is_ok();
        }
        n < u64::from(rate) && self.window.compare_exchange(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    pub fn snapshot(&self) -> Value {
        let mut cumulative = 0;
        let buckets: Vec<Value> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                cumulative += b.load(Ordering::Relaxed);
                let le = LATENCY_BUCKETS_US.get(i).map(|u| json!(u)).unwrap_or(json!("+Inf"));
                json!({"le_us": le, "count": cumulative})
            })
            .collect();
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "records": self.records.load(Ordering::Relaxed),
            "latency_us_sum": self.latency_us_sum.load(Ordering::Relaxed),
            "latency_buckets": buckets,
        })
    }
}

/// One logged prediction.
pub struct Entry<'a> {
    pub model: &'a str,
    pub version: i64,
    pub endpoint: &'static str,
    pub status: u16,
    pub latency_us: u64,
}

pub struct PredictionLog {
    store: Store,
    rate: u32,
    keep: u32,
}

/// Logged request and response text is cut at this many bytes.
const MAX_TEXT: usize = 8 * 1024;

fn clip(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > MAX_TEXT {
        s.truncate(s.floor_char_boundary(MAX_TEXT));
        s.push_str("…(cut)");
    }
    s
}

impl PredictionLog {
    pub fn new(store: Store, rate: u32, keep: u32) -> PredictionLog {
        PredictionLog { store, rate, keep }
    }

    /// Count the request, and log it if the sampler takes it. The request and response are
    /// built only when logged.
    pub fn record(&self, stats: &Stats, e: Entry<'_>, records: usize, body: impl FnOnce() -> (Value, Value)) {
        let ok = e.status < 400;
        stats.observe(records, e.latency_us, ok);
        crate::metrics::get().inference(e.model, e.version, ok, e.latency_us as f64 / 1e6);
        if !stats.sample(self.rate) {
            return;
        }
        let (req, resp) = body();
        let (req, resp) = (clip(&req), clip(&resp));
        let (model, version, endpoint, status, latency) =
            (e.model.to_string(), e.version, e.endpoint, e.status, e.latency_us as i64);
        let prune = stats.logged.fetch_add(1, Ordering::Relaxed) % 256 == 255;
        let keep = self.keep;
        self.store.write_nowait(move |tx| {
            tx.execute(
                "INSERT INTO prediction_log (model, version, endpoint, request, response, status, latency_us, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![model, version, endpoint, req, resp, status, latency, now_us()],
            )?;
            if prune {
                tx.execute(
                    "DELETE FROM prediction_log WHERE model = ?1 AND version = ?2 AND id <= \
                     (SELECT id FROM prediction_log WHERE model = ?1 AND version = ?2 ORDER BY id DESC LIMIT 1 OFFSET ?3)",
                    params![model, version, keep],
                )?;
            }
            Ok(())
        });
    }
}

/// The newest logged predictions of a model (one version, or all).
pub fn recent(
    c: &rusqlite::Connection,
    model: &str,
    version: Option<i64>,
    limit: u32,
) -> crate::error::Result<Vec<Value>> {
    let mut st = c.prepare(
        "SELECT version, endpoint, request, response, status, latency_us, at FROM prediction_log \
         WHERE model = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = st.query_map(params![model, version, limit], |r| {
        let text = |i: usize| -> rusqlite::Result<Value> {
            let s: String = r.get(i)?;
            Ok(serde_json::from_str(&s).unwrap_or(Value::String(s)))
        };
        Ok(json!({
            "version": r.get::<_, i64>(0)?, "endpoint": r.get::<_, String>(1)?, "request": text(2)?,
            "response": text(3)?, "status": r.get::<_, i64>(4)?, "latency_us": r.get::<_, i64>(5)?,
            "at": r.get::<_, i64>(6)?,
        }))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_entries_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let log = PredictionLog::new(store.clone(), 100_000, 10);
        let stats = Stats::default();
        for i in 0..300 {
            let e = Entry { model: "m", version: 1, endpoint: "predict", status: 200, latency_us: 50 };
            log.record(&stats, e, 1, || (json!({"i": i}), json!(i)));
        }
        store.write(|_| Ok(())).unwrap();
        let rows = store.read(|c| recent(c, "m", Some(1), 1000)).unwrap();
        // Pruned to 10 at the 256th insert, then 44 more.
        assert_eq!(rows.len(), 54);
        assert_eq!(rows[0]["request"], json!({"i": 299}), "newest first");
        assert_eq!(rows.last().unwrap()["request"], json!({"i": 246}));
        assert_eq!(stats.snapshot()["requests"], 300);
    }

    #[test]
    fn the_sampler_takes_at_most_rate_per_second_and_the_histogram_is_cumulative() {
        let s = Stats::default();
        let taken = (0..100).filter(|_| s.sample(5)).count();
        // A second boundary may fall inside the loop: then up to twice the rate.
        assert!((5..=10).contains(&taken), "{taken}");
        assert!(!Stats::default().sample(0));
        s.observe(1, 90, true);
        s.observe(1, 3_000, false);
        let snap = s.snapshot();
        assert_eq!((snap["requests"].as_u64(), snap["errors"].as_u64()), (Some(2), Some(1)));
        let b = snap["latency_buckets"].as_array().unwrap();
        assert_eq!(b[0]["count"], 1);
        assert_eq!(b[5]["count"], 2, "≤ 5 ms holds both");
        assert_eq!(b.last().unwrap()["le_us"], "+Inf");
    }
}
