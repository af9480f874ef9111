//! Identity and access: users with roles, API tokens, browser sessions and the audit log.
//!
//! Passwords are argon2id hashes (PHC strings). API tokens and session ids are 32 random bytes,
//! shown once and stored only as SHA-256 digests: they carry full entropy, so a fast digest is
//! enough to make a copied database useless for logging in. The data dir's local token
//! (`local.token`, mode 0600, new on every start) lets mlbox commands on the same machine act as
//! an admin: whoever can read the data dir can read the database anyway.

use std::collections::HashSet;
use std::path::Path;
use std::sync::RwLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::Value;
use sha2::Digest;

use crate::error::{Code, Error, Result};
use crate::store::now_us;

/// What a user may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything, call serving endpoints, create their own tokens.
    Viewer,
    /// Also change pipelines, runs and models (trigger, cancel, promote...).
    Editor,
    /// Also manage users, read the audit log, take backups.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "editor" => Ok(Role::Editor),
            "admin" => Ok(Role::Admin),
            _ => Err(Error::bad_request(format!("unknown role {s:?}: use viewer, editor or admin"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

/// Who is making a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A browser session; its state-changing requests must carry this CSRF token.
    Session { csrf: String },
    /// `Authorization: Bearer` with a user's API token.
    Token,
    /// The data dir's local token: an mlbox command on this machine.
    Local,
    /// Authentication is off (`--no-auth`, loopback only).
    Open,
    /// Nobody signed in, on a public route.
    Anonymous,
}

impl Via {
    /// How the caller signed in, as the audit log and `/api/v1/me` name it.
    pub fn label(&self) -> &'static str {
        match self {
            Via::Session { .. } => "session",
            Via::Token => "token",
            Via::Local => "local",
            Via::Open => "open",
            Via::Anonymous => "anonymous",
        }
    }
}

impl Principal {
    pub fn local() -> Principal {
        Principal { name: "local".into(), role: Role::Admin, via: Via::Local }
    }
    pub fn open() -> Principal {
        Principal { name: "anonymous".into(), role: Role::Admin, via: Via::Open }
    }
}

tokio::task_local! {
    /// The principal of the request being handled, set by the server's auth layer for the
    /// duration of the handler (not inside `spawn_blocking`: read it before).
    pub static CURRENT: Principal;
}

/// The name a change is recorded under: the current request's user, else `fallback`.
pub fn actor(fallback: &str) -> String {
    CURRENT.try_with(|p| p.name.clone()).unwrap_or_else(|_| fallback.to_string())
}

/// The server's authentication settings and the one piece of access state kept in memory.
pub struct Auth {
    pub enabled: bool,
    /// Browsers get the session cookie only over TLS when this is set.
    pub secure_cookies: bool,
    local_token: String,
    /// Its digest, compared with each bearer's (so the comparison's timing says nothing).
    local_digest: String,
    /// Models whose serving endpoints answer without a token.
    public_models: RwLock<HashSet<String>>,
    /// Failed logins per user name: (count, when the window began).
    failures: std::sync::Mutex<std::collections::HashMap<String, (u32, std::time::Instant)>>,
    /// Password checks running at once.
    pub login_slots: tokio::sync::Semaphore,
}

/// After this many failed logins for one name within `LOCKOUT`, that name is refused until the
/// window ends (the password hash check itself is slow, but not slow enough alone).
const MAX_FAILURES: u32 = 10;
const LOCKOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl Auth {
    pub fn open(store: &crate::store::Store, enabled: bool, secure_cookies: bool) -> Result<Auth> {
        let public = store.read(|c| {
            let mut st = c.prepare("SELECT name FROM models WHERE public = 1")?;
            let names = st.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<HashSet<_>>>()?;
            Ok(names)
        })?;
        let local_token = secret("mlboxl_");
        let local_digest = digest(&local_token);
        Ok(Auth {
            enabled,
            secure_cookies,
            local_token,
            local_digest,
            public_models: RwLock::new(public),
            failures: Default::default(),
            login_slots: tokio::sync::Semaphore::new(2),
        })
    }

    /// `Err(seconds to wait)` while `name` is locked out after too many failed logins.
    pub fn login_allowed(&self, name: &str) -> std::result::Result<(), u64> {
        let f = self.failures.lock().map_err(|_| 60u64)?;
        match f.get(name) {
            Some((n, since)) if *n >= MAX_FAILURES && since.elapsed() < LOCKOUT => {
                Err((LOCKOUT - since.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn login_result(&self, name: &str, ok: bool) {
        let Ok(mut f) = self.failures.lock() else { return };
        if ok {
            f.remove(name);
            return;
        }
        if f.len() > 100_000 {
            f.retain(|_, (_, since)| since.elapsed() < LOCKOUT);
        }
        let e = f.entry(name.to_string()).or_insert((0, std::time::Instant::now()));
        if e.1.elapsed() >= LOCKOUT {
            *e = (0, std::time::Instant::now());
        }
        e.0 += 1;
    }

    pub fn local_token(&self) -> &str {
        &self.local_token
    }

    pub fn is_local(&self, bearer: &str) -> bool {
        digest(bearer) == self.local_digest
    }

    /// Write the local token where mlbox commands on this machine look for it (owner-only).
    pub fn write_local_token(&self, data_dir: &Path) -> Result<()> {
        let path = local_token_path(data_dir);
        let tmp = path.with_extension("token.tmp");
        // A stale (or planted) temp file is removed, never written through.
        let _ = std::fs::remove_file(&tmp);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        std::io::Write::write_all(&mut opts.open(&tmp)?, self.local_token.as_bytes())?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    pub fn is_public(&self, model: &str) -> bool {
        self.public_models.read().map(|s| s.contains(model)).unwrap_or(false)
    }

    pub fn set_public(&self, store: &crate::store::Store, model: &str, public: bool) -> Result<()> {
        // Held across the write, so memory and the store always agree.
        let mut set = self.public_models.write().map_err(Error::internal)?;
        let m = model.to_string();
        let found = store.write(move |tx| {
            Ok(tx.execute(
                "UPDATE models SET public = ?2, updated_at = ?3 WHERE name = ?1",
                params![m, public, now_us()],
            )?)
        })?;
        if found == 0 {
            return Err(Error::not_found(format!("no model {model:?}")));
        }
        if public {
            set.insert(model.to_string());
        } else {
            set.remove(model);
        }
        Ok(())
    }
}

pub fn local_token_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("local.token")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `prefix` + 64 hex digits of OS randomness.
pub fn secret(prefix: &str) -> String {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).expect("the operating system's random source");
    format!("{prefix}{}", hex(&buf))
}

/// What the store keeps of a token or session id.
pub fn digest(secret: &str) -> String {
    hex(&sha2::Sha256::digest(secret.as_bytes()))
}

/// A new random password: 24 letters and digits (no look-alikes), about 138 bits.
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut buf = [0u8; 24];
    getrandom::fill(&mut buf).expect("the operating system's random source");
    buf.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

pub fn hash_password(password: &str) -> Result<String> {
    if password.chars().count() < 8 {
        return Err(Error::bad_request("passwords need at least 8 characters"));
    }
    if password.len() > 1024 {
        return Err(Error::bad_request("passwords are limited to 1024 bytes"));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(Error::internal)?;
    let salt = SaltString::encode_b64(&salt).map_err(Error::internal)?;
    let hash = argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map_err(Error::internal)?;
    Ok(hash.to_string())
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// User names: 1-64 letters, digits and `.`, `_`, `-`, `@`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !ok || name == "local" || name == "anonymous" {
        return Err(Error::bad_request(format!(
            "bad user name {name:?}: use 1-64 letters, digits, '.', '_', '-' or '@' (not 'local' or 'anonymous')"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

fn user_row(r: &rusqlite::Row) -> rusqlite::Result<User> {
    let role: String = r.get(1)?;
    Ok(User {
        name: r.get(0)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        disabled: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
    })
}

const USER_COLS: &str = "name, role, disabled, created_at, updated_at";

pub fn users(c: &Connection) -> Result<Vec<User>> {
    let mut st = c.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY name"))?;
    Ok(st.query_map([], user_row)?.collect::<rusqlite::Result<_>>()?)
}

pub fn user(c: &Connection, name: &str) -> Result<User> {
    c.query_row(&format!("SELECT {USER_COLS} FROM users WHERE name = ?1"), [name], user_row)
        .optional()?
        .ok_or_else(|| Error::not_found(format!("no user {name:?}")))
}

pub fn user_count(c: &Connection) -> Result<i64> {
    Ok(c.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
}

pub fn add_user(tx: &Transaction, name: &str, role: Role, password_hash: &str) -> Result<User> {
    check_name(name)?;
    let now = now_us();
    let n = tx.execute(
        "INSERT INTO users (name, role, password_hash, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT(name) DO NOTHING",
        params![name, role.as_str(), password_hash, now],
    )?;
    if n == 0 {
        return Err(Error::conflict(format!("user {name:?} exists; change it with `mlbox users set {name}`")));
    }
    user(tx, name)
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserChange {
    pub role: Option<Role>,
    pub password_hash: Option<String>,
    pub disabled: Option<bool>,
}

/// The last enabled admin cannot be demoted, disabled or removed: nobody could manage users after.
fn keep_an_admin(tx: &Transaction, name: &str) -> Result<()> {
    let others: i64 =
        tx.query_row("SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0 AND name != ?1", [name], |r| {
            r.get(0)
        })?;
    if others == 0 {
        return Err(Error::conflict(format!("{name:?} is the last admin; make another user admin first")));
    }
    Ok(())
}

pub fn update_user(tx: &Transaction, name: &str, change: UserChange) -> Result<User> {
    let before = user(tx, name)?;
    let loses_admin = before.role == Role::Admin
        && !before.disabled
        && (change.role.is_some_and(|r| r != Role::Admin) || change.disabled == Some(true));
    if loses_admin {
        keep_an_admin(tx, name)?;
    }
    let now = now_us();
    if let Some(role) = change.role {
        tx.execute("UPDATE users SET role = ?2, updated_at = ?3 WHERE name = ?1", params![name, role.as_str(), now])?;
    }
    if let Some(d) = change.disabled {
        tx.execute("UPDATE users SET disabled = ?2, updated_at = ?3 WHERE name = ?1", params![name, d, now])?;
    }
    if let Some(h) = &change.password_hash {
        tx.execute("UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE name = ?1", params![name, h, now])?;
    }
    // A new password or a disabled account ends the user's browser sessions.
    if change.password_hash.is_some() || change.disabled == Some(true) {
        tx.execute("DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = ?1)", [name])?;
    }
    user(tx, name)
}

/// Remove a user with their tokens and sessions.
pub fn remove_user(tx: &Transaction, name: &str) -> Result<()> {
    let u = user(tx, name)?;
    if u.role == Role::Admin && !u.disabled {
        keep_an_admin(tx, name)?;
    }
    tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
    Ok(())
}

/// Check a name and password: (whether the name is a user's, the user if the password is right
/// and the account enabled). The same work is done for an unknown name, so timing does not tell
/// which names exist.
pub fn check_login(c: &Connection, name: &str, password: &str) -> Result<(bool, Option<User>)> {
    const DUMMY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$HlgT9rl3tXvJzBmhvqAuBjyPwBiEzVkdAt2gyX+cE1Q";
    let row: Option<(String, bool)> = c
        .query_row("SELECT password_hash, disabled FROM users WHERE name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (hash, disabled) = row.clone().unwrap_or_else(|| (DUMMY.to_string(), true));
    let ok = verify_password(password, &hash);
    let known = row.is_some();
    Ok((known, if ok && !disabled && known { Some(user(c, name)?) } else { None }))
}

/// Browser sessions last this long.
pub const SESSION_US: i64 = 7 * 24 * 3_600_000_000;

/// A new session for `name`: (session id for the cookie, CSRF token).
pub fn create_session(tx: &Transaction, name: &str) -> Result<(String, String)> {
    let id = secret("");
    let csrf = secret("");
    let now = now_us();
    tx.execute("DELETE FROM sessions WHERE expires_at < ?1", [now])?;
    tx.execute(
        "INSERT INTO sessions (digest, user_id, csrf, created_at, expires_at)
         SELECT ?1, id, ?2, ?3, ?4 FROM users WHERE name = ?5",
        params![digest(&id), csrf, now, now + SESSION_US, name],
    )?;
    Ok((id, csrf))
}

pub fn session(c: &Connection, id: &str) -> Result<Option<Principal>> {
    let row = c
        .query_row(
            "SELECT u.name, u.role, s.csrf FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.digest = ?1 AND s.expires_at > ?2 AND u.disabled = 0",
            params![digest(id), now_us()],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
        )
        .optional()?;
    Ok(row.map(|(name, role, csrf)| Principal {
        name,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        via: Via::Session { csrf },
    }))
}

pub fn end_session(tx: &Transaction, id: &str) -> Result<()> {
    tx.execute("DELETE FROM sessions WHERE digest = ?1", [digest(id)])?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct Token {
    pub id: i64,
    pub user: String,
    pub name: String,
    /// The first characters of the token, to tell tokens apart.
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const TOKEN_COLS: &str = "t.id, u.name, t.name, t.prefix, t.created_at, t.last_used_at, t.revoked_at";

fn token_row(r: &rusqlite::Row) -> rusqlite::Result<Token> {
    Ok(Token {
        id: r.get(0)?,
        user: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        created_at: r.get(4)?,
        last_used_at: r.get(5)?,
        revoked_at: r.get(6)?,
    })
}

/// A new API token for `user`: the record and the secret (returned once, never stored).
pub fn create_token(tx: &Transaction, user_name: &str, name: &str) -> Result<(Token, String)> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(Error::bad_request("give the token a name of 1-100 characters (what it is for)"));
    }
    user(tx, user_name)?;
    let secret = secret("mlbox_");
    tx.execute(
        "INSERT INTO api_tokens (user_id, name, digest, prefix, created_at)
         SELECT id, ?2, ?3, ?4, ?5 FROM users WHERE name = ?1",
        params![user_name, name, digest(&secret), &secret[..12], now_us()],
    )?;
    let id = tx.last_insert_rowid();
    let t = tx.query_row(
        &format!("SELECT {TOKEN_COLS} FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?1"),
        [id],
        token_row,
    )?;
    Ok((t, secret))
}

/// Tokens of one user, or of everyone.
pub fn tokens(c: &Connection, user: Option<&str>) -> Result<Vec<Token>> {
    let mut st = c.prepare(&format!(
        "SELECT {TOKEN_COLS} FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE ?1 IS NULL OR u.name = ?1 ORDER BY t.id"
    ))?;
    Ok(st.query_map([user], token_row)?.collect::<rusqlite::Result<_>>()?)
}

/// Revoke token `id`; with `owner`, only if it is theirs.
pub fn revoke_token(tx: &Transaction, id: i64, owner: Option<&str>) -> Result<Token> {
    let t = tx
        .query_row(
            &format!(
                "SELECT {TOKEN_COLS} FROM api_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.id = ?1 AND (?2 IS NULL OR u.name = ?2)"
            ),
            params![id, owner],
            token_row,
        )
        .optional()?
        .ok_or_else(|| Error::not_found(format!("no token {id} of yours; `mlbox tokens list` shows them")))?;
    tx.execute("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1", params![id, now_us()])?;
    Ok(Token { revoked_at: t.revoked_at.or(Some(now_us())), ..t })
}

/// The user behind a bearer token, and when the token was last used.
pub fn token_principal(c: &Connection, secret: &str) -> Result<Option<(Principal, i64, Option<i64>)>> {
    let row = c
        .query_row(
            "SELECT u.name, u.role, t.id, t.last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.digest = ?1 AND t.revoked_at IS NULL AND u.disabled = 0",
            [digest(secret)],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<i64>>(3)?)),
        )
        .optional()?;
    Ok(row.map(|(name, role, id, used)| {
        (Principal { name, role: Role::parse(&role).unwrap_or(Role::Viewer), via: Via::Token }, id, used)
    }))
}

pub fn touch_token(tx: &Transaction, id: i64) -> Result<()> {
    tx.execute("UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1", params![id, now_us()])?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub status: i64,
    pub request_id: Option<String>,
    pub details: Value,
}

pub struct AuditRecord<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub status: u16,
    pub request_id: Option<&'a str>,
    pub details: &'a Value,
}

pub fn record(tx: &Transaction, e: &AuditRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, target, status, request_id, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![now_us(), e.actor, e.action, e.target, e.status, e.request_id, e.details.to_string()],
    )?;
    Ok(())
}

/// The newest entries first; `before` pages back by id.
pub fn audit(c: &Connection, limit: u32, before: Option<i64>, actor: Option<&str>) -> Result<Vec<AuditEntry>> {
    let mut st = c.prepare(
        "SELECT id, at, actor, action, target, status, request_id, details FROM audit_log
         WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR actor = ?2) ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = st.query_map(params![before, actor, limit.clamp(1, 1000)], |r| {
        let details: String = r.get(7)?;
        Ok(AuditEntry {
            id: r.get(0)?,
            at: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            status: r.get(5)?,
            request_id: r.get(6)?,
            details: serde_json::from_str(&details).unwrap_or(Value::Null),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A refusal for a request without a valid identity.
pub fn unauthorized(msg: &str) -> Error {
    Error::new(Code::Unauthorized, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_wrong_ones_do_not() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct hors", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(hash_password("short").is_err(), "too short");
    }

    #[test]
    fn users_tokens_and_the_last_admin() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("a.db")).unwrap();
        let h = hash_password("password1").unwrap();
        store
            .write(move |tx| {
                add_user(tx, "root", Role::Admin, &h)?;
                add_user(tx, "ann", Role::Viewer, &h)?;
                Ok(())
            })
            .unwrap();
        let e = store.write(|tx| remove_user(tx, "root")).unwrap_err();
        assert_eq!(e.code, Code::Conflict, "{}", e.message);
        let e =
            store.write(|tx| update_user(tx, "root", UserChange { role: Some(Role::Editor), ..Default::default() }));
        assert!(e.is_err(), "the last admin cannot be demoted");
        assert!(store.read(|c| check_login(c, "ann", "password1")).unwrap().1.is_some());
        assert!(store.read(|c| check_login(c, "ann", "password2")).unwrap().1.is_none());
        let (known, user) = store.read(|c| check_login(c, "nobody", "password1")).unwrap();
        assert!(!known && user.is_none());

        let (t, secret) = store.write(|tx| create_token(tx, "ann", "ci")).unwrap();
        assert!(secret.starts_with("mlbox_") && secret.len() == 70, "{secret}");
        let stored: String =
            store.read(|c| Ok(c.query_row("SELECT digest FROM api_tokens", [], |r| r.get(0))?)).unwrap();
        assert_ne!(stored, secret, "only the digest is stored");
        let s = secret.clone();
        let (p, _, _) = store.read(move |c| token_principal(c, &s)).unwrap().expect("a valid token");
        assert_eq!((p.name.as_str(), p.role), ("ann", Role::Viewer));
        let e = store.write(move |tx| revoke_token(tx, t.id, Some("root"))).unwrap_err();
        assert_eq!(e.code, Code::NotFound, "not root's token");
        store.write(move |tx| revoke_token(tx, t.id, Some("ann"))).unwrap();
        let s = secret.clone();
        assert!(store.read(move |c| token_principal(c, &s)).unwrap().is_none(), "revoked");
    }
}
