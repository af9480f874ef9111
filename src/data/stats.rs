//! Dataset statistics, inferred schema and anomalies (what TFX splits into StatisticsGen,
//! SchemaGen and ExampleValidator). Pure functions over a DataFrame; the `validate` op stores the
//! results and decides whether anomalies fail the task.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// Quantiles reported for numeric columns.
pub const QUANTILES: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];
const BINS: usize = 20;
const TOP: usize = 10;
/// Categorical columns with at most this many distinct values keep their full frequency table,
/// which new-category and L-infinity drift checks need.
const MAX_DOMAIN: usize = 1000;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    Numeric,
    Categorical,
    Temporal,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Histogram {
    /// BINS + 1 edges; values outside are counted in the first or last bin.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnStats {
    pub name: String,
    pub dtype: String,
    pub kind: ColumnKind,
    pub count: u64,
    pub nulls: u64,
    pub null_rate: f64,
    pub distinct: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// (q, value) pairs for [`QUANTILES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quantiles: Vec<(f64, f64)>,
    /// Over this column's own range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
    /// This column's values counted over the baseline's histogram edges (for PSI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_counts: Option<Vec<u64>>,
    /// The most frequent values with their counts.
    pub top: Vec<(String, u64)>,
    /// Every value with its count, for categorical columns with few distinct values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub rows: u64,
    pub columns: Vec<ColumnStats>,
}

impl Stats {
    pub fn column(&self, name: &str) -> Option<&ColumnStats> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The inferred schema: column → type, nullability, and the known values of small categoricals.
    pub fn schema(&self) -> serde_json::Value {
        let cols: serde_json::Map<String, serde_json::Value> = self
            .columns
            .iter()
            .map(|c| {
                let mut v = serde_json::json!({"type": c.dtype, "kind": c.kind, "nullable": c.nulls > 0});
                if let Some(d) = &c.domain {
                    v["values"] = serde_json::json!(d.keys().collect::<Vec<_>>());
                }
                (c.name.clone(), v)
            })
            .collect();
        serde_json::Value::Object(cols)
    }
}

fn kind_of(dt: &DataType) -> ColumnKind {
    match dt {
        DataType::Date | DataType::Datetime(..) | DataType::Time | DataType::Duration(_) => ColumnKind::Temporal,
        dt if dt.is_primitive_numeric() => ColumnKind::Numeric,
        _ => ColumnKind::Categorical,
    }
}

/// Statistics of every column. Numeric columns also count their values over the bin edges of
/// `baseline`'s column of the same name, when there is one, so the two compare bin by bin; their
/// own histogram always spans their own range (so drift keeps being visible version after version).
pub fn profile(df: &DataFrame, baseline: Option<&Stats>) -> Result<Stats, String> {
    let mut columns = Vec::with_capacity(df.width());
    for col in df.columns() {
        let edges =
            baseline.and_then(|b| b.column(col.name())).and_then(|c| c.histogram.as_ref()).map(|h| &h.edges[..]);
        columns.push(column_stats(col, edges).map_err(|e| format!("statistics of `{}` failed: {e}", col.name()))?);
    }
    Ok(Stats { rows: df.height() as u64, columns })
}

fn column_stats(col: &Column, edges: Option<&[f64]>) -> PolarsResult<ColumnStats> {
    let dtype = col.dtype().clone();
    let kind = kind_of(&dtype);
    let n = col.len() as u64;
    let nulls = col.null_count() as u64;
    let mut s = ColumnStats {
        name: col.name().to_string(),
        dtype: dtype.to_string(),
        kind,
        count: n - nulls,
        nulls,
        null_rate: if n == 0 { 0.0 } else { nulls as f64 / n as f64 },
        distinct: 0,
        min: None,
        max: None,
        mean: None,
        std: None,
        quantiles: Vec::new(),
        histogram: None,
        baseline_counts: None,
        top: Vec::new(),
        domain: None,
    };
    match kind {
        ColumnKind::Numeric => {
            let f = col.cast(&DataType::Float64)?;
            let mut v: Vec<f64> = f.f64()?.iter().flatten().filter(|x| x.is_finite()).collect();
            let mut freq: HashMap<u64, u64> = HashMap::new();
            for x in &v {
                *freq.entry(x.to_bits()).or_default() += 1;
            }
            s.distinct = freq.len() as u64;
            let mut top: Vec<(u64, u64)> = freq.into_iter().collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(f64::from_bits(a.0).total_cmp(&f64::from_bits(b.0))));
            s.top = top.into_iter().take(TOP).map(|(b, c)| (fmt_num(f64::from_bits(b)), c)).collect();
            if !v.is_empty() {
                v.sort_by(f64::total_cmp);
                let len = v.len() as f64;
                let mean = v.iter().sum::<f64>() / len;
                let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (len - 1.0).max(1.0);
                s.min = Some(serde_json::json!(v[0]));
                s.max = Some(serde_json::json!(v[v.len() - 1]));
                s.mean = Some(mean);
                s.std = Some(var.sqrt());
                s.quantiles = QUANTILES.iter().map(|q| (*q, quantile_sorted(&v, *q))).collect();
                let own = equal_edges(v[0], v[v.len() - 1]);
                s.histogram = Some(Histogram { counts: bin_counts(&v, &own), edges: own });
                s.baseline_counts = edges.filter(|e| e.len() >= 2).map(|e| bin_counts(&v, e));
            }
        }
        ColumnKind::Temporal => {
            // ISO dates and datetimes order as text, which spares a per-unit conversion.
            let text = col.cast(&DataType::String)?;
            let text = text.str()?;
            s.distinct = col.n_unique()? as u64 - u64::from(nulls > 0);
            s.min = text.iter().flatten().min().map(|x| serde_json::Value::String(x.to_string()));
            s.max = text.iter().flatten().max().map(|x| serde_json::Value::String(x.to_string()));
        }
        ColumnKind::Categorical => {
            let text = col.cast(&DataType::String)?;
            let mut freq: HashMap<&str, u64> = HashMap::new();
            for x in text.str()?.iter().flatten() {
                *freq.entry(x).or_default() += 1;
            }
            s.distinct = freq.len() as u64;
            let mut top: Vec<(&str, u64)> = freq.iter().map(|(k, v)| (*k, *v)).collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            s.top = top.iter().take(TOP).map(|(k, c)| (k.to_string(), *c)).collect();
            if freq.len() <= MAX_DOMAIN {
                s.domain = Some(freq.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
            }
        }
    }
    Ok(s)
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { format!("{x}") }
}

/// Linear-interpolated quantile of sorted values.
pub fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

fn equal_edges(lo: f64, hi: f64) -> Vec<f64> {
    let hi = if hi > lo { hi } else { lo + 1.0 };
    (0..=BINS).map(|i| lo + (hi - lo) * i as f64 / BINS as f64).collect()
}

fn bin_counts(v: &[f64], edges: &[f64]) -> Vec<u64> {
    let bins = edges.len() - 1;
    let mut counts = vec![0u64; bins];
    for x in v {
        // Index of the first edge above x, minus one, clamped to the open-ended outer bins.
        let i = edges.partition_point(|e| e <= x).saturating_sub(1).min(bins - 1);
        counts[i] += 1;
    }
    counts
}

/// Population stability index between two count vectors over the same bins. Empty bins get a
/// small floor so the log stays finite.
pub fn psi(base: &[u64], cur: &[u64]) -> f64 {
    let (tb, tc) = (base.iter().sum::<u64>().max(1) as f64, cur.iter().sum::<u64>().max(1) as f64);
    base.iter()
        .zip(cur)
        .map(|(b, c)| {
            let (p, q) = ((*b as f64 / tb).max(1e-4), (*c as f64 / tc).max(1e-4));
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// L-infinity distance between two frequency tables: the largest change in any value's share.
pub fn linf(base: &BTreeMap<String, u64>, cur: &BTreeMap<String, u64>) -> f64 {
    let (tb, tc) = (base.values().sum::<u64>().max(1) as f64, cur.values().sum::<u64>().max(1) as f64);
    base.keys()
        .chain(cur.keys())
        .map(|k| {
            let p = base.get(k).copied().unwrap_or(0) as f64 / tb;
            let q = cur.get(k).copied().unwrap_or(0) as f64 / tc;
            (p - q).abs()
        })
        .fold(0.0, f64::max)
}

/// Thresholds for [`compare`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Largest allowed increase of a column's null rate (absolute, 0..1).
    #[serde(default = "default_null_jump")]
    pub null_rate_jump: f64,
    /// PSI threshold for numeric columns (0.25 is the usual "significant shift").
    #[serde(default = "default_psi")]
    pub psi: f64,
    /// L-infinity threshold for categorical columns.
    #[serde(default = "default_linf")]
    pub linf: f64,
    /// Report values the baseline never had.
    #[serde(default = "yes")]
    pub new_categories: bool,
    /// Columns left out of drift checks (ids, timestamps).
    #[serde(default)]
    pub skip_drift: Vec<String>,
}

fn default_null_jump() -> f64 {
    0.05
}
fn default_psi() -> f64 {
    0.25
}
fn default_linf() -> f64 {
    0.1
}
fn yes() -> bool {
    true
}

impl Default for Rules {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Anomaly {
    pub column: String,
    /// missing_column, new_column, type_change, null_rate, new_categories, drift
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

fn anomaly(column: &str, kind: &str, message: String, value: Option<f64>) -> Anomaly {
    Anomaly { column: column.to_string(), kind: kind.to_string(), message, value }
}

/// Anomalies of `cur` against a saved schema (column → type name, as `Stats::schema` writes it or a
/// plain type string).
pub fn check_schema(schema: &serde_json::Map<String, serde_json::Value>, cur: &Stats) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (name, want) in schema {
        let want_type = want.get("type").and_then(|t| t.as_str()).or(want.as_str()).unwrap_or("");
        match cur.column(name) {
            None => out.push(anomaly(name, "missing_column", format!("column `{name}` is missing"), None)),
            Some(c) if !want_type.is_empty() && c.dtype != want_type => out.push(anomaly(
                name,
                "type_change",
                format!("column `{name}` is {} but the schema says {want_type}", c.dtype),
                None,
            )),
            Some(c) => {
                if want.get("nullable") == Some(&serde_json::Value::Bool(false)) && c.nulls > 0 {
                    out.push(anomaly(
                        name,
                        "null_rate",
                        format!("column `{name}` has {} nulls; the schema says none", c.nulls),
                        Some(c.null_rate),
                    ));
                }
            }
        }
    }
    for c in &cur.columns {
        if !schema.contains_key(&c.name) {
            out.push(anomaly(&c.name, "new_column", format!("column `{}` is not in the schema", c.name), None));
        }
    }
    out
}

/// Anomalies of `cur` against a baseline's statistics.
pub fn compare(base: &Stats, cur: &Stats, rules: &Rules) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for b in &base.columns {
        let name = &b.name;
        let Some(c) = cur.column(name) else {
            out.push(anomaly(
                name,
                "missing_column",
                format!("column `{name}` is missing (the baseline had it)"),
                None,
            ));
            continue;
        };
        if b.dtype != c.dtype {
            out.push(anomaly(
                name,
                "type_change",
                format!("column `{name}` changed type from {} to {}", b.dtype, c.dtype),
                None,
            ));
            continue;
        }
        let jump = c.null_rate - b.null_rate;
        if jump > rules.null_rate_jump {
            out.push(anomaly(
                name,
                "null_rate",
                format!(
                    "null rate of `{name}` rose from {:.1}% to {:.1}% (allowed: +{:.1} points)",
                    b.null_rate * 100.0,
                    c.null_rate * 100.0,
                    rules.null_rate_jump * 100.0
                ),
                Some(jump),
            ));
        }
        if let (Some(bd), Some(cd)) = (&b.domain, &c.domain) {
            let new: Vec<&String> = cd.keys().filter(|k| !bd.contains_key(*k)).collect();
            if rules.new_categories && !new.is_empty() {
                let shown: Vec<&str> = new.iter().take(5).map(|s| s.as_str()).collect();
                out.push(anomaly(
                    name,
                    "new_categories",
                    format!("`{name}` has {} value(s) the baseline never had: {}", new.len(), shown.join(", ")),
                    Some(new.len() as f64),
                ));
            }
        }
        if rules.skip_drift.iter().any(|s| s == name) {
            continue;
        }
        match (b.kind, &b.histogram, &c.baseline_counts, &b.domain, &c.domain) {
            (ColumnKind::Numeric, Some(bh), Some(cc), _, _) if bh.counts.len() == cc.len() => {
                let d = psi(&bh.counts, cc);
                if d > rules.psi {
                    out.push(anomaly(name, "drift", format!("`{name}` drifted: PSI {d:.3} > {}", rules.psi), Some(d)));
                }
            }
            (ColumnKind::Categorical, _, _, Some(bd), Some(cd)) => {
                let d = linf(bd, cd);
                if d > rules.linf {
                    out.push(anomaly(
                        name,
                        "drift",
                        format!("`{name}` drifted: L-infinity {d:.3} > {}", rules.linf),
                        Some(d),
                    ));
                }
            }
            _ => {}
        }
    }
    for c in &cur.columns {
        if base.column(&c.name).is_none() {
            out.push(anomaly(
                &c.name,
                "new_column",
                format!("column `{}` is new (the baseline did not have it)", c.name),
                None,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn df(xs: &[f64], cats: &[&str]) -> DataFrame {
        df!("x" => xs, "c" => cats).unwrap()
    }

    #[test]
    fn statistics_of_a_small_frame() {
        let d =
            df!("x" => [Some(1.0), Some(2.0), None, Some(3.0), Some(4.0)], "c" => ["a", "b", "a", "a", "c"]).unwrap();
        let s = profile(&d, None).unwrap();
        let x = s.column("x").unwrap();
        assert_eq!((x.count, x.nulls, x.distinct), (4, 1, 4));
        assert_eq!(x.mean, Some(2.5));
        assert!((x.std.unwrap() - 1.2909944).abs() < 1e-6);
        assert_eq!(x.quantiles[3], (0.5, 2.5));
        assert_eq!(x.histogram.as_ref().unwrap().counts.iter().sum::<u64>(), 4);
        let c = s.column("c").unwrap();
        assert_eq!(c.top[0], ("a".to_string(), 3));
        assert_eq!(c.domain.as_ref().unwrap().len(), 3);
        assert_eq!(s.schema()["c"]["values"], serde_json::json!(["a", "b", "c"]));
    }

    #[test]
    fn same_data_has_no_anomalies_and_shifted_data_drifts() {
        let xs: Vec<f64> = (0..1000).map(|i| (i % 100) as f64).collect();
        let cats: Vec<&str> = (0..1000).map(|i| if i % 2 == 0 { "a" } else { "b" }).collect();
        let base = profile(&df(&xs, &cats), None).unwrap();
        let same = profile(&df(&xs, &cats), Some(&base)).unwrap();
        assert!(compare(&base, &same, &Rules::default()).is_empty());
        // A trend: each version compared with the one before drifts, however far it has moved.
        let far: Vec<f64> = xs.iter().map(|x| x + 1000.0).collect();
        let farther: Vec<f64> = xs.iter().map(|x| x + 2000.0).collect();
        let v2 = profile(&df(&far, &cats), Some(&base)).unwrap();
        let v3 = profile(&df(&farther, &cats), Some(&v2)).unwrap();
        assert!(compare(&v2, &v3, &Rules::default()).iter().any(|a| a.column == "x" && a.kind == "drift"));

        let shifted: Vec<f64> = xs.iter().map(|x| x + 60.0).collect();
        let skewed: Vec<&str> = (0..1000)
            .map(|i| {
                if i % 10 == 0 {
                    "a"
                } else if i % 10 == 1 {
                    "z"
                } else {
                    "b"
                }
            })
            .collect();
        let cur = profile(&df(&shifted, &skewed), Some(&base)).unwrap();
        let found = compare(&base, &cur, &Rules::default());
        let kinds: Vec<(&str, &str)> = found.iter().map(|a| (a.column.as_str(), a.kind.as_str())).collect();
        assert!(kinds.contains(&("x", "drift")), "{found:?}");
        assert!(kinds.contains(&("c", "drift")), "{found:?}");
        assert!(kinds.contains(&("c", "new_categories")), "{found:?}");
    }

    #[test]
    fn schema_changes_are_named() {
        let base = profile(&df!("a" => [1i64, 2], "b" => ["x", "y"]).unwrap(), None).unwrap();
        let cur = profile(&df!("a" => ["1", "2"], "c" => [1.0, 2.0]).unwrap(), None).unwrap();
        let found = compare(&base, &cur, &Rules::default());
        let kinds: Vec<&str> = found.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(kinds, ["type_change", "missing_column", "new_column"], "{found:?}");
        let by_schema = check_schema(base.schema().as_object().unwrap(), &cur);
        assert_eq!(by_schema.len(), 3, "{by_schema:?}");
    }

    #[test]
    fn psi_and_linf_are_zero_for_equal_distributions() {
        assert!(psi(&[10, 20, 30], &[1, 2, 3]).abs() < 1e-12);
        let m: BTreeMap<String, u64> = [("a".to_string(), 3), ("b".to_string(), 1)].into();
        assert_eq!(linf(&m, &m), 0.0);
    }
}
