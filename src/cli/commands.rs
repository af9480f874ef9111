//! The commands that print: runs and pipelines tables, run detail, logs, and following a run.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::connect::Connection;
use super::{PipelinesCmd, RunsCmd, spec_error, trigger};
use crate::client::Client;

/// Percent-encode a query value (RFC 3339 times carry `+` and `:`).
pub(super) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) fn fmt_us(us: Option<i64>) -> String {
    us.and_then(chrono::DateTime::from_timestamp_micros)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

fn fmt_ms(ms: f64) -> String {
    if ms < 1000.0 { format!("{ms:.1} ms") } else { format!("{:.2} s", ms / 1000.0) }
}

fn duration(v: &Value) -> String {
    match (v["started_at"].as_i64(), v["finished_at"].as_i64()) {
        (Some(s), Some(f)) => fmt_ms((f - s) as f64 / 1000.0),
        _ => "-".into(),
    }
}

/// Print a run's progress from its event stream; exit code 0 if it succeeded.
pub(super) fn follow_run(c: &Client, id: i64) -> anyhow::Result<ExitCode> {
    let mut final_state = String::new();
    c.sse(&format!("/api/v1/runs/{id}/events"), |m| {
        match m.event.as_str() {
            "snapshot" => {
                // Tasks that moved before this stream opened.
                let Ok(snap) = serde_json::from_str::<Value>(&m.data) else { return true };
                for t in snap["tasks"].as_array().into_iter().flatten() {
                    let state = t["state"].as_str().unwrap_or("pending");
                    if state != "pending" && t["map_index"].as_i64().unwrap_or(-1) < 0 {
                        say!("  {:<9} {}", state, t["task_id"].as_str().unwrap_or("?"));
                    }
                }
                true
            }
            "state" => {
                let Ok(ev) = serde_json::from_str::<Value>(&m.data) else {
                    return true;
                };
                if ev["kind"] == "task" {
                    let task = match ev["map_index"].as_i64() {
                        Some(i) => format!("{}[{i}]", ev["task_id"].as_str().unwrap_or("?")),
                        None => ev["task_id"].as_str().unwrap_or("?").to_string(),
                    };
                    let took = ev["duration_ms"].as_f64().map(|d| format!(" in {}", fmt_ms(d))).unwrap_or_default();
                    let err = ev["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default();
                    match ev["state"].as_str().unwrap_or("") {
                        "running" => say!("  started   {task} (try {})", ev["try_number"].as_u64().unwrap_or(1)),
                        "success" => say!("  finished  {task}{took}"),
                        "failed" => say!("  FAILED    {task}{took}{err}"),
                        "up_for_retry" => say!("  retrying  {task}{took}{err}"),
                        "skipped" => say!("  skipped   {task}"),
                        "upstream_failed" => say!("  not run   {task} (upstream failed)"),
                        "cancelled" => say!("  cancelled {task}"),
                        _ => {}
                    }
                }
                true
            }
            "end" => {
                final_state = serde_json::from_str::<Value>(&m.data)
                    .ok()
                    .and_then(|v| v["state"].as_str().map(str::to_string))
                    .unwrap_or_default();
                false
            }
            _ => true,
        }
    })?;
    let run = c.get(&format!("/api/v1/runs/{id}"))?;
    let state =
        if final_state.is_empty() { run["run"]["state"].as_str().unwrap_or("?").to_string() } else { final_state };
    say!("run {id} {state} in {}", duration(&run["run"]));
    if let Some(e) = run["run"]["error"].as_str() {
        say!("  {e}");
    }
    Ok(if state == "success" { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(super) fn runs(cmd: &RunsCmd, conn: &Connection) -> anyhow::Result<ExitCode> {
    let c = &conn.client;
    match cmd {
        RunsCmd::List { pipeline, state, since, until, limit, cursor, json } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(s) = since {
                q.push(format!("since={}", encode(s)));
            }
            if let Some(u) = until {
                q.push(format!("until={}", encode(u)));
            }
            if let Some(p) = pipeline {
                q.push(format!("pipeline={p}"));
            }
            if let Some(s) = state {
                q.push(format!("state={s}"));
            }
            if let Some(cur) = cursor {
                q.push(format!("cursor={cur}"));
            }
            let r = c.get(&format!("/api/v1/runs?{}", q.join("&")))?;
            if *json {
                say!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            say!(
                "{:<6} {:<24} {:<10} {:<9} {:<20} {:>10}",
                "RUN",
                "PIPELINE",
                "STATE",
                "TRIGGER",
                "LOGICAL DATE",
                "DURATION"
            );
            for run in r["runs"].as_array().into_iter().flatten() {
                say!(
                    "{:<6} {:<24} {:<10} {:<9} {:<20} {:>10}",
                    run["id"].as_i64().unwrap_or(0),
                    run["pipeline"].as_str().unwrap_or(""),
                    run["state"].as_str().unwrap_or(""),
                    run["trigger"].as_str().unwrap_or(""),
                    fmt_us(run["logical_date"].as_i64()),
                    duration(run)
                );
            }
            if let Some(next) = r["next_cursor"].as_i64() {
                say!("more: --cursor {next}");
            }
        }
        RunsCmd::Show { id, json } => {
            let r = c.get(&format!("/api/v1/runs/{id}"))?;
            if *json {
                say!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            let run = &r["run"];
            say!(
                "run {} of {}: {} (trigger {}, logical date {})",
                id,
                run["pipeline"].as_str().unwrap_or(""),
                run["state"].as_str().unwrap_or(""),
                run["trigger"].as_str().unwrap_or(""),
                fmt_us(run["logical_date"].as_i64())
            );
            say!("params: {}", run["params"]);
            if let Some(e) = run["error"].as_str() {
                say!("error: {e}");
            }
            say!("{:<24} {:<16} {:>4} {:>10}  OUTPUTS / ERROR", "TASK", "STATE", "TRY", "DURATION");
            for t in r["tasks"].as_array().into_iter().flatten() {
                let name = match t["map_index"].as_i64() {
                    Some(i) if i >= 0 => format!("{}[{i}]", t["task_id"].as_str().unwrap_or("")),
                    _ => t["task_id"].as_str().unwrap_or("").to_string(),
                };
                let extra = t["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| if t["outputs"].is_null() { String::new() } else { t["outputs"].to_string() });
                let extra: String = extra.chars().take(80).collect();
                say!(
                    "{:<24} {:<16} {:>4} {:>10}  {}",
                    name,
                    t["state"].as_str().unwrap_or(""),
                    t["try_number"].as_u64().unwrap_or(0),
                    duration(t),
                    extra
                );
            }
            for a in r["artifacts"].as_array().into_iter().flatten() {
                say!(
                    "artifact {} / {}: {} bytes, sha256 {}",
                    a["task_id"].as_str().unwrap_or(""),
                    a["name"].as_str().unwrap_or(""),
                    a["size"],
                    a["sha256"].as_str().unwrap_or("")
                );
            }
        }
        RunsCmd::Logs { id, task, map_index, try_number, follow } => {
            let mut q = Vec::new();
            if let Some(m) = map_index {
                q.push(format!("map_index={m}"));
            }
            if let Some(t) = try_number {
                q.push(format!("try={t}"));
            }
            let q = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
            if *follow {
                c.sse(&format!("/api/v1/runs/{id}/tasks/{task}/logs/follow{q}"), |m| {
                    if m.event == "log" {
                        say_raw!("{}", m.data);
                        if !m.data.ends_with('\n') {
                            say!("");
                        }
                    }
                    m.event != "end"
                })?;
            } else {
                say_raw!("{}", c.get_text(&format!("/api/v1/runs/{id}/tasks/{task}/logs{q}"))?);
            }
        }
        RunsCmd::Cancel { id } => {
            c.post(&format!("/api/v1/runs/{id}/cancel"), &json!({}))?;
            say!("run {id}: cancel requested");
        }
        RunsCmd::Compare { ids, experiments, json } => {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            let key = if *experiments { "ids" } else { "runs" };
            let r = c.get(&format!("/api/v1/experiments/compare?{key}={}", list.join(",")))?;
            if *json {
                say!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            print_comparison(&r);
        }
        RunsCmd::Delete { ids, dry_run } => {
            for id in ids {
                let r = c.delete(&format!("/api/v1/runs/{id}?dry_run={dry_run}"))?;
                super::admin::say_freed(&r);
            }
        }
        RunsCmd::Resume { id, wait } => {
            let r = c.post(&format!("/api/v1/runs/{id}/resume"), &json!({}))?;
            say!("run {id}: resuming {} tasks", r["reset_tasks"]);
            if conn.must_wait(*wait) {
                return follow_run(c, *id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn pipelines(cmd: &PipelinesCmd, conn: &Connection) -> anyhow::Result<ExitCode> {
    let c = &conn.client;
    match cmd {
        PipelinesCmd::List { json } => {
            let r = c.get("/api/v1/pipelines")?;
            if *json {
                say!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(ExitCode::SUCCESS);
            }
            say!("{:<28} {:<14} {:<7} {:<20} DESCRIPTION", "PIPELINE", "SCHEDULE", "PAUSED", "NEXT LOGICAL DATE");
            for p in r["pipelines"].as_array().into_iter().flatten() {
                say!(
                    "{:<28} {:<14} {:<7} {:<20} {}",
                    p["name"].as_str().unwrap_or(""),
                    p["schedule"].as_str().unwrap_or("-"),
                    p["paused"].as_bool().unwrap_or(false),
                    fmt_us(p["next_logical"].as_i64()),
                    p["description"].as_str().unwrap_or("")
                );
            }
        }
        PipelinesCmd::Apply { files } => {
            for f in files {
                let yaml = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
                let r = c.post_text("/api/v1/pipelines", &yaml).map_err(|e| spec_error(f, e))?;
                say!("{}: {} {}", f.display(), r["name"].as_str().unwrap_or(""), r["result"].as_str().unwrap_or(""));
            }
        }
        PipelinesCmd::Trigger { name, params, logical_date, wait } => {
            let id = trigger(c, name, params, logical_date.as_deref())?;
            say!("run {id} of `{name}` started");
            if conn.must_wait(*wait) {
                return follow_run(c, id);
            }
        }
        PipelinesCmd::Pause { name } => {
            c.post(&format!("/api/v1/pipelines/{name}/pause"), &json!({}))?;
            say!("{name}: paused");
        }
        PipelinesCmd::Unpause { name } => {
            c.post(&format!("/api/v1/pipelines/{name}/unpause"), &json!({}))?;
            say!("{name}: unpaused");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The compare table: one column per experiment, params first (`*` marks those that differ).
fn print_comparison(r: &Value) {
    let heads = r["experiments"].as_array().cloned().unwrap_or_default();
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::Number(n) => n.as_f64().map(|f| format!("{}", (f * 1e6).round() / 1e6)).unwrap_or_default(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut line = format!("{:<28}", "");
    for h in &heads {
        let label = format!("run {} {}", h["run_id"], h["task_id"].as_str().unwrap_or(""));
        let label = match h["map_index"].as_i64() {
            Some(i) if i >= 0 => format!("{label}[{i}]"),
            _ => label,
        };
        line += &format!(" {label:>22}");
    }
    say!("{line}");
    for (section, key) in [("params", "params"), ("metrics", "metrics")] {
        say!("{section}:");
        for (name, v) in r[key].as_object().into_iter().flatten() {
            let mark = if v["differs"].as_bool() == Some(true) { "*" } else { " " };
            let mut line = format!("{mark} {:<26}", name);
            for x in v["values"].as_array().into_iter().flatten() {
                line += &format!(" {:>22}", cell(x));
            }
            say!("{line}");
        }
    }
}

/// `mlbox search QUERY`: hits grouped by kind, each with its snippet (highlights shown as *word*).
pub(super) fn search(c: &Client, q: &str, kind: Option<&str>, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    if q.trim().is_empty() {
        anyhow::bail!("give a query, e.g. `mlbox search timeout` or `mlbox search \"out of memory\" --kind log`");
    }
    let mut path = format!("/api/v1/search?q={}&limit={limit}", encode(q));
    if let Some(k) = kind {
        path.push_str(&format!("&kind={}", encode(k)));
    }
    let r = c.get(&path)?;
    if json {
        say!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let hits = r["hits"].as_array().cloned().unwrap_or_default();
    say!("{} matches for {q}", r["total"]);
    let plain = |s: &str| {
        s.replace("<b>", "*")
            .replace("</b>", "*")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    };
    for k in crate::search::KINDS {
        let group: Vec<&Value> = hits.iter().filter(|h| h["kind"] == *k).collect();
        if group.is_empty() {
            continue;
        }
        say!("\n{k}s:");
        for h in group {
            let line = h["line"].as_u64().map(|l| format!(" (line {l})")).unwrap_or_default();
            say!("  {}{line}  {}", plain(h["title"].as_str().unwrap_or("")), h["url"].as_str().unwrap_or(""));
            let snippet = plain(h["snippet"].as_str().unwrap_or(""));
            for l in snippet.lines().filter(|l| !l.trim().is_empty()).take(3) {
                say!("      {l}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
