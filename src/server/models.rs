//! `/api/v1/models`: the registry (models, versions, aliases and their history) and the friendly
//! prediction endpoint (`POST /api/v1/models/{name}/predict` with records).

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, blocking, json_body};
use crate::error::Error;
use crate::registry::{self, ModelUri, Selector};
use crate::serving::{Ready, Registration, log, signature};
use crate::store::now_us;

pub async fn list(State(app): State<AppState>) -> Result<Json<Value>, Error> {
    let models = blocking(move || app.store.read(registry::list)).await?;
    Ok(Json(json!({"models": models})))
}

pub async fn get(State(app): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, Error> {
    blocking(move || {
        let (m, versions) = app.store.read(|c| Ok((registry::get(c, &name)?, registry::versions(c, &name)?)))?;
        let serving: Vec<Value> = app.serving.stats().into_iter().filter(|s| s["model"] == name.as_str()).collect();
        Ok(Json(json!({"model": m, "versions": versions, "serving": serving})))
    })
    .await
}

fn version_number(v: &str) -> Result<i64, Error> {
    v.parse()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::bad_request(format!("version `{v}` must be a number like 3")))
}

pub async fn version(
    State(app): State<AppState>,
    Path((name, v)): Path<(String, String)>,
) -> Result<Json<Value>, Error> {
    let v = version_number(&v)?;
    let ver = blocking(move || app.store.read(|c| registry::version(c, &name, v))).await?;
    Ok(Json(json!(ver)))
}

/// The model file itself (what `mlbox predict` downloads to predict locally).
pub async fn artifact(
    State(app): State<AppState>,
    Path((name, v)): Path<(String, String)>,
) -> Result<impl IntoResponse, Error> {
    let v = version_number(&v)?;
    let a = app.clone();
    let ver = blocking(move || a.store.read(|c| registry::version(c, &name, v))).await?;
    let path = crate::artifacts::path_of(&app.config.data_dir, &ver.sha256);
    let bytes = tokio::fs::read(&path).await.map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    /// A tracked training experiment: its model file and lineage.
    #[serde(default)]
    experiment: Option<i64>,
    /// Or a model file already in the content store.
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Value,
    #[serde(default)]
    actor: Option<String>,
}

/// `POST /api/v1/models/{name}/versions`: register a trained model from its experiment.
pub async fn register(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, Error> {
    let mut b: RegisterBody = json_body(&body)?;
    let created_by = super::auth::actor_or(b.actor.take(), "api");
    let v = blocking(move || {
        let sha = match (b.experiment, b.sha256) {
            (Some(id), None) => app
                .store
                .read(|c| crate::store::experiments::get(c, id))?
                .ok_or_else(|| Error::not_found(format!("no experiment {id}")))?
                .artifact
                .ok_or_else(|| {
                    Error::conflict(format!("experiment {id} has no model file (did its training finish?)"))
                })?,
            (None, Some(sha)) => sha,
            _ => return Err(Error::bad_request("give exactly one of `experiment` (an id) or `sha256` (a model file)")),
        };
        app.serving.register(Registration {
            name,
            sha256: sha,
            experiment: b.experiment,
            description: b.description,
            tags: if b.tags.is_null() { json!({}) } else { b.tags },
            map_index: -1,
            created_by,
            ..Default::default()
        })
    })
    .await?;
    Ok((axum::http::StatusCode::CREATED, Json(json!(v))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveBody {
    #[serde(default)]
    archived: Option<bool>,
}

/// `POST /api/v1/models/{name}/versions/{v}/archive` (`{"archived": false}` brings it back).
pub async fn archive(
    State(app): State<AppState>,
    Path((name, v)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let v = version_number(&v)?;
    let b: ArchiveBody = json_body(&body)?;
    let archived = b.archived.unwrap_or(true);
    let ver = blocking(move || {
        let ver = app.store.write(move |tx| registry::set_archived(tx, &name, v, archived, now_us()))?;
        if archived {
            app.serving.forget_version(&ver.model, v);
        }
        app.search.update(crate::search::Item::Model(ver.model.clone()));
        Ok(ver)
    })
    .await?;
    Ok(Json(json!(ver)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasBody {
    version: i64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    actor: Option<String>,
    /// Refuse unless the version's evaluation blessed it.
    #[serde(default)]
    require_blessed: bool,
}

/// `PUT /api/v1/models/{name}/aliases/{alias}`: promote (move the alias; serving swaps).
pub async fn set_alias(
    State(app): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let mut b: AliasBody = json_body(&body)?;
    let actor = super::auth::actor_or(b.actor.take(), "api");
    blocking(move || {
        if b.require_blessed {
            let v = app.store.read(|c| registry::version(c, &name, b.version))?;
            if let Some(why) = v.not_blessed() {
                return Err(Error::conflict(format!(
                    "version {} of `{name}` may not be promoted with require_blessed: {why}",
                    b.version
                )));
            }
        }
        Ok(Json(app.serving.promote(&name, &alias, b.version, &actor, &b.reason)?))
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RemoveBody {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    actor: Option<String>,
}

pub async fn delete_alias(
    State(app): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let b: RemoveBody = json_body(&body)?;
    let actor = super::auth::actor_or(b.actor, "api");
    blocking(move || Ok(Json(app.serving.remove_alias(&name, &alias, &actor, &b.reason)?))).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    alias: Option<String>,
    /// Which version the alias pointed at at this time (YYYY-MM-DD or RFC 3339).
    at: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/models/{name}/history`: alias moves, newest first; with `at`, the version the
/// alias (default production) pointed at then.
pub async fn history(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, Error> {
    if let Some(a) = &q.alias {
        registry::check_alias(a)?;
    }
    let at = match &q.at {
        Some(s) => Some(
            crate::pipeline::validate::parse_date(s)
                .map(|d| d.timestamp_micros())
                .ok_or_else(|| Error::bad_request("at must be YYYY-MM-DD or RFC 3339 (e.g. 2026-11-01T12:00:00Z)"))?,
        ),
        None => None,
    };
    blocking(move || {
        app.store.read(|c| match at {
            Some(t) => {
                let alias = q.alias.as_deref().unwrap_or(registry::PRODUCTION);
                let mv = registry::alias_at(c, &name, alias, t)?;
                Ok(Json(json!({"model": name, "alias": alias, "at": t,
                               "version": mv.as_ref().and_then(|m| m.to_version), "since": mv})))
            }
            None => {
                let h = registry::history(c, &name, q.alias.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000))?;
                Ok(Json(json!({"model": name, "history": h})))
            }
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionsQuery {
    version: Option<i64>,
    limit: Option<u32>,
}

/// `GET /api/v1/models/{name}/predictions`: the sampled prediction log, newest first.
pub async fn predictions(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PredictionsQuery>,
) -> Result<Json<Value>, Error> {
    blocking(move || {
        app.store.read(|c| {
            registry::get(c, &name)?;
            let rows = log::recent(c, &name, q.version, q.limit.unwrap_or(50).clamp(1, 1000))?;
            Ok(Json(json!({"model": name, "predictions": rows})))
        })
    })
    .await
}

/// `GET /api/v1/serving`: every loaded version with its counters and latency histogram.
pub async fn serving(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"loaded": app.serving.stats()}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Which {
    pub version: Option<i64>,
    pub alias: Option<String>,
}

/// Which version a request asks for: `?version=N`, `?alias=A`, else production.
pub fn which(name: &str, w: &Which) -> Result<ModelUri, Error> {
    registry::check_name(name).map_err(|_| Error::not_found(format!("no registered model `{name}`")))?;
    let selector = match (w.version, &w.alias) {
        (Some(_), Some(_)) => return Err(Error::bad_request("give version or alias, not both")),
        (Some(v), None) => Selector::Version(v),
        (None, Some(a)) => {
            registry::check_alias(a)?;
            Selector::Alias(a.clone())
        }
        (None, None) => Selector::Alias(registry::PRODUCTION.into()),
    };
    Ok(ModelUri { name: name.to_string(), selector })
}

/// The version to serve: from memory, or loaded off the async runtime.
pub async fn ready(app: &AppState, uri: ModelUri) -> Result<std::sync::Arc<Ready>, Error> {
    if let Some(r) = app.serving.cached(&uri.name, &uri.selector) {
        return Ok(r);
    }
    let a = app.clone();
    blocking(move || a.serving.resolve(&uri)).await
}

/// Requests up to this many records predict on the async worker; bigger ones move off it.
pub const INLINE_ROWS: usize = 64;

/// Decode, predict (inline for small batches), in the same way for both endpoints.
pub async fn run_batch(r: &std::sync::Arc<Ready>, batch: signature::Batch) -> Result<Vec<signature::Output>, Error> {
    let out = if batch.rows <= INLINE_ROWS {
        r.predict(&batch)
    } else {
        let r = r.clone();
        tokio::task::spawn_blocking(move || r.predict(&batch)).await.map_err(Error::internal)?
    };
    out.map_err(Error::bad_request)
}

/// `POST /api/v1/models/{name}/predict`: records in (`[{...}, ...]` or `{"records": [...]}`),
/// one prediction per record out.
pub async fn predict(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(w): Query<Which>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let started = Instant::now();
    let uri = which(&name, &w)?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))?;
    let records = match &body {
        Value::Array(a) => a.as_slice(),
        Value::Object(o) if o.contains_key("records") && o.len() == 1 => {
            o["records"].as_array().map(Vec::as_slice).ok_or_else(|| Error::bad_request("`records` must be a list"))?
        }
        _ => {
            return Err(Error::bad_request(
                "the body must be a list of records, [{\"field\": value, ...}], or {\"records\": [...]}",
            ));
        }
    };
    let r = ready(&app, uri).await?;
    let result = match signature::decode_records(&r.signature, records, 0) {
        Ok(batch) => run_batch(&r, batch).await,
        Err(e) => Err(Error::bad_request(e)),
    };
    let latency = started.elapsed().as_micros() as u64;
    let entry = log::Entry {
        model: &r.model,
        version: r.version,
        endpoint: "predict",
        status: result.as_ref().map(|_| 200).unwrap_or_else(|e| e.code.status().as_u16()),
        latency_us: latency,
    };
    let reply = result.map(|outs| {
        json!({"model": r.model, "version": r.version, "predictions": signature::encode_records(&outs, records.len())})
    });
    app.serving.log().record(&r.stats, entry, records.len(), || {
        (body.clone(), reply.as_ref().map(Value::clone).unwrap_or_else(|e| json!({"error": e.message})))
    });
    reply.map(Json)
}
