//! Test helpers: the real `mlbox` binary serving on 127.0.0.1 port 0 over a temp data dir, an
//! in-process `App` for engine-level tests, and a small JSON client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlbox::app::App;
use mlbox::config::{Config, Overrides};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mlbox");

pub struct TestServer {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
}

/// Wait until `f` returns Some, or panic with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl TestServer {
    /// A server with authentication off (loopback only), as on a laptop.
    pub fn start(data_dir: &Path) -> TestServer {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra: &[&str]) -> TestServer {
        let mut args = vec!["--no-auth"];
        args.extend_from_slice(extra);
        Self::spawn(data_dir, &args, &[])
    }

    /// A server with authentication on (the default), its first admin's password given.
    pub fn start_auth(data_dir: &Path, admin_password: &str) -> TestServer {
        Self::spawn(data_dir, &[], &[("MLBOX_ADMIN_PASSWORD", admin_password)])
    }

    /// `mlbox serve` with its stderr in `server.log` beside the data dir's files.
    pub fn spawn(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> TestServer {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .expect("server log");
        let child = Command::new(BIN)
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            // Its own cwd, so the repo's ./pipelines and ./mlbox.toml are not picked up.
            .current_dir(data_dir)
            .env("MLBOX_LOG", "warn")
            .env_remove("MLBOX_ADMIN_PASSWORD")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mlbox serve");
        let lock = data_dir.join("mlbox.lock");
        let pid = child.id();
        let base = wait_for(30, "the server to publish its address", || {
            let text = std::fs::read_to_string(&lock).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            let addr = v["addr"].as_str()?;
            let scheme = if v["tls"] == true { "https" } else { "http" };
            (v["kind"] == "serve" && v["pid"] == pid).then(|| format!("{scheme}://{addr}"))
        });
        let s = TestServer { child, base, data_dir: data_dir.to_path_buf() };
        wait_for(30, "readyz", || (s.get("/readyz").0 == 200).then_some(()));
        s
    }

    /// The data dir's local token: admin rights for mlbox commands on this machine.
    pub fn local_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("local.token")).expect("local.token")
    }

    /// Any request with an optional bearer token and extra headers; answers status, headers, body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (u16, Vec<(String, String)>, String) {
        let agent = self.agent_with(0);
        let mut req = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = match body {
            Some(b) => agent.run(req.body(b.to_vec()).unwrap()),
            None => agent.run(req.body(()).unwrap()),
        }
        .expect("request");
        let status = resp.status().as_u16();
        let hs = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, hs, text)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        self.child.wait().expect("wait for the server")
    }

    /// A client for this server (over HTTPS it does not check the test's self-signed certificate;
    /// the TLS test checks it with its own client).
    fn agent(&self) -> ureq::Agent {
        self.agent_with(10)
    }

    fn agent_with(&self, max_redirects: u32) -> ureq::Agent {
        let b = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(max_redirects);
        let b = if self.base.starts_with("https") {
            b.tls_config(ureq::tls::TlsConfig::builder().disable_verification(true).build())
        } else {
            b
        };
        b.build().into()
    }

    fn finish(mut r: ureq::http::Response<ureq::Body>) -> (u16, Value) {
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        Self::finish(self.agent().get(&format!("{}{path}", self.base)).call().expect("GET"))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        Self::finish(self.agent().post(&format!("{}{path}", self.base)).send_json(body).expect("POST"))
    }

    pub fn post_raw(&self, path: &str, body: impl AsRef<[u8]>) -> (u16, Value) {
        Self::finish(self.agent().post(&format!("{}{path}", self.base)).send(body.as_ref()).expect("POST"))
    }

    /// Sends only the head of a POST that declares `len` body bytes, and reads the answer.
    pub fn post_headers_only(&self, path: &str, len: usize) -> (u16, Value) {
        self.post_head_with(path, len, None)
    }

    /// `post_headers_only` with a bearer token.
    pub fn post_head_with(&self, path: &str, len: usize, token: Option<&str>) -> (u16, Value) {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://");
        let mut sock = std::net::TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(
            sock,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {len}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = sock.read_to_string(&mut text);
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(Value::String(text.clone())))
    }

    pub fn apply(&self, yaml: &str) {
        let (s, v) = self.post_raw("/api/v1/pipelines", yaml);
        assert!(s == 201 || s == 200, "apply failed: {s} {v}");
    }

    pub fn trigger(&self, name: &str, params: Value) -> i64 {
        let (s, v) =
            self.post_json(&format!("/api/v1/pipelines/{name}/trigger"), &serde_json::json!({"params": params}));
        assert_eq!(s, 201, "trigger {name}: {v}");
        v["run_id"].as_i64().expect("run id")
    }

    /// Poll the run until it reaches a final state; returns the run detail.
    pub fn wait_run(&self, id: i64, secs: u64) -> Value {
        wait_for(secs, &format!("run {id} to finish"), || {
            let (_, v) = self.get(&format!("/api/v1/runs/{id}"));
            matches!(v["run"]["state"].as_str(), Some("success" | "failed" | "cancelled")).then_some(v)
        })
    }
}

impl TestServer {
    /// `wait_run` with a bearer token, for servers with authentication on.
    pub fn wait_run_with(&self, id: i64, token: &str) -> Value {
        wait_for(60, &format!("run {id} to finish"), || {
            let (_, _, text) = self.call("GET", &format!("/api/v1/runs/{id}"), Some(token), &[], None);
            let v: Value = serde_json::from_str(&text).ok()?;
            matches!(v["run"]["state"].as_str(), Some("success" | "failed" | "cancelled")).then_some(v)
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The state of task `id` (map index -1) in a run detail.
pub fn task<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["task_id"] == id && t["map_index"] == -1))
        .unwrap_or_else(|| panic!("no task {id} in {run}"))
}

/// An in-process app on a temp data dir (engine-level tests).
pub fn open_app(data_dir: &Path, cron: bool, slots: usize) -> Arc<App> {
    let o = Overrides { data_dir: Some(data_dir.to_path_buf()), slots: Some(slots), ..Default::default() };
    let config = Config::resolve(&o).expect("config");
    let lock = match mlbox::app::acquire(data_dir).expect("lock") {
        mlbox::lock::Acquire::Owned(l) => l,
        mlbox::lock::Acquire::HeldBy(_) => panic!("data dir already locked"),
    };
    Arc::new(App::open(config, lock, cron).expect("open app"))
}

/// Wait for a run of an in-process app to finish; returns its state.
pub fn wait_app_run(app: &App, id: i64, secs: u64) -> String {
    wait_for(secs, &format!("run {id}"), || {
        let r = app.run(id).ok()?;
        matches!(r.state.as_str(), "success" | "failed" | "cancelled").then_some(r.state)
    })
}

/// Absolute path of a file under `sample-data/`.
pub fn sample(path: &str) -> String {
    format!("{}/sample-data/{path}", env!("CARGO_MANIFEST_DIR"))
}
