//! `shell`: runs `sh -c COMMAND` in its own process group, streams stdout/stderr into the task
//! log, and kills the whole group on timeout or cancel. The program may write a JSON object to
//! `$MLBOX_OUTPUTS` (the task's outputs) and files to `$MLBOX_ARTIFACTS` (its artifacts).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{Kind, Op, Outcome, Param, StopReason, TaskContext, opt, req};
use crate::logs::LogSink;

/// How long a process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

pub struct Shell;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    command: String,
    #[serde(default)]
    env: BTreeMap<String, Value>,
    #[serde(default)]
    cwd: Option<String>,
}

fn pump(reader: impl Read + Send + 'static, log: LogSink) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => log.write_bytes(&buf),
            }
        }
    })
}

/// Signal the command's process group; true if any process was still in it.
fn kill_group(pid: u32, signal: i32) -> bool {
    // SAFETY: killpg only sends a signal; a group with no process left returns ESRCH.
    unsafe { libc::killpg(pid as libc::pid_t, signal) == 0 }
}

impl Op for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("command", Kind::String, "the command line, run with `sh -c`"),
            opt("env", Kind::Map, "extra environment variables"),
            opt("cwd", Kind::String, "working directory (default: the server's)"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        match with.get("command").and_then(Value::as_str) {
            Some(c) if c.trim().is_empty() => vec!["`command` is empty".into()],
            _ => Vec::new(),
        }
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("shell", with)?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&p.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Secrets the server was started with are not the task's to read or log.
            .env_remove("MLBOX_ADMIN_PASSWORD")
            .env_remove("MLBOX_TOKEN")
            .env("MLBOX_RUN_ID", ctx.run_id.to_string())
            .env("MLBOX_PIPELINE", &ctx.pipeline)
            .env("MLBOX_TASK_ID", &ctx.task_id)
            .env("MLBOX_MAP_INDEX", ctx.map_index.to_string())
            .env("MLBOX_TRY_NUMBER", ctx.try_number.to_string())
            .env("MLBOX_ARTIFACTS", &ctx.artifacts_dir)
            .env("MLBOX_OUTPUTS", &ctx.outputs_file)
            .process_group(0);
        for (k, v) in &p.env {
            cmd.env(k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
        }
        if let Some(cwd) = &p.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot start sh: {e}"))?;
        let pid = child.id();
        let out = child.stdout.take().map(|s| pump(s, ctx.log.clone()));
        let err = child.stderr.take().map(|s| pump(s, ctx.log.clone()));

        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let mut stopped: Option<StopReason> = None;
        let mut killed_at = None;
        let status = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(status) => {
                    break status.map_err(|e| format!("waiting for the command failed: {e}"))?;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("lost track of the command".into());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if stopped.is_none()
                && let Some(reason) = ctx.stop.reason()
            {
                ctx.log.line(&format!("mlbox: stopping the command ({reason:?}): SIGTERM to its process group"));
                let _ = kill_group(pid, libc::SIGTERM);
                stopped = Some(reason);
                killed_at = Some(std::time::Instant::now());
            }
            if let Some(t) = killed_at
                && t.elapsed() > KILL_GRACE
            {
                ctx.log.line("mlbox: the command ignored SIGTERM: SIGKILL");
                let _ = kill_group(pid, libc::SIGKILL);
                killed_at = None;
            }
        };
        // A task owns its processes: background children it left (`cmd &`) would outlive it,
        // hold our pipes open and escape timeouts and cancels. Stop the whole group now.
        if stopped.is_some() {
            let _ = kill_group(pid, libc::SIGKILL);
        } else if kill_group(pid, libc::SIGTERM) {
            ctx.log.line("mlbox: the command left background processes; they were stopped");
            let until = std::time::Instant::now() + KILL_GRACE;
            while [&out, &err].iter().any(|h| h.as_ref().is_some_and(|h| !h.is_finished()))
                && std::time::Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = kill_group(pid, libc::SIGKILL);
        }
        for h in [out, err].into_iter().flatten() {
            let _ = h.join();
        }
        match stopped {
            Some(StopReason::TimedOut) => {
                return Err("timed out: the command's process group was killed".into());
            }
            Some(StopReason::Cancelled) => {
                return Err("cancelled: the command's process group was killed".into());
            }
            Some(StopReason::Shutdown) => return Err("interrupted by server shutdown".into()),
            None => {}
        }
        if !status.success() {
            return Err(match status.code() {
                Some(code) => format!("the command exited with status {code}"),
                None => "the command was killed by a signal".to_string(),
            });
        }
        let outputs = match std::fs::read(&ctx.outputs_file) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Value::Object(Default::default()),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return Err("$MLBOX_OUTPUTS must hold a JSON object like {\"rows\": 10}".into());
                }
                Err(e) => return Err(format!("$MLBOX_OUTPUTS is not valid JSON: {e}")),
            },
            Err(_) => Value::Object(Default::default()),
        };
        Ok(Outcome::Done(outputs))
    }
}
