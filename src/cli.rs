//! The command line. `serve` runs the server; every other command talks HTTP to the process that
//! owns the data dir: a running server (found through the data dir lock, or `--server URL`), or
//! one this command starts in-process for its own duration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::app::{self, App};
use crate::client::Client;
use crate::config::{Config, Overrides};
use crate::lock::Acquire;

/// `println!` that ends the program quietly when stdout is closed (`mlbox runs list | head`).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// `print!` with the same behaviour.
macro_rules! say_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout();
        if write!(out, $($t)*).and_then(|_| out.flush()).is_err() {
            std::process::exit(0);
        }
    }};
}

#[derive(Parser, Debug)]
#[command(name = "mlbox", version, about = "One binary ML platform: pipelines, scheduler, executor and API", long_about = None)]
pub struct Cli {
    /// Where mlbox keeps its database, artifacts and logs.
    #[arg(long, global = true, env = "MLBOX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Talk to this running server instead of the data dir (e.g. http://127.0.0.1:8080).
    #[arg(long, global = true, env = "MLBOX_SERVER")]
    pub server: Option<String>,
    /// Config file (default: ./mlbox.toml if present).
    #[arg(long, global = true, env = "MLBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "MLBOX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the HTTP API, the scheduler and the executor.
    Serve(ServeArgs),
    /// Run one pipeline file now, printing progress; exits 0 if the run succeeded.
    Run {
        file: PathBuf,
        /// A param as name=value (repeatable).
        #[arg(long = "param", short = 'p')]
        params: Vec<String>,
        /// The run's logical date (default: now).
        #[arg(long)]
        logical_date: Option<String>,
    },
    /// Check pipeline files; prints every error with file:line:column.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Inspect and control runs.
    Runs {
        #[command(subcommand)]
        cmd: RunsCmd,
    },
    /// Inspect and control pipelines.
    Pipelines {
        #[command(subcommand)]
        cmd: PipelinesCmd,
    },
    /// Create runs for every schedule interval between two dates.
    Backfill {
        name: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// With a server: wait for the runs to finish.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MLBOX_ADDR")]
    pub addr: Option<String>,
    /// Directory of pipeline YAML files to load at start (default: ./pipelines if present).
    #[arg(long, env = "MLBOX_PIPELINES")]
    pub pipelines: Option<PathBuf>,
    /// Executor slots (default: number of cores).
    #[arg(long, env = "MLBOX_SLOTS")]
    pub slots: Option<usize>,
    /// How long running tasks get to finish on Ctrl-C.
    #[arg(long, env = "MLBOX_GRACE")]
    pub grace: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// List runs, newest first.
    List {
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long)]
        state: Option<String>,
        /// Only runs created at or after this time (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only runs created before this time.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Show runs older than this run id (from a previous page).
        #[arg(long)]
        cursor: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// Show a run and its tasks.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Print a task's log.
    Logs {
        id: i64,
        task: String,
        #[arg(long)]
        map_index: Option<i64>,
        #[arg(long = "try")]
        try_number: Option<u32>,
        /// Keep printing as the task writes.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Cancel a queued or running run.
    Cancel { id: i64 },
    /// Re-run the failed and not-run tasks of a finished run.
    Resume {
        id: i64,
        /// With a server: wait for the run to finish.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PipelinesCmd {
    /// List registered pipelines.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create or update pipelines from YAML files.
    Apply {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Start a run of a registered pipeline.
    Trigger {
        name: String,
        #[arg(long = "param", short = 'p')]
        params: Vec<String>,
        #[arg(long)]
        logical_date: Option<String>,
        /// With a server: wait for the run to finish.
        #[arg(long)]
        wait: bool,
    },
    /// Stop scheduling a pipeline.
    Pause { name: String },
    /// Resume scheduling a pipeline.
    Unpause { name: String },
}

pub fn init_tracing(cli: &Cli) {
    let default = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MLBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn overrides(cli: &Cli) -> Overrides {
    let mut o = Overrides { config: cli.config.clone(), data_dir: cli.data_dir.clone(), ..Default::default() };
    if let Command::Serve(s) = &cli.command {
        o.addr = s.addr.clone();
        o.pipelines = s.pipelines.clone();
        o.slots = s.slots;
        o.grace = s.grace.clone();
    }
    o
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::resolve(&overrides(&cli))?;
    match &cli.command {
        Command::Serve(_) => serve(config),
        Command::Validate { files } => validate(files),
        _ => {
            let conn = Connection::open(&cli, config)?;
            let out = command(&cli.command, &conn);
            conn.close();
            out
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let data_dir = config.data_dir.clone();
    let lock = wait_for_lock(&config)?;
    let rt = runtime()?;
    let app = Arc::new(App::open(config.clone(), lock, true)?);
    if let Some(dir) = &config.pipelines {
        for (file, r) in app.load_dir(dir) {
            match r {
                Ok(u) => {
                    tracing::info!(file, pipeline = %u.name, result = ?u.result, "Loaded pipeline")
                }
                Err(e) => tracing::error!(file, "Pipeline not loaded:\n{}", e.message),
            }
        }
    }
    let listener = rt.block_on(tokio::net::TcpListener::bind(config.addr)).with_context(|| {
        format!("cannot listen on {} (is another program using it? pick one with --addr)", config.addr)
    })?;
    let addr = listener.local_addr()?;
    // Other mlbox commands on this machine connect to what we publish: a wildcard address
    // (0.0.0.0 or ::) is reachable on loopback.
    let mut reachable = addr;
    if addr.ip().is_unspecified() {
        reachable.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    app.publish(&reachable.to_string(), "serve")?;
    tracing::info!(%addr, data_dir = %data_dir.display(), slots = config.slots, "mlbox is listening");
    eprintln!("mlbox {} listening on http://{addr} (data dir {})", env!("CARGO_PKG_VERSION"), data_dir.display());
    let router = crate::server::router(app.clone());
    rt.block_on(async {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Shutting down: no new tasks start; press Ctrl-C again to quit now");
            tokio::spawn(async {
                let _ = tokio::signal::ctrl_c().await;
                eprintln!("second Ctrl-C: quitting now");
                std::process::exit(130);
            });
        };
        #[cfg(unix)]
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = shutdown => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {
                    tracing::info!("SIGTERM: shutting down");
                }
            }
        };
        let stopping = app.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            // Live streams (run events, log follows) end now instead of holding shutdown open.
            stopping.cancel();
        };
        axum::serve(listener, router).with_graceful_shutdown(shutdown).await
    })?;
    let grace = config.grace;
    rt.block_on(async { tokio::task::spawn_blocking(move || app.shutdown(grace)).await })?;
    tracing::info!("Stopped; state saved");
    Ok(ExitCode::SUCCESS)
}

/// A one-shot CLI holder gives the lock back within moments; wait for it rather than fail.
fn wait_for_lock(config: &Config) -> anyhow::Result<crate::lock::DataDirLock> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match app::acquire(&config.data_dir)? {
            Acquire::Owned(lock) => return Ok(lock),
            Acquire::HeldBy(info) => {
                // A one-shot CLI command, or a holder that has not published its address yet.
                let short = info.as_ref().is_none_or(|i| i.kind != "serve");
                if !short || std::time::Instant::now() > deadline {
                    let who = info
                        .map(|i| format!("mlbox {} (pid {}) at http://{}", i.kind, i.pid, i.addr))
                        .unwrap_or("another mlbox process".into());
                    bail!(
                        "data dir {} is in use by {who}; stop it or use another --data-dir",
                        config.data_dir.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn validate(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let ops = crate::ops::Registry::builtin();
    let mut ok = true;
    for f in files {
        let yaml = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        match crate::pipeline::load(&f.display().to_string(), &yaml, &ops) {
            Ok(plan) => {
                say!("{}: ok (pipeline `{}`, {} tasks)", f.display(), plan.spec.name, plan.spec.tasks.len())
            }
            Err(e) => {
                eprintln!("{e}");
                ok = false;
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// Where the CLI sends its requests, and the in-process server it started, if any.
struct Connection {
    client: Client,
    local: Option<Local>,
}

struct Local {
    app: Arc<App>,
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Connection {
    fn open(cli: &Cli, config: Config) -> anyhow::Result<Connection> {
        if let Some(url) = &cli.server {
            return Ok(Connection { client: Client::new(url), local: None });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match app::acquire(&config.data_dir)? {
                Acquire::HeldBy(Some(info)) => {
                    return Ok(Connection { client: Client::new(&format!("http://{}", info.addr)), local: None });
                }
                Acquire::HeldBy(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Acquire::HeldBy(None) => {
                    bail!("data dir {} is locked by an mlbox process that does not answer", config.data_dir.display())
                }
                Acquire::Owned(lock) => return Self::local(config, lock),
            }
        }
    }

    /// Own the data dir for this command: open it and serve the API on a private loopback port.
    fn local(config: Config, lock: crate::lock::DataDirLock) -> anyhow::Result<Connection> {
        let rt = runtime()?;
        let app = Arc::new(App::open(config, lock, false)?);
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        app.publish(&addr.to_string(), "cli")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = crate::server::router(app.clone());
        rt.spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Connection { client: Client::new(&format!("http://{addr}")), local: Some(Local { app, rt, stop }) })
    }

    /// Runs started by this command must finish before it exits when it owns the engine.
    fn must_wait(&self, asked: bool) -> bool {
        asked || self.local.is_some()
    }

    fn close(self) {
        if let Some(l) = self.local {
            let _ = l.stop.send(());
            let app = l.app.clone();
            l.app.shutdown(app.config.grace);
            l.rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn command(cmd: &Command, conn: &Connection) -> anyhow::Result<ExitCode> {
    let c = &conn.client;
    match cmd {
        Command::Serve(_) | Command::Validate { .. } => unreachable!("handled before connecting"),
        Command::Run { file, params, logical_date } => {
            let yaml = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            let saved = c.post_text("/api/v1/pipelines", &yaml).map_err(|e| spec_error(file, e))?;
            let name = saved["name"].as_str().unwrap_or_default().to_string();
            let id = trigger(c, &name, params, logical_date.as_deref())?;
            say!("run {id} of `{name}` started");
            follow_run(c, id)
        }
        Command::Runs { cmd } => runs(cmd, conn),
        Command::Pipelines { cmd } => pipelines(cmd, conn),
        Command::Backfill { name, from, to, wait } => {
            let r = c.post(&format!("/api/v1/pipelines/{name}/backfill"), &json!({"from": from, "to": to}))?;
            let ids: Vec<i64> = r["run_ids"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
            say!("created {} runs: {}", ids.len(), ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", "));
            let mut ok = true;
            if conn.must_wait(*wait) {
                for id in ids {
                    ok &= follow_run(c, id)? == ExitCode::SUCCESS;
                }
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

fn spec_error(file: &std::path::Path, e: anyhow::Error) -> anyhow::Error {
    anyhow!("{}", format!("{e:#}").replace("request body", &file.display().to_string()))
}

fn trigger(c: &Client, name: &str, params: &[String], logical_date: Option<&str>) -> anyhow::Result<i64> {
    let params = crate::pipeline::params::parse_pairs(params).map_err(|e| anyhow!(e))?;
    let mut body = json!({ "params": params });
    if let Some(d) = logical_date {
        body["logical_date"] = json!(d);
    }
    let r = c.post(&format!("/api/v1/pipelines/{name}/trigger"), &body)?;
    r["run_id"].as_i64().ok_or_else(|| anyhow!("the server did not return a run id"))
}

/// Percent-encode a query value (RFC 3339 times carry `+` and `:`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn fmt_us(us: Option<i64>) -> String {
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
fn follow_run(c: &Client, id: i64) -> anyhow::Result<ExitCode> {
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

fn runs(cmd: &RunsCmd, conn: &Connection) -> anyhow::Result<ExitCode> {
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
                    run["id"],
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
                    t["try_number"],
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

fn pipelines(cmd: &PipelinesCmd, conn: &Connection) -> anyhow::Result<ExitCode> {
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
