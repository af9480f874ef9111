//! `mlbox models ...` (the registry) and `mlbox predict` (batch predictions from a file).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use polars::prelude::{CsvWriter, DataFrame, JsonFormat, JsonWriter, ParquetWriter, PolarsResult, SerWriter};
use serde_json::{Value, json};

use super::ModelsCmd;
use super::commands::{encode, fmt_us};
use super::connect::Connection;
use crate::client::Client;
use crate::registry::{ModelUri, Selector};

/// Who the registry records for moves made from this shell.
fn actor() -> String {
    format!("cli ({})", std::env::var("USER").unwrap_or_else(|_| "unknown user".into()))
}

fn aliases(m: &Value) -> String {
    let a: Vec<String> = m["aliases"].as_object().into_iter().flatten().map(|(k, v)| format!("{k}→{v}")).collect();
    if a.is_empty() { "-".into() } else { a.join(", ") }
}

fn metric_summary(m: &Value) -> String {
    let mut parts: Vec<String> = m
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("eval_") || k.starts_with("test_") || *k == "best_val_loss")
        .filter_map(|(k, v)| v.as_f64().map(|f| format!("{k} {f:.4}")))
        .collect();
    parts.truncate(4);
    parts.join(", ")
}

pub(super) fn models(cmd: &ModelsCmd, conn: &Connection) -> anyhow::Result<ExitCode> {
    let c = &conn.client;
    match cmd {
        ModelsCmd::List { json } => {
            let r = c.get("/api/v1/models")?;
            if *json {
                say!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            say!("{:<28} {:<8} {:<30} UPDATED", "MODEL", "LATEST", "ALIASES");
            for m in r["models"].as_array().into_iter().flatten() {
                say!(
                    "{:<28} {:<8} {:<30} {}",
                    m["name"].as_str().unwrap_or(""),
                    m["latest_version"].as_i64().map(|v| v.to_string()).unwrap_or("-".into()),
                    aliases(m),
                    fmt_us(m["updated_at"].as_i64())
                );
            }
        }
        ModelsCmd::Show { name, json } => {
            let r = c.get(&format!("/api/v1/models/{name}"))?;
            if *json {
                say!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            say!("{}  aliases: {}", name, aliases(&r["model"]));
            say!("{:<8} {:<10} {:<9} {:<18} {:<20} METRICS", "VERSION", "KIND", "BLESSED", "ALIASES", "REGISTERED");
            for v in r["versions"].as_array().into_iter().flatten() {
                let al: Vec<&str> = v["aliases"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let blessed = match v["blessed"].as_bool() {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                };
                say!(
                    "{:<8} {:<10} {:<9} {:<18} {:<20} {}{}",
                    v["version"].as_i64().unwrap_or(0),
                    v["kind"].as_str().unwrap_or(""),
                    blessed,
                    if al.is_empty() { "-".to_string() } else { al.join(",") },
                    fmt_us(v["created_at"].as_i64()),
                    metric_summary(&v["metrics"]),
                    if v["archived"].as_bool() == Some(true) { "  (archived)" } else { "" }
                );
            }
        }
        ModelsCmd::Register { name, experiment, description } => {
            let body = json!({"experiment": experiment, "description": description, "actor": actor()});
            let v = c.post(&format!("/api/v1/models/{name}/versions"), &body)?;
            say!("registered {name} version {}", v["version"]);
        }
        ModelsCmd::Promote { name, version, alias, reason, require_blessed } => {
            let body =
                json!({"version": version, "reason": reason, "actor": actor(), "require_blessed": require_blessed});
            let r = c.put(&format!("/api/v1/models/{name}/aliases/{alias}"), &body)?;
            match (r["moved"].as_bool(), r["from_version"].as_i64()) {
                (Some(false), _) => say!("{name}@{alias} already is version {version}"),
                (_, Some(f)) => say!("{name}@{alias}: version {f} → {version} (serving now)"),
                _ => say!("{name}@{alias} → version {version} (serving now)"),
            }
        }
        ModelsCmd::History { name, alias, at, json } => {
            let mut q = Vec::new();
            if let Some(a) = alias {
                q.push(format!("alias={}", encode(a)));
            }
            if let Some(t) = at {
                q.push(format!("at={}", encode(t)));
            }
            let r = c.get(&format!("/api/v1/models/{name}/history?{}", q.join("&")))?;
            if *json {
                say!("{}", serde_json::to_string_pretty(&r)?);
            } else if at.is_some() {
                match r["version"].as_i64() {
                    Some(v) => say!(
                        "{name}@{}: version {v} (since {}, by {})",
                        r["alias"].as_str().unwrap_or(""),
                        fmt_us(r["since"]["at"].as_i64()),
                        r["since"]["actor"].as_str().unwrap_or("")
                    ),
                    None => say!("{name}@{}: no version then", r["alias"].as_str().unwrap_or("")),
                }
            } else {
                say!("{:<20} {:<12} {:<6} {:<6} {:<32} REASON", "WHEN", "ALIAS", "FROM", "TO", "BY");
                for h in r["history"].as_array().into_iter().flatten() {
                    let v = |k: &str| h[k].as_i64().map(|v| v.to_string()).unwrap_or("-".into());
                    say!(
                        "{:<20} {:<12} {:<6} {:<6} {:<32} {}",
                        fmt_us(h["at"].as_i64()),
                        h["alias"].as_str().unwrap_or(""),
                        v("from_version"),
                        v("to_version"),
                        h["actor"].as_str().unwrap_or(""),
                        h["reason"].as_str().unwrap_or("")
                    );
                }
            }
        }
        ModelsCmd::Archive { name, version, undo } => {
            c.post(&format!("/api/v1/models/{name}/versions/{version}/archive"), &json!({"archived": !undo}))?;
            say!("{name} version {version}: {}", if *undo { "unarchived" } else { "archived" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The version a reference points at, asked of the server.
fn version_of(c: &Client, uri: &ModelUri) -> anyhow::Result<i64> {
    match &uri.selector {
        Selector::Version(v) => Ok(*v),
        Selector::Alias(a) => {
            let m = c.get(&format!("/api/v1/models/{}", uri.name))?;
            m["model"]["aliases"][a]
                .as_i64()
                .ok_or_else(|| anyhow!("model `{}` has no version under the alias `{a}`; promote one first", uri.name))
        }
    }
}

pub(super) fn predict(c: &Client, model: &str, input: &Path, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let uri = ModelUri::parse(model).map_err(|e| anyhow!(e.message))?;
    let format = crate::data::format_of(&input.display().to_string(), None).map_err(|e| anyhow!(e))?;
    let out_format = match output {
        Some(p) => crate::data::format_of(&p.display().to_string(), None).map_err(|e| anyhow!(e))?,
        None => "csv",
    };
    let df = crate::data::read_one(input, format, 0).map_err(|e| anyhow!("cannot read {}: {e}", input.display()))?;
    let version = version_of(c, &uri)?;
    let bytes = c.get_bytes(&format!("/api/v1/models/{}/versions/{version}/artifact", uri.name))?;
    let (_, loaded) = crate::train::load_bytes(&bytes).map_err(|e| anyhow!(e))?;
    let mut out = crate::ops::predict_frame(&loaded, &df, None).map_err(|e| anyhow!(e))?;
    let write = |w: &mut dyn std::io::Write, df: &mut DataFrame| -> PolarsResult<()> {
        match out_format {
            "parquet" => ParquetWriter::new(w).finish(df).map(|_| ()),
            "ndjson" => JsonWriter::new(w).with_json_format(JsonFormat::JsonLines).finish(df),
            _ => CsvWriter::new(w).finish(df),
        }
    };
    match output {
        Some(p) => {
            let mut f = std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?;
            write(&mut f, &mut out)?;
            eprintln!("{} rows predicted by {}/{version} → {}", out.height(), uri.name, p.display());
        }
        None => write(&mut std::io::stdout().lock(), &mut out)?,
    }
    Ok(ExitCode::SUCCESS)
}
