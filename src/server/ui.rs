//! The web UI's routes: pages rendered by `mlbox_ui` from the same queries the API uses, the
//! forms' POST targets (each redirects back, so the UI works without JavaScript), and the
//! embedded static files.

use std::collections::BTreeMap;

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mlbox_ui::{Frame, pages};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, blocking};
use crate::auth::{self, Via};
use crate::error::{Code, Error};
use crate::store::{self, experiments, pipelines, runs};

#[derive(rust_embed::Embed)]
#[folder = "assets/"]
struct Assets;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/pipelines", get(pipelines_page))
        .route("/pipelines/{name}", get(pipeline_page))
        .route("/runs", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/experiments", get(experiments_page))
        .route("/experiments/compare", get(compare_page))
        .route("/datasets", get(datasets_page))
        .route("/datasets/{name}", get(dataset_page))
        .route("/models", get(models_page))
        .route("/models/{name}", get(model_page))
        .route("/models/{name}/versions/{v}", get(model_version_page))
        .route("/search", get(search_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/admin/audit", get(audit_page))
        .route("/ui/pipelines/{name}/trigger", post(trigger))
        .route("/ui/pipelines/{name}/pause", post(pause))
        .route("/ui/pipelines/{name}/unpause", post(unpause))
        .route("/ui/runs/{id}/cancel", post(cancel))
        .route("/ui/runs/{id}/resume", post(resume))
        .route("/ui/models/{name}/promote", post(promote))
        .route("/ui/models/{name}/try", post(try_model))
        .route("/static/{*path}", get(asset))
        .layer(axum::middleware::from_fn(same_site_forms))
}

/// The UI's forms change state with plain POSTs; a browser says where a request came from, and
/// a post from another site (a page trying to trigger or promote on the user's behalf) is refused.
/// (Browser sessions also carry CSRF tokens: see `server/auth.rs`.)
async fn same_site_forms(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let read = req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD;
    if !read && super::auth::cross_site(req.headers()) {
        let e = Error::new(Code::Forbidden, "a form from another site cannot change mlbox; use mlbox's own pages");
        return Page(Err((e, frame("Refused", "")))).into_response();
    }
    next.run(req).await
}

/// The page frame, with the signed-in user from the request's principal.
fn frame(title: impl Into<String>, section: &'static str) -> Frame {
    let me = super::auth::current();
    let (user, csrf) = match me.via {
        Via::Session { csrf } => (me.name, csrf),
        Via::Token => (me.name, String::new()),
        _ => (String::new(), String::new()),
    };
    Frame {
        title: title.into(),
        section,
        query: String::new(),
        version: env!("CARGO_PKG_VERSION").into(),
        role: if user.is_empty() { String::new() } else { me.role.as_str().into() },
        user,
        csrf,
    }
}

/// An error as an HTML page (for refusals made before a page handler runs).
pub(super) fn problem_page(e: Error) -> Response {
    Page(Err((e, frame("Error", "")))).into_response()
}

/// A page, or the error as a page with the error's status.
struct Page(Result<String, (Error, Frame)>);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(html) => Html(html).into_response(),
            Err((e, f)) => {
                let status = e.code.status();
                let mut f = f;
                f.title = format!("{}", status.as_u16());
                (status, Html(pages::problem(f, status.as_u16(), &e.message))).into_response()
            }
        }
    }
}

/// Assemble a page's data off the async runtime, then render it.
async fn page(
    f: Frame,
    data: impl FnOnce() -> Result<Value, Error> + Send + 'static,
    render: fn(Frame, &Value) -> String,
) -> Page {
    let fr = f.clone();
    Page(match blocking(data).await {
        Ok(d) => Ok(render(fr, &d)),
        Err(e) => Err((e, f)),
    })
}

fn count(c: &rusqlite::Connection, sql: &str) -> Result<i64, Error> {
    Ok(c.query_row(sql, [], |r| r.get(0))?)
}

async fn home(State(app): State<AppState>) -> Page {
    page(frame("Overview", "Home"), move || {
        let day_ago = store::now_us() - 86_400_000_000;
        let (counts, failing, recent) = app.store.read(|c| {
            let counts = json!({
                "pipelines": count(c, "SELECT count(*) FROM pipelines")?,
                "runs": count(c, "SELECT count(*) FROM runs")?,
                "running": count(c, "SELECT count(*) FROM runs WHERE state IN ('queued', 'running')")?,
                "failed": c.query_row("SELECT count(*) FROM runs WHERE state = 'failed' AND created_at >= ?1", [day_ago], |r| r.get::<_, i64>(0))?,
                "models": count(c, "SELECT count(*) FROM models")?,
                "datasets": count(c, "SELECT count(DISTINCT name) FROM datasets")?,
            });
            let mut st = c.prepare(
                "SELECT p.name, r.id, r.created_at FROM pipelines p
                 JOIN runs r ON r.id = (SELECT max(id) FROM runs WHERE pipeline = p.name)
                 WHERE r.state = 'failed' ORDER BY r.id DESC",
            )?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut failing = Vec::new();
            for (name, id, at) in rows {
                let recent = recent_runs(c, &name, 20)?;
                failing.push(json!({"name": name, "last_run": {"id": id, "created_at": at}, "recent": recent}));
            }
            let recent = runs::list(c, &runs::RunFilter { limit: 15, ..Default::default() })?;
            Ok((counts, failing, recent))
        })?;
        let production = app.store.read(|c| {
            let mut out = Vec::new();
            for (model, alias, version) in crate::registry::all_aliases(c)? {
                let v = crate::registry::version(c, &model, version)?;
                let summary: Vec<String> = v.metrics.as_object().into_iter().flatten()
                    .filter(|(k, _)| k.starts_with("eval_") && !k.contains('.'))
                    .take(3)
                    .filter_map(|(k, v)| v.as_f64().map(|f| format!("{} {f:.4}", k.trim_start_matches("eval_"))))
                    .collect();
                out.push(json!({"model": model, "alias": alias, "version": version, "summary": summary.join(" · ")}));
            }
            Ok(out)
        })?;
        Ok(json!({"counts": counts, "failing": failing, "recent_runs": recent, "production": production}))
    }, pages::home)
    .await
}

fn recent_runs(c: &rusqlite::Connection, pipeline: &str, n: u32) -> Result<Vec<Value>, Error> {
    let rows =
        runs::list(c, &runs::RunFilter { pipeline: Some(pipeline.to_string()), limit: n, ..Default::default() })?;
    Ok(rows.iter().map(|r| json!({"id": r.id, "state": r.state, "created_at": r.created_at})).collect())
}

/// The params a pipeline declares, for its trigger form.
fn params_of(app: &crate::app::App, p: &pipelines::PipelineRow) -> Vec<Value> {
    app.validate(&p.name, &p.yaml)
        .map(|plan| {
            plan.spec
                .params
                .iter()
                .map(|(k, d)| {
                    let default = match &d.default {
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => String::new(),
                    };
                    json!({"name": k, "type": d.ty.name(), "default": default})
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn pipelines_page(State(app): State<AppState>) -> Page {
    page(
        frame("Pipelines", "Pipelines"),
        move || {
            let rows = app.store.read(pipelines::list)?;
            let mut out = Vec::new();
            for p in rows {
                let recent = app.store.read(|c| recent_runs(c, &p.name, 25))?;
                let params = params_of(&app, &p);
                let mut v = json!(p);
                v["recent"] = json!(recent);
                v["params"] = json!(params);
                out.push(v);
            }
            Ok(json!({"pipelines": out}))
        },
        pages::pipelines,
    )
    .await
}

#[derive(Deserialize, Default)]
struct PipelineQuery {
    run: Option<i64>,
}

async fn pipeline_page(State(app): State<AppState>, Path(name): Path<String>, Query(q): Query<PipelineQuery>) -> Page {
    let a = app.clone();
    let n = name.clone();
    let mut d = match super::pipelines::get(State(a), Path(n)).await {
        Ok(axum::Json(d)) => d,
        Err(e) => return Page(Err((e, frame(name, "Pipelines")))),
    };
    let run = q.run.or_else(|| d["recent_runs"][0]["id"].as_i64());
    if let Some(id) = run
        && let Ok(axum::Json(r)) = super::runs::get(State(app.clone()), Path(id)).await
    {
        d["selected"] = r;
    }
    let p = app.pipeline(&name).ok();
    d["params"] = json!(p.map(|p| params_of(&app, &p)).unwrap_or_default());
    Page(Ok(pages::pipeline(frame(name, "Pipelines"), &d)))
}

#[derive(Deserialize, Default)]
struct RunsQuery {
    pipeline: Option<String>,
    state: Option<String>,
    cursor: Option<i64>,
}

async fn runs_page(State(app): State<AppState>, Query(q): Query<RunsQuery>) -> Page {
    page(
        frame("Runs", "Runs"),
        move || {
            let pipeline = q.pipeline.filter(|s| !s.is_empty());
            let state = q.state.filter(|s| !s.is_empty());
            let filter = runs::RunFilter {
                pipeline: pipeline.clone(),
                state: state.clone(),
                before: q.cursor,
                limit: 50,
                ..Default::default()
            };
            let rows = app.store.read(|c| runs::list(c, &filter))?;
            let next = (rows.len() == 50).then(|| rows.last().map(|r| r.id)).flatten();
            Ok(json!({"runs": rows, "next_cursor": next, "filter": {"pipeline": pipeline, "state": state}}))
        },
        pages::runs,
    )
    .await
}

#[derive(Deserialize, Default)]
struct RunQuery {
    task: Option<String>,
    map_index: Option<i64>,
    #[serde(rename = "try")]
    try_number: Option<u32>,
}

/// The most of one log the page shows (the live stream and the API give all of it).
const LOG_PAGE_BYTES: usize = 512 * 1024;

/// The last `max` bytes of a file, and how many bytes came before them.
fn tail(path: &std::path::Path, max: usize) -> (Vec<u8>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return (Vec::new(), 0) };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let cut = len.saturating_sub(max as u64);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(cut)).is_ok() {
        let _ = f.take(max as u64).read_to_end(&mut buf);
    }
    (buf, cut)
}

async fn run_page(State(app): State<AppState>, Path(id): Path<i64>, Query(q): Query<RunQuery>) -> Page {
    let f = frame(format!("Run #{id}"), "Runs");
    let mut d = match super::runs::get(State(app.clone()), Path(id)).await {
        Ok(axum::Json(d)) => d,
        Err(e) => return Page(Err((e, f))),
    };
    let r = blocking(move || {
        let run = app.run(id)?;
        let tasks: Vec<Value> = crate::pipeline::spec::parse(&run.yaml)
            .0
            .map(|p| {
                p.tasks
                    .iter()
                    .map(|t| json!({"id": t.id, "op": t.op, "depends_on": t.depends_on.iter().map(|d| &d.0).collect::<Vec<_>>()}))
                    .collect()
            })
            .unwrap_or_default();
        let log = match q.task {
            Some(task) => {
                let lq = super::runs::LogQuery { map_index: q.map_index, try_number: q.try_number };
                let (key, finished) = super::runs::resolve_log(&app, id, &task, &lq)?;
                let (bytes, cut) = tail(&key.path(app.logs.dir()), LOG_PAGE_BYTES);
                let mut text = String::from_utf8_lossy(&bytes).into_owned();
                if cut > 0 {
                    text = format!("… (the first {cut} bytes are in the API's log download)\n{text}");
                }
                let label = if key.map_index >= 0 { format!("{task}[{}]", key.map_index) } else { task.clone() };
                json!({
                    "label": label, "try": key.try_number, "text": text, "finished": finished,
                    "follow": format!("/api/v1/runs/{id}/tasks/{task}/logs/follow?map_index={}&try={}", key.map_index, key.try_number),
                })
            }
            None => Value::Null,
        };
        // Each training task's metric history (loss curves), downsampled.
        let experiments = app.store.read(|c| {
            let f = experiments::Filter { run_ids: vec![id], limit: 20, ..Default::default() };
            let mut out = Vec::new();
            for e in experiments::list(c, &f)? {
                let mut h = serde_json::Map::new();
                for key in experiments::history_keys(c, e.id)? {
                    let pts: Vec<Value> = experiments::history(c, e.id, &key, 200)?.into_iter().map(|(s, v)| json!([s, v])).collect();
                    h.insert(key, json!(pts));
                }
                out.push(json!({"id": e.id, "task_id": e.task_id, "histories": h}));
            }
            Ok(out)
        })?;
        Ok((tasks, log, experiments))
    })
    .await;
    match r {
        Ok((tasks, log, experiments)) => {
            d["pipeline_tasks"] = json!(tasks);
            d["log"] = log;
            d["experiments"] = json!(experiments);
            d["now"] = json!(store::now_us());
            Page(Ok(pages::run(f, &d)))
        }
        Err(e) => Page(Err((e, f))),
    }
}

#[derive(Deserialize, Default)]
struct ExperimentsQuery {
    pipeline: Option<String>,
    #[serde(rename = "where")]
    filter: Option<String>,
    order: Option<String>,
}

async fn experiments_page(State(app): State<AppState>, Query(q): Query<ExperimentsQuery>) -> Page {
    page(
        frame("Experiments", "Experiments"),
        move || {
            let pipeline = q.pipeline.filter(|s| !s.is_empty());
            let filter = q.filter.filter(|s| !s.is_empty());
            let order = q.order.filter(|s| !s.is_empty()).unwrap_or_else(|| "-id".into());
            let lq = super::experiments::ListQuery::new(pipeline.clone(), filter.clone(), Some(order.clone()), 200);
            let (rows, error) =
                match super::experiments::filter_of(lq).and_then(|f| app.store.read(|c| experiments::list(c, &f))) {
                    Ok(rows) => (rows, None),
                    Err(e) if e.code != Code::Internal => (Vec::new(), Some(e.message)),
                    Err(e) => return Err(e),
                };
            Ok(json!({"experiments": rows, "pipeline": pipeline, "where": filter, "order": order, "error": error}))
        },
        pages::experiments,
    )
    .await
}

async fn compare_page(State(app): State<AppState>, axum::extract::RawQuery(raw): axum::extract::RawQuery) -> Page {
    // `ids=1&ids=2` from the checkboxes, or `ids=1,2`.
    let ids: Vec<i64> = raw
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("ids="))
        .flat_map(|v| v.split("%2C").flat_map(|x| x.split(',')).map(str::to_string).collect::<Vec<_>>())
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    page(
        frame("Compare experiments", "Experiments"),
        move || {
            if ids.len() < 2 {
                return Err(Error::bad_request("tick at least two experiments to compare"));
            }
            app.store.read(|c| {
                let mut list = Vec::new();
                let mut histories = serde_json::Map::new();
                for id in &ids {
                    let e = experiments::get(c, *id)?.ok_or_else(|| Error::not_found(format!("no experiment {id}")))?;
                    let mut h = serde_json::Map::new();
                    for key in experiments::history_keys(c, *id)? {
                        let pts: Vec<Value> =
                            experiments::history(c, *id, &key, 200)?.into_iter().map(|(s, v)| json!([s, v])).collect();
                        h.insert(key, json!(pts));
                    }
                    histories.insert(id.to_string(), Value::Object(h));
                    list.push(e);
                }
                Ok(json!({"experiments": list, "histories": histories}))
            })
        },
        pages::compare,
    )
    .await
}

async fn datasets_page(State(app): State<AppState>) -> Page {
    page(
        frame("Datasets", "Datasets"),
        move || Ok(json!({"datasets": app.store.read(crate::data::latest)?})),
        pages::datasets,
    )
    .await
}

#[derive(Deserialize, Default)]
struct DatasetQuery {
    version: Option<i64>,
}

async fn dataset_page(State(app): State<AppState>, Path(name): Path<String>, Query(q): Query<DatasetQuery>) -> Page {
    let n = name.clone();
    page(
        frame(name, "Datasets"),
        move || {
            let versions = app.store.read(|c| crate::data::versions(c, &n))?;
            let Some(latest) = versions.first().map(|v| v.version) else {
                return Err(Error::not_found(format!("no dataset named `{n}`")));
            };
            let version = q.version.unwrap_or(latest);
            let stats = app.store.read(|c| crate::data::stats_of(c, &n, version, None, None))?;
            Ok(json!({"name": n, "versions": versions, "version": version, "stats": stats}))
        },
        pages::dataset,
    )
    .await
}

async fn models_page(State(app): State<AppState>) -> Page {
    page(
        frame("Models", "Models"),
        move || Ok(json!({"models": app.store.read(crate::registry::list)?})),
        pages::models,
    )
    .await
}

/// The model page's data: the API's model detail, its alias history and a "try it" example.
fn model_data(app: &crate::app::App, name: &str) -> Result<Value, Error> {
    let (m, versions, history) = app.store.read(|c| {
        Ok((
            crate::registry::get(c, name)?,
            crate::registry::versions(c, name)?,
            crate::registry::history(c, name, None, 50)?,
        ))
    })?;
    let alias =
        m.aliases.keys().find(|a| *a == crate::registry::PRODUCTION).or_else(|| m.aliases.keys().next()).cloned();
    let example = alias
        .as_ref()
        .and_then(|a| {
            app.serving
                .resolve(&crate::registry::ModelUri {
                    name: name.to_string(),
                    selector: crate::registry::Selector::Alias(a.clone()),
                })
                .ok()
        })
        .map(|r| example_records(&crate::serving::predict::example(&r.loaded)))
        .unwrap_or_default();
    Ok(json!({"model": m, "versions": versions, "history": history, "try_alias": alias, "try_input": example}))
}

/// A signature example as pretty JSON records (what the friendly predict endpoint takes).
fn example_records(b: &crate::serving::signature::Batch) -> String {
    use crate::serving::signature::Column;
    let records: Vec<Value> = (0..b.rows)
        .map(|i| {
            let mut r = serde_json::Map::new();
            for (k, c) in &b.columns {
                let v = match c {
                    Column::Text(v) => json!(v[i]),
                    Column::Int(v) => json!(v[i]),
                    Column::Float(v) => json!(v[i]),
                    Column::FloatSeq(v) => json!(v[i]),
                };
                r.insert(k.clone(), v);
            }
            Value::Object(r)
        })
        .collect();
    serde_json::to_string_pretty(&records).unwrap_or_default()
}

async fn model_page(State(app): State<AppState>, Path(name): Path<String>) -> Page {
    let n = name.clone();
    page(frame(name, "Models"), move || model_data(&app, &n), pages::model).await
}

async fn model_version_page(State(app): State<AppState>, Path((name, v)): Path<(String, i64)>) -> Page {
    let n = name.clone();
    page(
        frame(format!("{name} v{v}"), "Models"),
        move || {
            let mut d = model_data(&app, &n)?;
            d["focus"] = json!(v);
            Ok(d)
        },
        pages::model,
    )
    .await
}

#[derive(Deserialize, Default)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    kind: Option<String>,
    offset: Option<usize>,
}

async fn search_page(State(app): State<AppState>, Query(q): Query<SearchQuery>) -> Page {
    let mut f = frame("Search", "");
    f.query = q.q.clone();
    let text = q.q.clone();
    page(
        f,
        move || {
            if text.trim().is_empty() {
                return Ok(json!({"query": ""}));
            }
            let offset = q.offset.unwrap_or(0);
            let req =
                crate::search::Request { q: text.clone(), kind: q.kind.clone(), limit: Some(50), offset: Some(offset) };
            Ok(match app.search.query(&req) {
                Ok(r) => json!({"query": text, "kind": q.kind, "offset": offset, "results": r}),
                Err(e) if e.code == Code::BadRequest => json!({"query": text, "error": e.message}),
                Err(e) => return Err(e),
            })
        },
        pages::search,
    )
    .await
}

/// A form action's outcome: back to `to`, or the error as a page.
fn done(r: Result<String, Error>, f: Frame) -> Response {
    match r {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) => Page(Err((e, f))).into_response(),
    }
}

async fn trigger(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let n = name.clone();
    let r = blocking(move || {
        let params: BTreeMap<String, Value> = form
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("param.").map(|k| (k.to_string(), Value::String(v))))
            .collect();
        let id = app.trigger(&n, &params, None, "manual")?;
        Ok(format!("/runs/{id}"))
    })
    .await;
    done(r, frame(name, "Pipelines"))
}

async fn set_paused(app: AppState, name: String, paused: bool) -> Response {
    let n = name.clone();
    let r = blocking(move || {
        let changed = app.store.write({
            let n = n.clone();
            move |tx| pipelines::set_paused(tx, &n, paused, store::now_us())
        })?;
        if !changed {
            return Err(Error::not_found(format!("no pipeline named `{n}`")));
        }
        app.engine.pipelines_changed();
        Ok("/pipelines".to_string())
    })
    .await;
    done(r, frame(name, "Pipelines"))
}

async fn pause(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    set_paused(app, name, true).await
}

async fn unpause(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    set_paused(app, name, false).await
}

async fn cancel(State(app): State<AppState>, Path(id): Path<i64>) -> Response {
    let r = super::runs::cancel(State(app), Path(id)).await.map(|_| format!("/runs/{id}"));
    done(r, frame(format!("Run #{id}"), "Runs"))
}

async fn resume(State(app): State<AppState>, Path(id): Path<i64>) -> Response {
    let r = super::runs::resume(State(app), Path(id)).await.map(|_| format!("/runs/{id}"));
    done(r, frame(format!("Run #{id}"), "Runs"))
}

#[derive(Deserialize)]
struct PromoteForm {
    version: i64,
    alias: String,
    #[serde(default)]
    reason: String,
    confirm: Option<String>,
}

async fn promote(State(app): State<AppState>, Path(name): Path<String>, Form(form): Form<PromoteForm>) -> Response {
    let n = name.clone();
    let actor = super::auth::actor_or(None, "ui");
    let r = blocking(move || {
        if form.confirm.as_deref() != Some("yes") {
            return Err(Error::bad_request("tick the confirmation box to move an alias"));
        }
        app.serving.promote(&n, form.alias.trim(), form.version, &actor, &form.reason)?;
        Ok(format!("/models/{n}"))
    })
    .await;
    done(r, frame(name, "Models"))
}

#[derive(Deserialize)]
struct TryForm {
    #[serde(default)]
    alias: String,
    input: String,
}

/// "Try it" without JavaScript: the page again, with the serving endpoint's answer.
async fn try_model(State(app): State<AppState>, Path(name): Path<String>, Form(form): Form<TryForm>) -> Page {
    let n = name.clone();
    let alias = form.alias.trim().to_string();
    let which = super::models::Which { alias: (!alias.is_empty()).then(|| alias.clone()), version: None };
    let body = axum::body::Bytes::from(form.input.clone());
    let answer = match super::models::predict(State(app.clone()), Path(n.clone()), Query(which), body).await {
        Ok(axum::Json(v)) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(e) => format!("HTTP {}\n{}", e.code.status().as_u16(), e.message),
    };
    let input = form.input.clone();
    page(
        frame(name, "Models"),
        move || {
            let mut d = model_data(&app, &n)?;
            d["try_input"] = json!(input);
            d["try_alias"] = json!(alias);
            d["try_output"] = json!(answer);
            Ok(d)
        },
        pages::model,
    )
    .await
}

async fn asset(Path(path): Path<String>) -> Response {
    match Assets::get(&path) {
        Some(file) => {
            let mime = file.metadata.mimetype().to_string();
            (
                [(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "public, max-age=86400".to_string())],
                file.data.into_owned(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// Only paths on this site are followed after a login (no `//host` or `https://` redirects).
fn safe_next(next: &str) -> String {
    let local = next.starts_with('/') && !next.starts_with("//");
    // Browsers drop tabs and newlines from URLs (`/\t/evil.example` becomes `//evil.example`).
    if local && !next.contains('\\') && !next.chars().any(char::is_control) { next.to_string() } else { "/".into() }
}

async fn login_page(State(app): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    if !app.auth.enabled {
        return Redirect::to("/").into_response();
    }
    Html(pages::login(frame("Log in", ""), &safe_next(&q.next), "")).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: String,
}

/// A correct name and password start a session: an HttpOnly, SameSite=Strict cookie (Secure
/// over TLS). Wrong ones get the form again with a 401 and the same message either way.
async fn login(State(app): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    if !app.auth.enabled {
        return Redirect::to("/").into_response();
    }
    let next = safe_next(&form.next);
    let name = form.name.trim().chars().take(64).collect::<String>();
    if let Err(wait) = app.auth.login_allowed(&name) {
        let msg = format!("Too many failed logins for this user; try again in {} minutes.", wait.div_ceil(60));
        let html = pages::login(frame("Log in", ""), &next, &msg);
        return (StatusCode::TOO_MANY_REQUESTS, Html(html)).into_response();
    }
    // Password checks cost ~20 ms of CPU each: a few at a time, the rest wait.
    let Ok(_turn) = app.auth.login_slots.acquire().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let a = app.clone();
    let n = name.clone();
    let r = blocking(move || {
        let (known, user) = a.store.read(|c| auth::check_login(c, &n, &form.password))?;
        let Some(user) = user else {
            return Ok((known, None));
        };
        let who = user.name.clone();
        Ok((known, Some(a.store.write(move |tx| auth::create_session(tx, &who))?)))
    })
    .await;
    let known = matches!(r, Ok((true, _)));
    let r = r.map(|(_, session)| session);
    let ok = matches!(r, Ok(Some(_)));
    app.auth.login_result(&name, ok);
    // A name that is no user's may be a password typed in the wrong box: it is not kept.
    let name = if known { name } else { "(unknown user)".to_string() };
    let details = json!({"via": "login form", "ok": ok});
    let status = if ok { 303 } else { 401 };
    app.store.write_nowait(move |tx| {
        let record = auth::AuditRecord {
            actor: &name,
            action: "POST /login",
            target: "/login",
            status,
            request_id: None,
            details: &details,
        };
        auth::record(tx, &record)
    });
    match r {
        Ok(Some((session, _csrf))) => {
            let secure = if app.auth.secure_cookies { "; Secure" } else { "" };
            let cookie = format!(
                "{}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                super::auth::SESSION_COOKIE,
                auth::SESSION_US / 1_000_000
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
        }
        Ok(None) => {
            // A fixed pause makes guessing slow without locking anyone out.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let html = pages::login(frame("Log in", ""), &next, "Wrong user name or password.");
            (StatusCode::UNAUTHORIZED, Html(html)).into_response()
        }
        Err(e) => Page(Err((e, frame("Log in", "")))).into_response(),
    }
}

/// End this browser's session.
async fn logout(State(app): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(id) = super::auth::cookie(&headers, super::auth::SESSION_COOKIE) {
        let id = id.to_string();
        let _ = blocking(move || app.store.write(move |tx| auth::end_session(tx, &id))).await;
    }
    let clear = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", super::auth::SESSION_COOKIE);
    ([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}

#[derive(Deserialize)]
struct AuditPageQuery {
    before: Option<i64>,
}

async fn audit_page(State(app): State<AppState>, Query(q): Query<AuditPageQuery>) -> Page {
    let f = frame("Audit log", "");
    let fr = f.clone();
    let q = super::auth::AuditQuery { limit: Some(100), before: q.before, actor: None };
    Page(match super::auth::audit_page(app, q).await {
        Ok(d) => Ok(pages::audit(fr, &d)),
        Err(e) => Err((e, f)),
    })
}
