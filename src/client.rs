//! The CLI's HTTP client for the mlbox API (a running server, or one the CLI started in-process).

use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::Value;

pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// Sent as `Authorization: Bearer` on every request.
    token: Option<String>,
}

/// One Server-Sent Event.
pub struct SseMessage {
    pub event: String,
    pub data: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Self::with_tls(base, ureq::tls::TlsConfig::default())
    }

    fn with_tls(base: &str, tls: ureq::tls::TlsConfig) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .tls_config(tls)
            .build()
            .into();
        Client { base: base.trim_end_matches('/').to_string(), agent, token: None }
    }

    /// The HTTPS server on this machine that published its loopback address in the data dir
    /// lock: its certificate names the host the team uses, not 127.0.0.1, so it is not checked.
    pub fn loopback_tls(base: &str) -> Client {
        Self::with_tls(base, ureq::tls::TlsConfig::builder().disable_verification(true).build())
    }

    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token.filter(|t| !t.trim().is_empty()).map(|t| t.trim().to_string());
        self
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    fn check(&self, what: &str, mut resp: ureq::http::Response<ureq::Body>) -> anyhow::Result<Value> {
        let status = resp.status();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(body);
        }
        let message = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        let hint = if status == 401 { " (give an API token with --token or MLBOX_TOKEN)" } else { "" };
        Err(anyhow!("{message}")).with_context(|| format!("{what} failed ({status}){hint}"))
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp =
            self.auth(self.agent.get(&url)).call().with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        self.check(&format!("GET {path}"), resp)
    }

    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut resp =
            self.auth(self.agent.get(&url)).call().with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp.body_mut().read_to_string()?);
        }
        self.check(&format!("GET {path}"), resp).map(|v| v.to_string())
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .auth(self.agent.post(&url))
            .send_json(body)
            .with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        self.check(&format!("POST {path}"), resp)
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .auth(self.agent.delete(&url))
            .call()
            .with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        self.check(&format!("DELETE {path}"), resp)
    }

    /// POST with no body, saving the answer's body to `out`; returns its size.
    pub fn post_to_file(&self, path: &str, out: &std::path::Path) -> anyhow::Result<u64> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .auth(self.agent.post(&url))
            .send_empty()
            .with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(self
                .check(&format!("POST {path}"), resp)
                .err()
                .unwrap_or_else(|| anyhow!("POST {path} failed")));
        }
        // A backup holds password hashes: readable by its owner only.
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(out).with_context(|| format!("cannot write {}", out.display()))?;
        let n = std::io::copy(&mut resp.into_body().into_reader(), &mut file)?;
        file.sync_all()?;
        Ok(n)
    }

    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .auth(self.agent.put(&url))
            .send_json(body)
            .with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        self.check(&format!("PUT {path}"), resp)
    }

    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut resp =
            self.auth(self.agent.get(&url)).call().with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp.body_mut().with_config().limit(1 << 30).read_to_vec()?);
        }
        Err(self.check(&format!("GET {path}"), resp).err().unwrap_or_else(|| anyhow!("GET {path} failed")))
    }

    pub fn post_text(&self, path: &str, body: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .auth(self.agent.post(&url))
            .header("content-type", "application/yaml")
            .send(body)
            .with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        self.check(&format!("POST {path}"), resp)
    }

    /// Read an SSE stream, calling `f` per message until it returns false or the stream ends.
    pub fn sse(&self, path: &str, mut f: impl FnMut(SseMessage) -> bool) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        let resp =
            self.auth(self.agent.get(&url)).call().with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        if !resp.status().is_success() {
            return self.check(&format!("GET {path}"), resp).map(|_| ());
        }
        let reader = BufReader::new(resp.into_body().into_reader());
        let (mut event, mut data) = (String::new(), Vec::<String>::new());
        for line in reader.lines() {
            let line = line?;
            if line.is_empty() {
                if !data.is_empty() || !event.is_empty() {
                    let msg = SseMessage { event: std::mem::take(&mut event), data: data.join("\n") };
                    data.clear();
                    if !f(msg) {
                        return Ok(());
                    }
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        Ok(())
    }
}
