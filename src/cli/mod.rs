//! The command line. `serve` runs the server; every other command talks HTTP to the process that
//! owns the data dir: a running server (found through the data dir lock, or `--server URL`), or
//! one this command starts in-process for its own duration.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::client::Client;
use crate::config::{Config, Overrides};

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

mod admin;
mod commands;
mod connect;
mod registry;
mod serve;

use commands::{follow_run, pipelines, runs};
use connect::Connection;
use registry::{models, predict};

#[derive(Parser, Debug)]
#[command(name = "mlbox", version, about = "One binary ML platform: pipelines, scheduler, executor and API", long_about = None)]
pub struct Cli {
    /// Where mlbox keeps its database, artifacts and logs.
    #[arg(long, global = true, env = "MLBOX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Talk to this running server instead of the data dir (e.g. http://127.0.0.1:8080).
    #[arg(long, global = true, env = "MLBOX_SERVER")]
    pub server: Option<String>,
    /// API token for --server (from `mlbox tokens create`). On the server's own machine the
    /// data dir's local token is used instead.
    #[arg(long, global = true, env = "MLBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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
    /// The model registry: versions, aliases and their history.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
    /// Batch predictions: a model (NAME, NAME@ALIAS or NAME/VERSION) over a CSV, Parquet or
    /// NDJSON file, computed here with the model file the server holds.
    Predict {
        model: String,
        #[arg(long)]
        input: PathBuf,
        /// Where to write the rows with their predictions (.csv, .parquet or .ndjson); default:
        /// CSV on stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Users and their roles (admins).
    Users {
        #[command(subcommand)]
        cmd: UsersCmd,
    },
    /// API tokens: create one per program or colleague, revoke it when done.
    Tokens {
        #[command(subcommand)]
        cmd: TokensCmd,
    },
    /// The audit log: every change, who made it and when (admins).
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only this user's changes.
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Save a consistent backup of the data dir (database, artifacts, logs) while the server runs.
    Backup {
        /// The archive to write (a .tar file).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into --data-dir (the server must be stopped). Existing data is refused
    /// unless --force, which moves it aside into the data dir.
    Restore {
        file: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Apply retention (`[retention]` in mlbox.toml) and delete artifact files nothing references.
    Gc {
        /// Say what would be freed; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Full-text search over pipelines, runs, task logs, models and datasets, or
    /// `mlbox search reindex` to rebuild the index.
    #[command(args_conflicts_with_subcommands = true)]
    Search {
        #[command(subcommand)]
        cmd: Option<SearchCmd>,
        /// The query: words (all must match), "a phrase", OR, -exclude, title:word.
        query: Vec<String>,
        /// Only this kind: pipeline, run, log, model, version or dataset.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the JSON response.
        #[arg(long)]
        json: bool,
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
    /// Serve without users and tokens (allowed only on a loopback address).
    #[arg(long, env = "MLBOX_NO_AUTH")]
    pub no_auth: bool,
    /// TLS certificate chain (PEM); with --tls-key, mlbox serves HTTPS.
    #[arg(long, env = "MLBOX_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "MLBOX_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
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
    /// Delete finished runs with their logs and the artifact files only they used.
    Delete {
        #[arg(required = true)]
        ids: Vec<i64>,
        /// Say what would be freed; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare the tracked training experiments of several runs side by side: params (differences
    /// marked) and metrics.
    Compare {
        /// Run ids (every experiment in them), or experiment ids with --experiments.
        #[arg(required = true, num_args = 1..)]
        ids: Vec<i64>,
        /// The ids are experiment ids, not run ids.
        #[arg(long)]
        experiments: bool,
        #[arg(long)]
        json: bool,
    },
}

pub use admin::{TokensCmd, UsersCmd};

#[derive(Subcommand, Debug)]
pub enum SearchCmd {
    /// Rebuild the search index from the metadata store and the task logs.
    Reindex,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCmd {
    /// Registered models with their latest version and aliases.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A model's versions: metrics, blessing, lineage, aliases.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Register a trained model (a tracked experiment's model file) as the next version.
    Register {
        name: String,
        #[arg(long)]
        experiment: i64,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Move an alias to a version (serving swaps to it after a smoke test).
    Promote {
        name: String,
        version: i64,
        #[arg(long, default_value = "production")]
        alias: String,
        /// Why: kept in the alias history.
        #[arg(long, default_value = "")]
        reason: String,
        /// Refuse unless the version's evaluation blessed it.
        #[arg(long)]
        require_blessed: bool,
    },
    /// Alias moves, newest first; with --at, the version the alias pointed at then.
    History {
        name: String,
        #[arg(long)]
        alias: Option<String>,
        /// A time (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Archive a version (it can no longer take an alias); --undo brings it back.
    Archive {
        name: String,
        version: i64,
        #[arg(long)]
        undo: bool,
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
        o.no_auth = s.no_auth;
        o.tls_cert = s.tls_cert.clone();
        o.tls_key = s.tls_key.clone();
    }
    o
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::resolve(&overrides(&cli))?;
    match &cli.command {
        Command::Serve(_) => serve::serve(config),
        Command::Validate { files } => validate(files),
        Command::Restore { file, force } => admin::restore(file, &config.data_dir, *force),
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

fn command(cmd: &Command, conn: &Connection) -> anyhow::Result<ExitCode> {
    let c = &conn.client;
    match cmd {
        Command::Serve(_) | Command::Validate { .. } | Command::Restore { .. } => {
            unreachable!("handled before connecting")
        }
        Command::Backup { out } => admin::backup(c, out),
        Command::Gc { dry_run } => {
            let r = c.post(&format!("/api/v1/admin/gc?dry_run={dry_run}"), &json!({}))?;
            admin::say_freed(&r);
            Ok(ExitCode::SUCCESS)
        }
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
        Command::Models { cmd } => models(cmd, conn),
        Command::Predict { model, input, output } => predict(c, model, input, output.as_deref()),
        Command::Users { cmd } => admin::users(cmd, c),
        Command::Tokens { cmd } => admin::tokens(cmd, c),
        Command::Audit { limit, actor, json } => admin::audit(c, *limit, actor.as_deref(), *json),
        Command::Search { cmd: Some(SearchCmd::Reindex), .. } => {
            let r = c.post("/api/v1/search/reindex", &json!({}))?;
            say!("search index rebuilt: {} documents", r["documents"]);
            Ok(ExitCode::SUCCESS)
        }
        Command::Search { cmd: None, query, kind, limit, json } => {
            commands::search(c, &query.join(" "), kind.as_deref(), *limit, *json)
        }
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
