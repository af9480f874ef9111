//! `mlbox users`, `mlbox tokens`, `mlbox audit`: the self-hosting commands that talk to the
//! users, tokens and audit API.

use std::path::Path;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::Client;
use mlbox_ui::pages::enc;

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// List users and their roles.
    List,
    /// Add a user; prints a random password once unless --password-stdin gives one.
    Add {
        name: String,
        /// viewer (read only), editor (pipelines, runs, models) or admin (also users).
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role, password or whether they may sign in.
    Set {
        name: String,
        #[arg(long)]
        role: Option<String>,
        /// Read a new password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Make a new random password and print it once.
        #[arg(long, conflicts_with = "password_stdin")]
        reset_password: bool,
        /// Stop the user signing in (their tokens stop working too).
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
    },
    /// Remove a user with their tokens.
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
pub enum TokensCmd {
    /// Your tokens (admins: --user NAME or --all).
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Create an API token; the secret is printed once.
    Create {
        /// What the token is for (e.g. "prometheus", "ci").
        name: String,
        /// Whose token (admins; on the server's machine this is required).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id; it stops working at once.
    Revoke { id: i64 },
}

fn stdin_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        return Err(anyhow!("no password on standard input"));
    }
    Ok(p)
}

fn when(v: &Value) -> String {
    mlbox_ui::when(v)
}

pub(super) fn users(cmd: &UsersCmd, c: &Client) -> anyhow::Result<ExitCode> {
    match cmd {
        UsersCmd::List => {
            let r = c.get("/api/v1/users")?;
            say!("{:<24} {:<8} {:<9} CREATED (UTC)", "NAME", "ROLE", "STATE");
            for u in r["users"].as_array().into_iter().flatten() {
                let state = if u["disabled"] == true { "disabled" } else { "active" };
                let (name, role) = (u["name"].as_str().unwrap_or(""), u["role"].as_str().unwrap_or(""));
                say!("{name:<24} {role:<8} {state:<9} {}", when(&u["created_at"]));
            }
        }
        UsersCmd::Add { name, role, password_stdin } => {
            let mut body = json!({"name": name, "role": role});
            if *password_stdin {
                body["password"] = json!(stdin_line()?);
            }
            let r = c.post("/api/v1/users", &body)?;
            say!("added {name} ({})", r["user"]["role"].as_str().unwrap_or(role));
            if let Some(p) = r["password"].as_str() {
                say!("password: {p}\n(shown only now)");
            }
        }
        UsersCmd::Set { name, role, password_stdin, reset_password, disable, enable } => {
            let mut body = json!({});
            if let Some(r) = role {
                body["role"] = json!(r);
            }
            if *password_stdin {
                body["password"] = json!(stdin_line()?);
            }
            if *reset_password {
                body["reset_password"] = json!(true);
            }
            if *disable || *enable {
                body["disabled"] = json!(*disable);
            }
            if body.as_object().is_some_and(|o| o.is_empty()) {
                return Err(anyhow!(
                    "nothing to change: give --role, --password-stdin, --reset-password, --disable or --enable"
                ));
            }
            let r = c.put(&format!("/api/v1/users/{}", enc(name)), &body)?;
            let u = &r["user"];
            let state = if u["disabled"] == true { "disabled" } else { "active" };
            say!("{name}: {} ({state})", u["role"].as_str().unwrap_or(""));
            if let Some(p) = r["password"].as_str() {
                say!("new password: {p}\n(shown only now)");
            }
        }
        UsersCmd::Remove { name } => {
            c.delete(&format!("/api/v1/users/{}", enc(name)))?;
            say!("removed {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn tokens(cmd: &TokensCmd, c: &Client) -> anyhow::Result<ExitCode> {
    match cmd {
        TokensCmd::List { user, all } => {
            let mut path = "/api/v1/tokens".to_string();
            if let Some(u) = user {
                path.push_str(&format!("?user={}", enc(u)));
            } else if *all {
                path.push_str("?all=true");
            }
            let r = c.get(&path)?;
            say!("{:<5} {:<16} {:<24} {:<14} {:<19} STATE", "ID", "USER", "NAME", "PREFIX", "LAST USED (UTC)");
            for t in r["tokens"].as_array().into_iter().flatten() {
                let state = if t["revoked_at"].is_null() {
                    "active".to_string()
                } else {
                    format!("revoked {}", when(&t["revoked_at"]))
                };
                say!(
                    "{:<5} {:<16} {:<24} {:<14} {:<19} {state}",
                    t["id"],
                    t["user"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or(""),
                    format!("{}…", t["prefix"].as_str().unwrap_or("")),
                    when(&t["last_used_at"])
                );
            }
        }
        TokensCmd::Create { name, user } => {
            let mut body = json!({"name": name});
            if let Some(u) = user {
                body["user"] = json!(u);
            }
            let r = c.post("/api/v1/tokens", &body)?;
            say!("token {} for {}: {}", r["token"]["id"], r["token"]["user"].as_str().unwrap_or(""), name);
            say!("{}", r["secret"].as_str().unwrap_or(""));
            say!("(shown only now; send it as `Authorization: Bearer TOKEN`, or MLBOX_TOKEN for the CLI)");
        }
        TokensCmd::Revoke { id } => {
            c.delete(&format!("/api/v1/tokens/{id}"))?;
            say!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn audit(c: &Client, limit: u32, actor: Option<&str>, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut path = format!("/api/v1/audit?limit={limit}");
    if let Some(a) = actor {
        path.push_str(&format!("&actor={}", enc(a)));
    }
    let r = c.get(&path)?;
    if as_json {
        say!("{}", serde_json::to_string_pretty(&r["entries"])?);
        return Ok(ExitCode::SUCCESS);
    }
    say!("{:<19} {:<16} {:<6} ACTION  TARGET", "WHEN (UTC)", "WHO", "STATUS");
    for e in r["entries"].as_array().into_iter().flatten() {
        say!(
            "{:<19} {:<16} {:<6} {}  {}",
            when(&e["at"]),
            e["actor"].as_str().unwrap_or(""),
            e["status"],
            e["action"].as_str().unwrap_or(""),
            e["target"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `mlbox backup --out FILE`: the server writes the archive; it is saved under a temporary name
/// and renamed when complete, so FILE is never a partial backup.
pub(super) fn backup(c: &Client, out: &Path) -> anyhow::Result<ExitCode> {
    let tmp = out.with_extension("partial");
    let bytes = c.post_to_file("/api/v1/admin/backup", &tmp)?;
    std::fs::rename(&tmp, out)?;
    say!("backup written to {} ({:.1} MB)", out.display(), bytes as f64 / 1e6);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn restore(file: &Path, data_dir: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let r = crate::maintenance::restore(file, data_dir, force)?;
    say!(
        "restored {} into {}: {} runs, {} model versions, {} files",
        file.display(),
        data_dir.display(),
        r.runs,
        r.model_versions,
        r.files
    );
    if let Some(aside) = r.set_aside {
        say!("the data that was there is in {}", aside.display());
    }
    say!("start the server: the search index is rebuilt on the first start");
    Ok(ExitCode::SUCCESS)
}

/// One line for what a deletion or `gc` freed.
pub(super) fn say_freed(r: &Value) {
    let verb = if r["dry_run"] == true { "would free" } else { "freed" };
    let runs: Vec<String> = r["runs"].as_array().into_iter().flatten().map(|v| v.to_string()).collect();
    say!(
        "{verb} {:.1} MB: {} runs{}, {} artifact files, {} log files",
        r["bytes"].as_f64().unwrap_or(0.0) / 1e6,
        runs.len(),
        if runs.is_empty() { String::new() } else { format!(" ({})", runs.join(", ")) },
        r["artifact_files"],
        r["log_files"]
    );
}
