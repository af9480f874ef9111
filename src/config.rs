//! Settings: defaults < `mlbox.toml` < `MLBOX_*` environment < command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Values from the command line or environment (clap fills both); `None` = not given.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub addr: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub pipelines: Option<PathBuf>,
    pub slots: Option<usize>,
    pub grace: Option<String>,
    /// `--no-auth`.
    pub no_auth: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// `mlbox.toml`. Unknown keys are an error so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    addr: Option<String>,
    data_dir: Option<PathBuf>,
    pipelines: Option<PathBuf>,
    slots: Option<usize>,
    grace: Option<String>,
    body_limit: Option<usize>,
    prediction_log_rate: Option<u32>,
    prediction_log_keep: Option<u32>,
    auth: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    request_timeout: Option<String>,
    max_concurrent_requests: Option<usize>,
    #[serde(default)]
    retention: Retention,
}

/// How many runs to keep per pipeline; `mlbox gc` (and the server, hourly) deletes older
/// finished runs with their logs and unreferenced artifacts. Unset: keep everything.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep at least the newest N runs of each pipeline.
    pub keep_runs: Option<u32>,
    /// Keep runs younger than D days.
    pub keep_days: Option<u32>,
}

/// TLS certificate chain and private key, both PEM files.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub pipelines: Option<PathBuf>,
    /// Executor slots: how many task threads run at once.
    pub slots: usize,
    /// How long running tasks get to finish on shutdown.
    pub grace: Duration,
    /// Largest request body the API accepts, in bytes.
    pub body_limit: usize,
    /// Served predictions logged per second per model version (0: none).
    pub prediction_log_rate: u32,
    /// Logged predictions kept per model version; older ones are pruned.
    pub prediction_log_keep: u32,
    /// Users, roles and tokens are required (off only with `--no-auth` on loopback).
    pub auth: bool,
    pub tls: Option<Tls>,
    /// A request that takes longer is answered 408 (streams and log follows are exempt).
    pub request_timeout: Duration,
    /// Requests handled at once; more wait their turn.
    pub max_concurrent_requests: usize,
    pub retention: Retention,
}

pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

impl Config {
    pub fn resolve(o: &Overrides) -> anyhow::Result<Config> {
        let file_path =
            o.config.clone().or_else(|| Path::new("mlbox.toml").exists().then(|| PathBuf::from("mlbox.toml")));
        let file: FileConfig = match &file_path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let addr_text = o.addr.clone().or(file.addr).unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let addr: SocketAddr = addr_text
            .parse()
            .map_err(|_| anyhow::anyhow!("--addr {addr_text:?} is not an address like 127.0.0.1:8080"))?;
        let grace_text = o.grace.clone().or(file.grace).unwrap_or_else(|| "30s".into());
        let grace = crate::pipeline::spec::parse_duration(&grace_text)
            .ok_or_else(|| anyhow::anyhow!("--grace {grace_text:?} is not a duration like 30s"))?;
        let pipelines = o.pipelines.clone().or(file.pipelines).or_else(|| {
            let d = PathBuf::from("pipelines");
            d.is_dir().then_some(d)
        });
        let slots = o
            .slots
            .or(file.slots)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
        if slots == 0 {
            anyhow::bail!("--slots must be at least 1");
        }
        let auth = !o.no_auth && file.auth.unwrap_or(true);
        let ip = addr.ip();
        if !auth && !ip.is_loopback() {
            anyhow::bail!(
                "authentication can be turned off only on a loopback address (127.0.0.1 or ::1); {addr} is reachable \
                 from other machines: drop --no-auth (or `auth = false`) or listen on 127.0.0.1"
            );
        }
        let tls = match (o.tls_cert.clone().or(file.tls_cert), o.tls_key.clone().or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(Tls { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key (PEM files)"),
        };
        let timeout_text = file.request_timeout.unwrap_or_else(|| "300s".into());
        let request_timeout = crate::pipeline::spec::parse_duration(&timeout_text)
            .ok_or_else(|| anyhow::anyhow!("request_timeout {timeout_text:?} is not a duration like 60s"))?;
        let max_concurrent_requests = file.max_concurrent_requests.unwrap_or(512);
        if max_concurrent_requests == 0 {
            anyhow::bail!("max_concurrent_requests must be at least 1");
        }
        Ok(Config {
            addr,
            data_dir: o.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("mlbox-data")),
            pipelines,
            slots,
            grace,
            body_limit: file.body_limit.unwrap_or(2 * 1024 * 1024),
            prediction_log_rate: file.prediction_log_rate.unwrap_or(10),
            prediction_log_keep: file.prediction_log_keep.unwrap_or(10_000),
            auth,
            tls,
            request_timeout,
            max_concurrent_requests,
            retention: file.retention,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mlbox.toml");
        std::fs::write(&file, "addr = \"127.0.0.1:9999\"\ndata_dir = \"/tmp/from-file\"\ngrace = \"5s\"\n").unwrap();
        let o = Overrides { config: Some(file.clone()), data_dir: Some("/tmp/from-flag".into()), ..Default::default() };
        let c = Config::resolve(&o).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:9999", "the file's value when no flag is given");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/from-flag"), "a flag (or MLBOX_* env, via clap) wins");
        assert_eq!(c.grace, Duration::from_secs(5));
        let c = Config::resolve(&Overrides { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/from-file"));
        assert_eq!(c.body_limit, 2 * 1024 * 1024, "defaults fill the rest");
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mlbox.toml");
        std::fs::write(&file, "adr = \"x\"\n").unwrap();
        let e = Config::resolve(&Overrides { config: Some(file), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("unknown field `adr`"), "{e}");
        let e = Config::resolve(&Overrides { addr: Some("localhost".into()), ..Default::default() })
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an address"), "{e}");
        let e =
            Config::resolve(&Overrides { grace: Some("soon".into()), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("not a duration"), "{e}");
    }
}
