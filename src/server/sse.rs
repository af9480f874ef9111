//! Server-Sent Events: a run's state changes, and a task log as it is written.

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::runs::{LogQuery, resolve_log};
use super::{AppState, blocking};
use crate::error::Error;
use crate::store::runs;

fn sse(rx: mpsc::Receiver<Result<SseEvent, Infallible>>) -> impl axum::response::IntoResponse {
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

fn terminal(state: &str) -> bool {
    matches!(state, "success" | "failed" | "cancelled")
}

/// `GET /api/v1/runs/{id}/events`: a `snapshot` event (the run and its tasks), then every state
/// change of the run as `state` events, then an `end` event when the run finishes.
pub async fn run_events(
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<impl axum::response::IntoResponse, Error> {
    let mut sub = app.engine.subscribe();
    let a = app.clone();
    let (run, tasks) = blocking(move || Ok((a.run(id)?, a.store.read(|c| runs::tasks(c, id))?))).await?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let snapshot = json!({"run": run, "tasks": tasks});
        if tx.send(Ok(SseEvent::default().event("snapshot").data(snapshot.to_string()))).await.is_err() {
            return;
        }
        if terminal(&run.state) {
            let _ = tx.send(Ok(SseEvent::default().event("end").data(json!({"state": run.state}).to_string()))).await;
            return;
        }
        loop {
            let next = tokio::select! {
                n = tokio::time::timeout(Duration::from_secs(2), sub.recv()) => n,
                _ = app.stopping.cancelled() => return,
            };
            match next {
                Ok(Ok(ev)) if ev.run_id == id => {
                    let end = ev.kind == "run" && terminal(ev.state);
                    let data = serde_json::to_string(&ev).unwrap_or_default();
                    if tx.send(Ok(SseEvent::default().event("state").data(data))).await.is_err() {
                        return;
                    }
                    if end {
                        let _ = tx
                            .send(Ok(SseEvent::default().event("end").data(json!({"state": ev.state}).to_string())))
                            .await;
                        return;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
                // Lagged, or quiet for a while: the store has the truth.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => {
                    let a = app.clone();
                    if let Ok(run) = blocking(move || a.run(id)).await
                        && terminal(&run.state)
                    {
                        let _ = tx
                            .send(Ok(SseEvent::default().event("end").data(json!({"state": run.state}).to_string())))
                            .await;
                        return;
                    }
                }
            }
        }
    });
    Ok(sse(rx))
}

fn read_from(path: &std::path::Path, offset: u64) -> (Vec<u8>, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), offset);
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return (Vec::new(), offset);
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let end = offset + buf.len() as u64;
    (buf, end)
}

/// `GET .../logs/follow`: `log` events carrying text as it is written, then `end`.
pub async fn follow_log(
    State(app): State<AppState>,
    Path((id, task)): Path<(i64, String)>,
    Query(q): Query<LogQuery>,
) -> Result<impl axum::response::IntoResponse, Error> {
    let mut sub = app.logs.subscribe();
    let a = app.clone();
    let (key, finished) = blocking(move || resolve_log(&a, id, &task, &q)).await?;
    let path = key.path(app.logs.dir());
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(256);
    tokio::spawn(async move {
        let send_text = |bytes: &[u8]| SseEvent::default().event("log").data(String::from_utf8_lossy(bytes));
        let (bytes, mut offset) = read_from(&path, 0);
        if !bytes.is_empty() && tx.send(Ok(send_text(&bytes))).await.is_err() {
            return;
        }
        let mut done = finished;
        while !done {
            let next = tokio::select! {
                n = tokio::time::timeout(Duration::from_secs(1), sub.recv()) => n,
                _ = app.stopping.cancelled() => break,
            };
            match next {
                Ok(Ok(chunk)) if chunk.key == key => {
                    if chunk.eof {
                        done = true;
                    } else if chunk.offset + chunk.bytes.len() as u64 > offset {
                        let skip = offset.saturating_sub(chunk.offset) as usize;
                        offset = chunk.offset + chunk.bytes.len() as u64;
                        if tx.send(Ok(send_text(&chunk.bytes[skip..]))).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => done = true,
                Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => {
                    let (a, t, qq) = (
                        app.clone(),
                        key.task_id.clone(),
                        LogQuery { map_index: Some(key.map_index), try_number: Some(key.try_number) },
                    );
                    if let Ok((_, fin)) = blocking(move || resolve_log(&a, id, &t, &qq)).await {
                        done = fin;
                    }
                    let (bytes, end) = read_from(&path, offset);
                    offset = end;
                    if !bytes.is_empty() && tx.send(Ok(send_text(&bytes))).await.is_err() {
                        return;
                    }
                }
            }
        }
        let (bytes, _) = read_from(&path, offset);
        if !bytes.is_empty() {
            let _ = tx.send(Ok(send_text(&bytes))).await;
        }
        let _ = tx.send(Ok(SseEvent::default().event("end").data("{}"))).await;
    });
    Ok(sse(rx))
}
