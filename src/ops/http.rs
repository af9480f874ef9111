//! `http`: one HTTP request; its status and body (JSON when it parses) become the outputs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, Op, Outcome, Param, TaskContext, opt, req};

pub struct Http;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    url: String,
    #[serde(default = "get")]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    timeout: Option<Value>,
    #[serde(default = "yes")]
    fail_on_error: bool,
}

fn get() -> String {
    "GET".into()
}
fn yes() -> bool {
    true
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

impl Op for Http {
    fn name(&self) -> &'static str {
        "http"
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("url", Kind::String, "http:// or https:// URL"),
            opt("method", Kind::String, "GET (default), POST, PUT, PATCH, DELETE or HEAD"),
            opt("headers", Kind::Map, "request headers"),
            opt("body", Kind::Any, "request body: a string is sent as is, anything else as JSON"),
            opt("timeout", Kind::Duration, "request timeout (default 30s, capped by the task timeout)"),
            opt("fail_on_error", Kind::Bool, "fail the task on a 4xx/5xx status (default true)"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        let mut e = Vec::new();
        if let Some(m) = with.get("method").and_then(Value::as_str)
            && !m.contains("${{")
            && !METHODS.contains(&m.to_ascii_uppercase().as_str())
        {
            e.push(format!("unknown method `{m}`; use {}", METHODS.join(", ")));
        }
        if let Some(u) = with.get("url").and_then(Value::as_str)
            && !u.starts_with("${{")
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            e.push(format!("url `{u}` must start with http:// or https://"));
        }
        e
    }

    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("http", with)?;
        let mut timeout = super::duration_param(p.timeout.as_ref(), Duration::from_secs(30))?;
        if let Some(rem) = ctx.stop.remaining() {
            timeout = timeout.min(rem);
        }
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into();
        let method = p.method.to_ascii_uppercase();
        ctx.log.line(&format!("{method} {}", p.url));
        let mut req = ureq::http::Request::builder().method(method.as_str()).uri(&p.url);
        for (k, v) in &p.headers {
            req = req.header(k, v);
        }
        let body = match &p.body {
            None => Vec::new(),
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(v) => {
                req = req.header("content-type", "application/json");
                serde_json::to_vec(v).map_err(|e| e.to_string())?
            }
        };
        let req = req.body(body).map_err(|e| format!("bad request: {e}"))?;
        let mut resp = agent.run(req).map_err(|e| format!("{method} {} failed: {e}", p.url))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| format!("reading the response of {} failed (the limit is 1 MiB): {e}", p.url))?;
        ctx.log.line(&format!("status {status}, {} bytes", text.len()));
        let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
        if p.fail_on_error && status >= 400 {
            return Err(format!(
                "{method} {} answered {status}: {}",
                p.url,
                body.to_string().chars().take(300).collect::<String>()
            ));
        }
        Ok(Outcome::Done(json!({"status": status, "body": body})))
    }
}
