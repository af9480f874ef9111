//! Who may call what. One layer in front of every route identifies the caller (API token, browser
//! session or the data dir's local token), checks the route against the access table
//! (`required`), checks CSRF tokens on browser sessions' state changes, and writes every state
//! change, and every refused one, to the audit log. The users, tokens and audit API live here too.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, blocking, json_body};
use crate::auth::{self, Principal, Role, Via};
use crate::error::{Code, Error};

pub const SESSION_COOKIE: &str = "mlbox_session";

/// What a route needs from its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    Public,
    /// A model's serving endpoint: open if the model is public, else any signed-in role.
    Serving(String),
    Role(Role),
}

/// The access table: every route's requirement, from its method and path.
pub fn required(method: &Method, path: &str) -> Need {
    use crate::auth::Role::{Admin, Editor, Viewer};
    use Need::*;
    let read = matches!(*method, Method::GET | Method::HEAD);
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match seg.as_slice() {
        ["healthz"] | ["readyz"] | ["login"] | ["static", ..] => Public,
        ["v2", "health", ..] => Public,
        ["api", "v1", "users", ..] | ["api", "v1", "audit"] | ["api", "v1", "admin", ..] | ["admin", ..] => Role(Admin),
        ["api", "v1", "me"] | ["api", "v1", "tokens", ..] | ["logout"] => Role(Viewer),
        ["api", "v1", "models", name, "predict"] | ["api", "v1", "streams", name] if !read => Serving(name.to_string()),
        ["v2", "models", name, ..] => Serving(name.to_string()),
        ["v2", "repository", "index"] => Role(Viewer),
        // Checking a spec, searching and the UI's "try it" change nothing.
        ["api", "v1", "pipelines", "validate"] | ["ui", "models", _, "try"] => Role(Viewer),
        _ if read => Role(Viewer),
        _ => Role(Editor),
    }
}

/// Requests that change nothing even though they are not GETs: not written to the audit log.
fn audited(method: &Method, path: &str) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    !matches!(
        seg.as_slice(),
        ["api", "v1", "models", _, "predict"]
            | ["api", "v1", "streams", _]
            | ["api", "v1", "pipelines", "validate"]
            | ["v2", "models", ..]
            | ["v2", "repository", "index"]
            | ["ui", "models", _, "try"]
            | ["login"]
    )
}

/// Pages for people (as opposed to the JSON API and the inference protocol).
fn is_page(path: &str) -> bool {
    !(path.starts_with("/api/") || path.starts_with("/v2") || path == "/metrics")
}

/// Whether a browser says this request comes from another site (`Sec-Fetch-Site`, or an
/// `Origin` that is not this server). Programs send neither.
pub fn cross_site(h: &HeaderMap) -> bool {
    let value = |k: &str| h.get(k).and_then(|v| v.to_str().ok());
    match value("sec-fetch-site") {
        Some(site) => !matches!(site, "same-origin" | "none"),
        None => match (value("origin"), value("host")) {
            (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
            _ => false,
        },
    }
}

/// With authentication off, mlbox listens on loopback; a request addressed to another name
/// reached it through DNS rebinding (a web page's name pointed at 127.0.0.1).
fn addressed_to_loopback(h: &HeaderMap) -> bool {
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else { return true };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map(|(n, _)| n).unwrap_or(host),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The caller: `Ok(None)` for nobody (or an expired session), `Err` for a bad or revoked token.
async fn identify(app: &AppState, headers: &HeaderMap) -> Result<Option<Principal>, Error> {
    if !app.auth.enabled {
        return Ok(Some(Principal::open()));
    }
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let token = v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                auth::unauthorized("use `Authorization: Bearer TOKEN` with an API token (`mlbox tokens create`)")
            })?;
        if app.auth.is_local(token) {
            return Ok(Some(Principal::local()));
        }
        let (a, t) = (app.clone(), token.to_string());
        let found = blocking(move || a.store.read(|c| auth::token_principal(c, &t))).await?;
        let Some((p, id, last_used)) = found else {
            return Err(auth::unauthorized(
                "the API token is not valid: it was revoked or mistyped, or its user was disabled",
            ));
        };
        // "Last used" is kept to the minute: no write per request.
        if last_used.is_none_or(|t| crate::store::now_us() - t > 60_000_000) {
            app.store.write_nowait(move |tx| auth::touch_token(tx, id));
        }
        return Ok(Some(p));
    }
    if let Some(id) = cookie(headers, SESSION_COOKIE) {
        let (a, id) = (app.clone(), id.to_string());
        return blocking(move || a.store.read(|c| auth::session(c, &id))).await;
    }
    Ok(None)
}

/// A browser session's state change must carry its CSRF token, in `X-CSRF-Token` or as the
/// form field `csrf`. Returns the request, rebuilt if its body had to be read.
async fn check_csrf(req: Request, csrf: &str) -> Result<Request, Error> {
    let header_ok = req.headers().get("x-csrf-token").is_some_and(|v| v.as_bytes() == csrf.as_bytes());
    if header_ok {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 256 * 1024)
        .await
        .map_err(|_| Error::new(Code::PayloadTooLarge, "a form body is limited to 256 KiB"))?;
    let expected = format!("csrf={csrf}");
    if !bytes.split(|b| *b == b'&').any(|kv| kv == expected.as_bytes()) {
        return Err(Error::new(
            Code::Forbidden,
            "this form is missing its security token or the token is stale: reload the page and try again",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The auth layer (see the module docs).
pub async fn layer(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let need = required(&method, &path);
    let page = is_page(&path) && matches!(method, Method::GET | Method::HEAD);
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let action = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| path.clone());
    let action = format!("{method} {action}");
    let entry = |actor: &str, via: &'static str| {
        audited(&method, &path).then(|| Entry {
            actor: actor.to_string(),
            action: action.clone(),
            target: path.clone(),
            request_id: request_id.clone(),
            via,
        })
    };
    let audit = |actor: &str, status: StatusCode, via: &'static str| {
        if let Some(e) = entry(actor, via) {
            write_audit(&app, e, status.as_u16(), false);
        }
    };
    let open_route = match &need {
        Need::Public => true,
        Need::Serving(m) => app.auth.is_public(m),
        Need::Role(_) => false,
    };
    let principal = match identify(&app, req.headers()).await {
        Ok(p) => p,
        // A public route answers whatever credentials come with it.
        Err(_) if open_route => None,
        Err(e) => {
            audit("anonymous", e.code.status(), "bad token");
            return refuse(e, &path);
        }
    };
    // Without sign-in every caller is an admin: only this machine's programs and its own pages.
    if !app.auth.enabled {
        let foreign = !addressed_to_loopback(req.headers())
            || (!matches!(method, Method::GET | Method::HEAD) && cross_site(req.headers()));
        if foreign {
            let e = Error::new(
                Code::Forbidden,
                "with authentication off, mlbox answers only its own pages and programs on this machine \
                 (addressed to localhost); sign-in is needed for anything else",
            );
            audit("anonymous", e.code.status(), "refused");
            return refuse(e, &path);
        }
    }
    let allowed = match (&need, &principal) {
        _ if open_route => true,
        (Need::Serving(_), Some(_)) => true,
        (Need::Role(r), Some(p)) => p.role >= *r,
        _ => false,
    };
    if !allowed {
        let e = match (&principal, &need) {
            (None, _) if page => {
                let next = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                return Redirect::to(&format!("/login?next={}", mlbox_ui::pages::enc(next))).into_response();
            }
            (None, _) => auth::unauthorized(
                "sign in first: send `Authorization: Bearer TOKEN` with an API token (`mlbox tokens create`), or log in at /login",
            ),
            (Some(p), Need::Role(r)) => Error::new(
                Code::Forbidden,
                format!("{} has the {} role; this needs {}", p.name, p.role.as_str(), r.as_str()),
            ),
            (Some(p), _) => Error::new(Code::Forbidden, format!("{} may not do this", p.name)),
        };
        let who = principal.as_ref().map(|p| p.name.as_str()).unwrap_or("anonymous");
        audit(who, e.code.status(), "refused");
        return refuse(e, &path);
    }
    let principal =
        principal.unwrap_or_else(|| Principal { name: "anonymous".into(), role: Role::Viewer, via: Via::Anonymous });
    let req = match &principal.via {
        // Public routes (the login form) change nothing a session owns.
        Via::Session { csrf } if !matches!(method, Method::GET | Method::HEAD) && need != Need::Public => {
            match check_csrf(req, csrf).await {
                Ok(r) => r,
                Err(e) => {
                    audit(&principal.name, e.code.status(), "session");
                    return refuse(e, &path);
                }
            }
        }
        _ => req,
    };
    let pending = Pending { app: app.clone(), entry: entry(&principal.name, principal.via.label()) };
    let resp = auth::CURRENT.scope(principal, next.run(req)).await;
    pending.finish(resp.status());
    resp
}

/// One audit log entry before its outcome is known.
struct Entry {
    actor: String,
    action: String,
    target: String,
    request_id: Option<String>,
    via: &'static str,
}

fn write_audit(app: &AppState, e: Entry, status: u16, aborted: bool) {
    let details = if aborted { json!({"via": e.via, "aborted": true}) } else { json!({"via": e.via}) };
    app.store.write_nowait(move |tx| {
        let record = auth::AuditRecord {
            actor: &e.actor,
            action: &e.action,
            target: &e.target,
            status,
            request_id: e.request_id.as_deref(),
            details: &details,
        };
        auth::record(tx, &record)
    });
}

/// A change in flight: recorded with its status when it is answered, or, if the client leaves
/// or the request times out first (its work may still complete), as aborted with status 0.
struct Pending {
    app: AppState,
    entry: Option<Entry>,
}

impl Pending {
    fn finish(mut self, status: StatusCode) {
        if let Some(e) = self.entry.take() {
            write_audit(&self.app, e, status.as_u16(), false);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(e) = self.entry.take() {
            write_audit(&self.app, e, 0, true);
        }
    }
}

/// A refusal: an HTML page for the UI, JSON elsewhere (with the Bearer challenge on 401).
fn refuse(e: Error, path: &str) -> Response {
    let unauthorized = e.code == Code::Unauthorized;
    let mut resp = if is_page(path) { super::ui::problem_page(e) } else { e.into_response() };
    if unauthorized {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"mlbox\""));
    }
    resp
}

/// The current request's caller (set by `layer`).
pub fn current() -> Principal {
    // Outside a request (never expected): the least a caller could be.
    auth::CURRENT.try_with(Clone::clone).unwrap_or_else(|_| Principal {
        name: "anonymous".into(),
        role: Role::Viewer,
        via: Via::Anonymous,
    })
}

/// Who a change is recorded under. A claimed name (`"actor"` in a body) is taken only from the
/// local CLI or with authentication off; a signed-in user is always recorded as themselves.
pub fn actor_or(claimed: Option<String>, default: &str) -> String {
    let me = current();
    match me.via {
        Via::Local | Via::Open => claimed.unwrap_or_else(|| default.to_string()),
        _ => me.name,
    }
}

fn forbidden(msg: impl Into<String>) -> Error {
    Error::new(Code::Forbidden, msg)
}

/// `GET /api/v1/me`: who the server thinks you are.
pub async fn me() -> Json<Value> {
    let p = current();
    let via = if p.via == Via::Open { "open (authentication is off)" } else { p.via.label() };
    Json(json!({"name": p.name, "role": p.role, "via": via}))
}

pub async fn list_users(State(app): State<AppState>) -> Result<Json<Value>, Error> {
    let users = blocking(move || app.store.read(auth::users)).await?;
    Ok(Json(json!({ "users": users })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: String,
    /// Omitted: a random password is made and returned once.
    password: Option<String>,
}

/// `POST /api/v1/users`: `{name, role, password?}`.
pub async fn add_user(State(app): State<AppState>, body: Bytes) -> Result<(StatusCode, Json<Value>), Error> {
    let b: NewUser = json_body(&body)?;
    blocking(move || {
        let role = Role::parse(&b.role)?;
        auth::check_name(&b.name)?;
        let generated = b.password.is_none();
        let password = b.password.unwrap_or_else(auth::new_password);
        let hash = auth::hash_password(&password)?;
        let user = app.store.write(move |tx| auth::add_user(tx, &b.name, role, &hash))?;
        let mut v = json!({ "user": user });
        if generated {
            v["password"] = json!(password);
        }
        Ok((StatusCode::CREATED, Json(v)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeUser {
    role: Option<String>,
    password: Option<String>,
    /// true: make a random password and return it once.
    #[serde(default)]
    reset_password: bool,
    disabled: Option<bool>,
}

/// `PUT /api/v1/users/{name}`: `{role?, password?, reset_password?, disabled?}`.
pub async fn set_user(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let b: ChangeUser = json_body(&body)?;
    blocking(move || {
        if b.password.is_some() && b.reset_password {
            return Err(Error::bad_request("give a password or ask for a reset, not both"));
        }
        let role = b.role.as_deref().map(Role::parse).transpose()?;
        let new_password = if b.reset_password { Some(auth::new_password()) } else { b.password.clone() };
        let password_hash = new_password.as_deref().map(auth::hash_password).transpose()?;
        let change = auth::UserChange { role, password_hash, disabled: b.disabled };
        let user = app.store.write(move |tx| auth::update_user(tx, &name, change))?;
        let mut v = json!({ "user": user });
        if b.reset_password {
            v["password"] = json!(new_password);
        }
        Ok(Json(v))
    })
    .await
}

/// `DELETE /api/v1/users/{name}`: the user, their tokens and their sessions.
pub async fn remove_user(State(app): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, Error> {
    blocking(move || {
        let n = name.clone();
        app.store.write(move |tx| auth::remove_user(tx, &n))?;
        Ok(Json(json!({ "removed": name })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    /// Whose token (admins only; default: yours).
    user: Option<String>,
}

/// `POST /api/v1/tokens`: `{name, user?}`; the secret is in the answer and nowhere else.
pub async fn create_token(State(app): State<AppState>, body: Bytes) -> Result<(StatusCode, Json<Value>), Error> {
    let me = current();
    let b: NewToken = json_body(&body)?;
    let user = match (b.user, &me.via) {
        (Some(u), _) if u != me.name && me.role < Role::Admin => {
            return Err(forbidden("only admins create tokens for other users"));
        }
        (Some(u), _) => u,
        (None, Via::Session { .. } | Via::Token) => me.name.clone(),
        (None, _) => {
            return Err(Error::bad_request(
                "say which user the token is for: {\"user\": NAME} (`mlbox tokens create NAME --user USER`)",
            ));
        }
    };
    blocking(move || {
        let (token, secret) = app.store.write(move |tx| auth::create_token(tx, &user, &b.name))?;
        let note = "the secret is shown only now; send it as `Authorization: Bearer SECRET`";
        Ok((StatusCode::CREATED, Json(json!({ "token": token, "secret": secret, "note": note }))))
    })
    .await
}

#[derive(Deserialize)]
pub struct TokenQuery {
    user: Option<String>,
    #[serde(default)]
    all: bool,
}

/// Whose tokens a caller may see and revoke: their own, or anyone's for admins.
fn owner_scope(me: &Principal, asked: Option<String>, all: bool) -> Result<Option<String>, Error> {
    let admin = me.role == Role::Admin;
    match asked {
        Some(u) if u != me.name && !admin => Err(forbidden("only admins see other users' tokens")),
        Some(u) => Ok(Some(u)),
        None if all && admin => Ok(None),
        None if matches!(me.via, Via::Local | Via::Open) => Ok(None),
        None => Ok(Some(me.name.clone())),
    }
}

/// `GET /api/v1/tokens[?user=NAME|?all=true]`: yours by default.
pub async fn list_tokens(State(app): State<AppState>, Query(q): Query<TokenQuery>) -> Result<Json<Value>, Error> {
    let scope = owner_scope(&current(), q.user, q.all)?;
    let tokens = blocking(move || app.store.read(|c| auth::tokens(c, scope.as_deref()))).await?;
    Ok(Json(json!({ "tokens": tokens })))
}

/// `DELETE /api/v1/tokens/{id}`: revoke one of yours (admins: anyone's). Takes effect at once.
pub async fn revoke_token(State(app): State<AppState>, Path(id): Path<i64>) -> Result<Json<Value>, Error> {
    let me = current();
    let owner = if me.role == Role::Admin { None } else { Some(me.name.clone()) };
    let t = blocking(move || app.store.write(move |tx| auth::revoke_token(tx, id, owner.as_deref()))).await?;
    Ok(Json(json!({ "token": t })))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    pub limit: Option<u32>,
    pub before: Option<i64>,
    pub actor: Option<String>,
}

/// `GET /api/v1/audit?limit=&before=&actor=`: newest first; `next_before` pages back.
pub async fn audit_log(State(app): State<AppState>, Query(q): Query<AuditQuery>) -> Result<Json<Value>, Error> {
    Ok(Json(audit_page(app, q).await?))
}

pub async fn audit_page(app: AppState, q: AuditQuery) -> Result<Value, Error> {
    let limit = q.limit.unwrap_or(100);
    let entries = blocking(move || app.store.read(|c| auth::audit(c, limit, q.before, q.actor.as_deref()))).await?;
    let next = (entries.len() as u32 >= limit.clamp(1, 1000)).then(|| entries.last().map(|e| e.id)).flatten();
    Ok(json!({ "entries": entries, "next_before": next }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Access {
    public: bool,
}

/// `PUT /api/v1/models/{name}/access`: `{"public": true}` serves the model without a token.
pub async fn set_access(
    State(app): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let b: Access = json_body(&body)?;
    blocking(move || {
        app.auth.set_public(&app.store, &name, b.public)?;
        Ok(Json(json!({ "model": name, "public": b.public })))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_table() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required(&get, "/healthz"), Need::Public);
        assert_eq!(required(&get, "/static/app.css"), Need::Public);
        assert_eq!(required(&get, "/api/v1/runs"), Need::Role(Role::Viewer));
        assert_eq!(required(&post, "/api/v1/pipelines"), Need::Role(Role::Editor));
        assert_eq!(required(&post, "/api/v1/pipelines/validate"), Need::Role(Role::Viewer));
        assert_eq!(required(&get, "/api/v1/users"), Need::Role(Role::Admin));
        assert_eq!(required(&get, "/api/v1/audit"), Need::Role(Role::Admin));
        assert_eq!(required(&post, "/api/v1/tokens"), Need::Role(Role::Viewer));
        assert_eq!(required(&post, "/api/v1/models/taxi/predict"), Need::Serving("taxi".into()));
        assert_eq!(required(&post, "/v2/models/taxi/versions/2/infer"), Need::Serving("taxi".into()));
        assert_eq!(required(&post, "/v2/repository/models/taxi/load"), Need::Role(Role::Editor));
        assert_eq!(required(&Method::PUT, "/api/v1/models/taxi/aliases/production"), Need::Role(Role::Editor));
        assert_eq!(required(&Method::DELETE, "/anything/unknown"), Need::Role(Role::Editor));
        assert!(!audited(&post, "/v2/models/taxi/infer"));
        assert!(audited(&post, "/api/v1/runs/1/cancel"));
    }
}
