//! Continuous inference: `POST /api/v1/streams/{model}` reads NDJSON records from a streamed
//! request body and writes one NDJSON line back per record as it goes. Every record gets a
//! line: a prediction, an error, or an explicit skip when no version is ready. Each record is
//! answered by the version serving at that moment, so a promotion takes effect mid-stream.
//! `GET /api/v1/events` publishes promotions, swaps and run state changes (Server-Sent Events).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use super::models::{Which, run_batch, which};
use crate::error::Error;
use crate::registry::{self, ModelUri};
use crate::serving::{log, signature};

/// Answer one line.
async fn answer(app: &AppState, uri: &ModelUri, line_no: usize, line: &[u8]) -> Value {
    let started = Instant::now();
    let rec: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return json!({"line": line_no, "error": format!("not a JSON record: {e}")}),
    };
    // Only what is in memory: a stream never waits on loading.
    let Some(r) = app.serving.cached(&uri.name, &uri.selector) else {
        return json!({"line": line_no, "skipped": true,
                      "reason": format!("no version of `{}` is ready to serve as {uri}", uri.name)});
    };
    let out = match signature::decode_records(&r.signature, std::slice::from_ref(&rec), line_no) {
        Ok(b) => run_batch(&r, b).await,
        Err(e) => Err(Error::bad_request(e)),
    };
    let reply = match &out {
        Ok(o) => json!({"line": line_no, "version": r.version,
                        "prediction": signature::encode_records(o, 1).pop().unwrap_or(Value::Null)}),
        Err(e) => json!({"line": line_no, "version": r.version, "error": e.message}),
    };
    let entry = log::Entry {
        model: &r.model,
        version: r.version,
        endpoint: "stream",
        status: if out.is_ok() { 200 } else { 400 },
        latency_us: started.elapsed().as_micros() as u64,
    };
    app.serving.log().record(&r.stats, entry, 1, || (rec.clone(), reply.clone()));
    reply
}

fn line_bytes(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

pub async fn stream(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(w): Query<Which>,
    body: Body,
) -> Result<Response, Error> {
    let uri = which(&name, &w)?;
    let n = name.clone();
    let a = app.clone();
    // An unknown model is a 404 up front; a known one without a ready version streams skips.
    super::blocking(move || a.store.read(|c| registry::get(c, &n))).await?;
    // A version asked for by number is loaded (or refused: unknown, archived) before streaming.
    if matches!(uri.selector, registry::Selector::Version(_)) {
        super::models::ready(&app, uri.clone()).await?;
    }
    let max_line = app.config.body_limit;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        let mut input = body.into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut line_no = 0usize;
        loop {
            let chunk = tokio::select! {
                c = input.next() => c,
                _ = app.stopping.cancelled() => {
                    let _ = tx.send(Ok(line_bytes(&json!({"error": "the server is shutting down"})))).await;
                    return;
                }
            };
            let end = match chunk {
                Some(Ok(b)) => {
                    buf.extend_from_slice(&b);
                    false
                }
                Some(Err(e)) => {
                    let _ = tx.send(Ok(line_bytes(&json!({"error": format!("reading the stream failed: {e}")})))).await;
                    return;
                }
                None => true,
            };
            let mut start = 0;
            while let Some(pos) = buf[start..].iter().position(|c| *c == b'\n') {
                let line = &buf[start..start + pos];
                start += pos + 1;
                line_no += 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let reply = answer(&app, &uri, line_no, line).await;
                if tx.send(Ok(line_bytes(&reply))).await.is_err() {
                    return;
                }
            }
            buf.drain(..start);
            if end {
                if !buf.iter().all(u8::is_ascii_whitespace) {
                    let reply = answer(&app, &uri, line_no + 1, &buf).await;
                    let _ = tx.send(Ok(line_bytes(&reply))).await;
                }
                return;
            }
            if buf.len() > max_line {
                let e = json!({"line": line_no + 1, "error": format!("a record is longer than {max_line} bytes; stream closed")});
                let _ = tx.send(Ok(line_bytes(&e))).await;
                return;
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(ReceiverStream::new(rx))).into_response())
}

/// `GET /api/v1/events`: `promotion`, `swap`, `registered`, `load`, `unload` (serving) and
/// `run` (run state changes) events, as they happen.
pub async fn events(State(app): State<AppState>) -> impl IntoResponse {
    let mut runs = app.engine.subscribe();
    let mut models = app.serving.subscribe();
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(256);
    tokio::spawn(async move {
        let hello = SseEvent::default().event("hello").data(json!({"server": "mlbox"}).to_string());
        if tx.send(Ok(hello)).await.is_err() {
            return;
        }
        loop {
            let ev = tokio::select! {
                r = runs.recv() => match r {
                    Ok(e) if e.kind == "run" => Some(("run".to_string(), json!(e))),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                m = models.recv() => match m {
                    Ok(v) => Some((v["kind"].as_str().unwrap_or("model").to_string(), v)),
                    Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = app.stopping.cancelled() => return,
            };
            if let Some((kind, data)) = ev
                && tx.send(Ok(SseEvent::default().event(kind).data(data.to_string()))).await.is_err()
            {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
