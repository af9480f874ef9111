//! Features of the wide&deep trip-duration model, from what is known when a trip is ordered:
//! pickup time, pickup and dropoff zone, passenger count. The trip's real distance is not known
//! then, so it is approximated by the median distance of training trips between the same zones
//! (falling back to the pickup zone's median, then the overall median).
//!
//! Everything fitted here (distance tables, dense-feature scales, target scale) comes from the
//! training split and is stored in the model artifact, so serving computes exactly this.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDateTime, Timelike};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// Column names the features are read from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    #[serde(default = "c_time")]
    pub time: String,
    #[serde(default = "c_pickup")]
    pub pickup: String,
    #[serde(default = "c_dropoff")]
    pub dropoff: String,
    #[serde(default = "c_passengers")]
    pub passengers: String,
    /// Read from training data only, to fit the distance table.
    #[serde(default = "c_distance")]
    pub distance: String,
}

fn c_time() -> String {
    "pickup_datetime".into()
}
fn c_pickup() -> String {
    "pickup_location_id".into()
}
fn c_dropoff() -> String {
    "dropoff_location_id".into()
}
fn c_passengers() -> String {
    "passenger_count".into()
}
fn c_distance() -> String {
    "trip_distance".into()
}

impl Default for Columns {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults")
    }
}

/// Zone ids are 1..=265; anything else maps to 0 ("unknown").
pub const ZONES: usize = 266;
/// Wide feature fields, in order, with their sizes.
pub const CROSS_BUCKETS: usize = 10_007;
pub const DOY_HOUR_BUCKETS: usize = 4_001;
pub const WIDE_SIZES: [usize; 6] = [7, 24, DOY_HOUR_BUCKETS, ZONES, ZONES, CROSS_BUCKETS];
/// Deep embedding fields: day of week, hour, pickup zone, dropoff zone.
pub const DEEP_SIZES: [usize; 4] = [7, 24, ZONES, ZONES];
pub const DENSE: usize = 2;

/// The fitted preprocessing, stored in the model artifact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TabularPrep {
    pub columns: Columns,
    /// "pickup-dropoff" → median miles.
    pub pair_distance: BTreeMap<String, f32>,
    pub pickup_distance: BTreeMap<String, f32>,
    pub global_distance: f32,
    pub passengers_fill: f32,
    /// (mean, std) of each dense feature: passengers, ln(1 + approx distance).
    pub dense_norm: [(f32, f32); DENSE],
}

/// One batch of encoded rows.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    pub rows: usize,
    /// rows × 6 global wide indices (offsets applied).
    pub wide: Vec<i64>,
    /// rows × 4 deep embedding indices (per field, no offsets).
    pub deep: Vec<i64>,
    /// rows × DENSE normalized values.
    pub dense: Vec<f32>,
}

/// The raw inputs of one trip as known at order time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trip {
    pub time: Option<NaiveDateTime>,
    pub pickup: i64,
    pub dropoff: i64,
    pub passengers: Option<f64>,
}

fn zone(z: i64) -> i64 {
    if (1..ZONES as i64).contains(&z) { z } else { 0 }
}

fn hash2(a: u64, b: u64, buckets: usize) -> i64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0x632B_E59B_D9B4_E019);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((x ^ (x >> 31)) % buckets as u64) as i64
}

fn median(v: &mut [f32]) -> f32 {
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

/// Read the order-time inputs of every row.
pub fn trips(df: &DataFrame, c: &Columns) -> Result<Vec<Trip>, String> {
    let col = |n: &str| df.column(n).map_err(|_| format!("the dataset has no column `{n}`"));
    let ints = |n: &str| -> Result<Vec<i64>, String> {
        let s = col(n)?.cast(&DataType::Int64).map_err(|e| format!("`{n}`: {e}"))?;
        Ok(s.i64().map_err(|e| e.to_string())?.iter().map(|x| x.unwrap_or(0)).collect())
    };
    let time = col(&c.time)?;
    // Text timestamps (a CSV given to `mlbox predict`) are read by the same rule as online requests.
    let times: Vec<Option<NaiveDateTime>> = if time.dtype() == &DataType::String {
        time.str().map_err(|e| e.to_string())?.iter().map(|s| s.and_then(parse_time)).collect()
    } else {
        let t = time
            .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
            .map_err(|e| format!("`{}` is not a timestamp: {e}", c.time))?;
        let t = t.datetime().map_err(|e| e.to_string())?.physical().iter();
        t.map(|us| us.and_then(chrono::DateTime::from_timestamp_micros).map(|t| t.naive_utc())).collect()
    };
    let pas = col(&c.passengers)?.cast(&DataType::Float64).map_err(|e| e.to_string())?;
    let pas: Vec<Option<f64>> = pas.f64().map_err(|e| e.to_string())?.iter().collect();
    let (pu, dr) = (ints(&c.pickup)?, ints(&c.dropoff)?);
    Ok((0..df.height()).map(|i| Trip::new(times[i], pu[i], dr[i], pas[i])).collect())
}

/// Pickup times as text: `YYYY-MM-DD HH:MM[:SS[.fff]]`, with a `T` or a space, an optional
/// trailing `Z`, or a bare date (midnight).
pub fn parse_time(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim().trim_end_matches('Z');
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
}

impl Trip {
    /// A trip from raw values; a missing or non-finite passenger count is unknown.
    pub fn new(time: Option<NaiveDateTime>, pickup: i64, dropoff: i64, passengers: Option<f64>) -> Trip {
        Trip { time, pickup, dropoff, passengers: passengers.filter(|p| p.is_finite()) }
    }
}

impl TabularPrep {
    /// Fit on the training split.
    pub fn fit(df: &DataFrame, columns: Columns) -> Result<TabularPrep, String> {
        let rows = trips(df, &columns)?;
        let dist = crate::data::numeric(df, &columns.distance, "distance column (needed to fit distances)")?;
        let mut pairs: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        let mut pickups: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        let mut all = Vec::new();
        for (t, d) in rows.iter().zip(&dist) {
            let Some(d) = Some(*d).filter(|d| d.is_finite() && *d > 0.0) else { continue };
            let (p, q) = (zone(t.pickup), zone(t.dropoff));
            pairs.entry(format!("{p}-{q}")).or_default().push(d as f32);
            pickups.entry(p.to_string()).or_default().push(d as f32);
            all.push(d as f32);
        }
        if all.is_empty() {
            return Err("no training row has a positive distance to fit the distance table".into());
        }
        // Pairs seen fewer than 3 times are too noisy: they fall back to the pickup zone.
        let pair_distance =
            pairs.into_iter().filter(|(_, v)| v.len() >= 3).map(|(k, mut v)| (k, median(&mut v))).collect();
        let pickup_distance = pickups.into_iter().map(|(k, mut v)| (k, median(&mut v))).collect();
        let mut pas: Vec<f32> = rows.iter().filter_map(|t| t.passengers).map(|p| p as f32).collect();
        let passengers_fill = if pas.is_empty() { 1.0 } else { median(&mut pas) };
        let mut prep = TabularPrep {
            columns,
            pair_distance,
            pickup_distance,
            global_distance: median(&mut all),
            passengers_fill,
            dense_norm: [(0.0, 1.0); DENSE],
        };
        let raw: Vec<[f32; DENSE]> = rows.iter().map(|t| prep.dense_raw(t)).collect();
        for f in 0..DENSE {
            let v: Vec<f64> = raw.iter().map(|r| f64::from(r[f])).collect();
            let (m, s) = super::windows::mean_std(&v);
            prep.dense_norm[f] = (m as f32, s as f32);
        }
        Ok(prep)
    }

    /// The approximate distance of a trip from the fitted tables.
    pub fn approx_distance(&self, pickup: i64, dropoff: i64) -> f32 {
        let (p, q) = (zone(pickup), zone(dropoff));
        self.pair_distance
            .get(&format!("{p}-{q}"))
            .or_else(|| self.pickup_distance.get(&p.to_string()))
            .copied()
            .unwrap_or(self.global_distance)
    }

    fn dense_raw(&self, t: &Trip) -> [f32; DENSE] {
        let passengers = t.passengers.map(|p| p as f32).unwrap_or(self.passengers_fill);
        [passengers, self.approx_distance(t.pickup, t.dropoff).ln_1p()]
    }

    pub fn encode(&self, rows: &[Trip]) -> Encoded {
        let mut e = Encoded { rows: rows.len(), ..Default::default() };
        let mut offsets = [0i64; 6];
        for i in 1..6 {
            offsets[i] = offsets[i - 1] + WIDE_SIZES[i - 1] as i64;
        }
        for t in rows {
            let (dow, hour, doy) = match t.time {
                Some(ts) => (ts.weekday().num_days_from_monday() as i64, ts.hour() as i64, ts.ordinal0() as u64),
                None => (0, 0, 0),
            };
            let (p, q) = (zone(t.pickup), zone(t.dropoff));
            let fields = [
                dow,
                hour,
                hash2(doy, hour as u64, DOY_HOUR_BUCKETS),
                p,
                q,
                hash2(p as u64, q as u64 + 1_000, CROSS_BUCKETS),
            ];
            e.wide.extend(fields.iter().zip(offsets).map(|(f, o)| f + o));
            e.deep.extend([dow, hour, p, q]);
            let raw = self.dense_raw(t);
            e.dense.extend((0..DENSE).map(|f| (raw[f] - self.dense_norm[f].0) / self.dense_norm[f].1));
        }
        e
    }

    pub fn wide_size() -> usize {
        WIDE_SIZES.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_fall_back_and_features_stay_in_range() {
        let df = df!(
            "pickup_datetime" => [NaiveDateTime::parse_from_str("2019-01-07 08:30:00", "%Y-%m-%d %H:%M:%S").unwrap(); 5],
            "pickup_location_id" => [1i64, 1, 1, 2, 999],
            "dropoff_location_id" => [5i64, 5, 5, 7, 3],
            "passenger_count" => [Some(1i64), Some(2), None, Some(1), Some(3)],
            "trip_distance" => [1.0, 2.0, 3.0, 9.0, 4.0],
        )
        .unwrap();
        let prep = TabularPrep::fit(&df, Columns::default()).unwrap();
        assert_eq!(prep.approx_distance(1, 5), 2.0, "pair median");
        assert_eq!(prep.approx_distance(2, 9), 9.0, "pickup-zone fallback");
        assert_eq!(prep.approx_distance(77, 78), prep.global_distance, "global fallback");
        assert_eq!(prep.passengers_fill, 2.0, "upper median of 1, 1, 2, 3");
        let enc = prep.encode(&trips(&df, &prep.columns).unwrap());
        assert_eq!((enc.wide.len(), enc.deep.len(), enc.dense.len()), (30, 20, 10));
        assert_eq!(&enc.deep[0..4], &[0, 8, 1, 5], "Monday 08h, zones 1 → 5");
        assert_eq!(enc.deep[16 + 2], 0, "zone 999 is unknown");
        let total = TabularPrep::wide_size() as i64;
        assert!(enc.wide.iter().all(|i| (0..total).contains(i)));
    }
}
