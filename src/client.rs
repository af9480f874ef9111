//! The CLI's HTTP client for the mlbox API (a running server, or one the CLI started in-process).

use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::Value;

pub struct Client {
    base: String,
    agent: ureq::Agent,
}

/// One Server-Sent Event.
pub struct SseMessage {
    pub event: String,
    pub data: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Client { base: base.trim_end_matches('/').to_string(), agent }
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
        Err(anyhow!("{message}")).with_context(|| format!("{what} failed ({status})"))
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self.agent.get(&url).call().with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        self.check(&format!("GET {path}"), resp)
    }

    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut resp = self.agent.get(&url).call().with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp.body_mut().read_to_string()?);
        }
        self.check(&format!("GET {path}"), resp).map(|v| v.to_string())
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp =
            self.agent.post(&url).send_json(body).with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        self.check(&format!("POST {path}"), resp)
    }

    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp =
            self.agent.put(&url).send_json(body).with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        self.check(&format!("PUT {path}"), resp)
    }

    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut resp = self.agent.get(&url).call().with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp.body_mut().with_config().limit(1 << 30).read_to_vec()?);
        }
        Err(self.check(&format!("GET {path}"), resp).err().unwrap_or_else(|| anyhow!("GET {path} failed")))
    }

    pub fn post_text(&self, path: &str, body: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .agent
            .post(&url)
            .header("content-type", "application/yaml")
            .send(body)
            .with_context(|| format!("cannot reach mlbox at {}", self.base))?;
        self.check(&format!("POST {path}"), resp)
    }

    /// Read an SSE stream, calling `f` per message until it returns false or the stream ends.
    pub fn sse(&self, path: &str, mut f: impl FnMut(SseMessage) -> bool) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        let resp = self.agent.get(&url).call().with_context(|| format!("cannot reach mlbox at {}", self.base))?;
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
