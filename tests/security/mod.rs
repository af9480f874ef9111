//! Authentication and access on the real server: every route × every kind of caller with the
//! exact status, browser login with CSRF, tokens, the audit log, hostile input, and the first
//! start's admin.

use serde_json::{Value, json};

use crate::common::*;

const ADMIN_PASSWORD: &str = "admin-password-1";

/// The callers of the access table, by name.
struct Callers {
    viewer: String,
    editor: String,
    admin: String,
    revoked: String,
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::String(text.to_string()))
}

/// Make a user through the API (as the local admin) and an API token for them.
fn user_with_token(s: &TestServer, name: &str, role: &str) -> String {
    let local = s.local_token();
    let body = json!({"name": name, "role": role, "password": format!("{name}-password")}).to_string();
    let (st, _, text) = s.call("POST", "/api/v1/users", Some(&local), &[], Some(body.as_bytes()));
    assert_eq!(st, 201, "{text}");
    let body = json!({"name": "test", "user": name}).to_string();
    let (st, _, text) = s.call("POST", "/api/v1/tokens", Some(&local), &[], Some(body.as_bytes()));
    assert_eq!(st, 201, "{text}");
    json_of(&text)["secret"].as_str().unwrap().to_string()
}

fn setup(s: &TestServer) -> Callers {
    let local = s.local_token();
    let (st, _, text) = s.call("POST", "/api/v1/pipelines", Some(&local), &[], Some(HELLO.as_bytes()));
    assert_eq!(st, 201, "{text}");
    let viewer = user_with_token(s, "vera", "viewer");
    let editor = user_with_token(s, "ed", "editor");
    let admin = user_with_token(s, "ada", "admin");
    let revoked = user_with_token(s, "rex", "editor");
    let (_, _, text) = s.call("GET", "/api/v1/tokens?user=rex", Some(&admin), &[], None);
    let id = json_of(&text)["tokens"][0]["id"].as_i64().unwrap();
    let (st, _, text) = s.call("DELETE", &format!("/api/v1/tokens/{id}"), Some(&admin), &[], None);
    assert_eq!(st, 200, "{text}");
    Callers { viewer, editor, admin, revoked }
}

const HELLO: &str = "name: hello\ntasks:\n  - id: start\n    op: noop\n";

#[test]
fn every_route_and_role_gets_the_exact_status() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_auth(dir.path(), ADMIN_PASSWORD);
    let c = setup(&s);
    let local = s.local_token();
    let (st, _, text) = s.call("POST", "/api/v1/pipelines/hello/trigger", Some(&local), &[], Some(b"{}"));
    assert_eq!(st, 201, "{text}");
    let run = json_of(&text)["run_id"].as_i64().unwrap();
    s.wait_run_with(run, &local);

    // Expected statuses for: anonymous, viewer, editor, admin, a bad token, a revoked token.
    // Bodies are chosen so an allowed request fails (or succeeds) the same way whoever sends
    // it, so the table can be checked in any order and changes nothing.
    let bad_yaml = "name: [";
    let table: Vec<(&str, String, Option<&str>, [u16; 6])> = vec![
        ("GET", "/healthz".into(), None, [200, 200, 200, 200, 200, 200]),
        ("GET", "/readyz".into(), None, [200, 200, 200, 200, 200, 200]),
        ("GET", "/static/app.css".into(), None, [200, 200, 200, 200, 200, 200]),
        ("GET", "/login".into(), None, [200, 200, 200, 200, 200, 200]),
        ("GET", "/v2/health/live".into(), None, [200, 200, 200, 200, 200, 200]),
        ("GET", "/v2/health/ready".into(), None, [200, 200, 200, 200, 200, 200]),
        ("GET", "/api/v1/version".into(), None, [401, 200, 200, 200, 401, 401]),
        ("GET", "/metrics".into(), None, [401, 200, 200, 200, 401, 401]),
        ("GET", "/api/v1/me".into(), None, [401, 200, 200, 200, 401, 401]),
        ("GET", "/api/v1/pipelines".into(), None, [401, 200, 200, 200, 401, 401]),
        ("GET", "/api/v1/pipelines/hello".into(), None, [401, 200, 200, 200, 401, 401]),
        ("POST", "/api/v1/pipelines/validate".into(), Some(HELLO), [401, 200, 200, 200, 401, 401]),
        ("POST", "/api/v1/pipelines".into(), Some(bad_yaml), [401, 403, 422, 422, 401, 401]),
        ("POST", "/api/v1/pipelines/nope/pause".into(), None, [401, 403, 404, 404, 401, 401]),
        ("POST", "/api/v1/pipelines/nope/unpause".into(), None, [401, 403, 404, 404, 401, 401]),
        ("POST", "/api/v1/pipelines/nope/trigger".into(), Some("{}"), [401, 403, 404, 404, 401, 401]),
        ("POST", "/api/v1/pipelines/nope/backfill".into(), Some("{}"), [401, 403, 400, 400, 401, 401]),
        ("GET", "/api/v1/runs".into(), None, [401, 200, 200, 200, 401, 401]),
        ("GET", format!("/api/v1/runs/{run}"), None, [401, 200, 200, 200, 401, 401]),
        ("GET", format!("/api/v1/runs/{run}/events"), None, [401, 200, 200, 200, 401, 401]),
        ("GET", format!("/api/v1/runs/{run}/tasks/start/logs"), None, [401, 200, 200, 200, 401, 401]),
        ("GET", format!("/api/v1/runs/{run}/artifacts/999999"), None, [401, 404, 404, 404, 401, 401]),
        ("DELETE", "/api/v1/runs/999999".into(), None, [401, 403, 404, 404, 401, 401]),
        ("POST", "/api/v1/admin/gc?dry_run=true".into(), None, [401, 403, 403, 200, 401, 401]),
        ("POST", "/api/v1/runs/999999/cancel".into(), None, [401, 403, 404, 404, 401, 401]),
        ("POST", "/api/v1/runs/999999/resume".into(), None, [401, 403, 404, 404, 401, 401]),
        ("GET", "/api/v1/datasets".into(), None, [401, 200, 200, 200, 401, 401]),
        ("GET", "/api/v1/datasets/nope".into(), None, [401, 404, 404, 404, 401, 401]),
        ("GET", "/api/v1/experiments".into(), None, [401, 200, 200, 200, 401, 401]),
        ("GET", "/api/v1/models".into(), None, [401, 200, 200, 200, 401, 401]),
        ("GET", "/api/v1/models/nope".into(), None, [401, 404, 404, 404, 401, 401]),
        ("POST", "/api/v1/models/nope/versions".into(), Some("{}"), [401, 403, 400, 400, 401, 401]),
        (
            "PUT",
            "/api/v1/models/nope/aliases/production".into(),
            Some(r#"{"version": 1}"#),
            [401, 403, 404, 404, 401, 401],
        ),
        ("PUT", "/api/v1/models/nope/access".into(), Some(r#"{"public": true}"#), [401, 403, 404, 404, 401, 401]),
        ("POST", "/api/v1/models/nope/predict".into(), Some("{}"), [401, 400, 400, 400, 401, 401]),
        ("GET", "/api/v1/serving".into(), None, [401, 200, 200, 200, 401, 401]),
        ("GET", "/api/v1/search?q=hello".into(), None, [401, 200, 200, 200, 401, 401]),
        ("POST", "/api/v1/search/reindex".into(), None, [401, 403, 200, 200, 401, 401]),
        ("GET", "/v2".into(), None, [401, 200, 200, 200, 401, 401]),
        ("GET", "/v2/models/nope".into(), None, [401, 404, 404, 404, 401, 401]),
        ("POST", "/v2/models/nope/infer".into(), Some("{}"), [401, 404, 404, 404, 401, 401]),
        ("POST", "/v2/repository/index".into(), None, [401, 200, 200, 200, 401, 401]),
        ("POST", "/v2/repository/models/nope/load".into(), None, [401, 403, 404, 404, 401, 401]),
        ("GET", "/api/v1/users".into(), None, [401, 403, 403, 200, 401, 401]),
        ("POST", "/api/v1/users".into(), Some(r#"{"name": "x"}"#), [401, 403, 403, 400, 401, 401]),
        ("PUT", "/api/v1/users/nobody".into(), Some(r#"{"role": "viewer"}"#), [401, 403, 403, 404, 401, 401]),
        ("DELETE", "/api/v1/users/nobody".into(), None, [401, 403, 403, 404, 401, 401]),
        ("GET", "/api/v1/audit".into(), None, [401, 403, 403, 200, 401, 401]),
        ("GET", "/api/v1/tokens".into(), None, [401, 200, 200, 200, 401, 401]),
        ("DELETE", "/api/v1/tokens/999999".into(), None, [401, 404, 404, 404, 401, 401]),
        // Pages: nobody signed in is sent to the login page.
        ("GET", "/".into(), None, [303, 200, 200, 200, 401, 401]),
        ("GET", format!("/runs/{run}"), None, [303, 200, 200, 200, 401, 401]),
        ("GET", "/admin/audit".into(), None, [303, 403, 403, 200, 401, 401]),
        ("POST", "/ui/pipelines/nope/pause".into(), None, [401, 403, 404, 404, 401, 401]),
        ("POST", "/ui/runs/999999/cancel".into(), None, [401, 403, 404, 404, 401, 401]),
        ("GET", "/no/such/page".into(), None, [303, 404, 404, 404, 401, 401]),
    ];
    let callers: [(&str, Option<&str>); 6] = [
        ("anonymous", None),
        ("viewer", Some(&c.viewer)),
        ("editor", Some(&c.editor)),
        ("admin", Some(&c.admin)),
        ("bad token", Some("mlbox_0000000000000000000000000000000000000000000000000000000000000000")),
        ("revoked token", Some(&c.revoked)),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, expected) in &table {
        for ((who, token), want) in callers.iter().zip(expected) {
            let (got, headers, text) = s.call(method, path, *token, &[], body.map(str::as_bytes));
            if got != *want {
                wrong.push(format!(
                    "{method} {path} as {who}: {got}, expected {want} ({})",
                    &text[..text.len().min(160)]
                ));
            }
            if got == 401 && path.starts_with("/api/") {
                assert!(headers.iter().any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer")), "{path}");
                assert_eq!(json_of(&text)["error"]["code"], "unauthorized", "{text}");
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} checks wrong:\n{}", wrong.len(), table.len() * 6, wrong.join("\n"));
    // Nothing above changed the pipeline or made a run.
    let (_, _, text) = s.call("GET", "/api/v1/runs", Some(&c.admin), &[], None);
    assert_eq!(json_of(&text)["runs"].as_array().map(Vec::len), Some(1), "{text}");
}

#[test]
fn browser_login_csrf_and_logout() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_auth(dir.path(), ADMIN_PASSWORD);
    let local = s.local_token();
    s.call("POST", "/api/v1/pipelines", Some(&local), &[], Some(HELLO.as_bytes()));
    let form = [("content-type", "application/x-www-form-urlencoded")];

    let (st, _, html) = s.call("POST", "/login", None, &form, Some(b"name=admin&password=wrong-one&next=/pipelines"));
    assert_eq!(st, 401);
    assert!(html.contains("Wrong user name or password"), "{html}");

    let (st, headers, _) = s.call(
        "POST",
        "/login",
        None,
        &form,
        Some(format!("name=admin&password={ADMIN_PASSWORD}&next=/pipelines").as_bytes()),
    );
    assert_eq!(st, 303);
    let get = |k: &str| headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(get("location"), "/pipelines");
    let set_cookie = get("set-cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "no Secure flag without TLS: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let with_cookie = [("cookie", cookie.as_str())];

    let (st, _, html) = s.call("GET", "/pipelines", None, &with_cookie, None);
    assert_eq!(st, 200);
    assert!(html.contains("admin (admin)") && html.contains("Log out"), "the header shows who is signed in");
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("a csrf field");
    assert_eq!(csrf.len(), 64);

    // A form post without the token is refused and changes nothing.
    let both = [("cookie", cookie.as_str()), form[0]];
    let (st, _, _) = s.call("POST", "/ui/pipelines/hello/pause", None, &both, Some(b""));
    assert_eq!(st, 403);
    let (st, _, _) = s.call("POST", "/ui/pipelines/hello/pause", None, &both, Some(b"csrf=0123"));
    assert_eq!(st, 403);
    let (_, _, text) = s.call("GET", "/api/v1/pipelines/hello", Some(&local), &[], None);
    assert_eq!(json_of(&text)["pipeline"]["paused"], false, "{text}");
    // With it, the change is made, and the audit log names the user.
    let (st, _, _) = s.call("POST", "/ui/pipelines/hello/pause", None, &both, Some(format!("csrf={csrf}").as_bytes()));
    assert_eq!(st, 303);
    let (_, _, text) = s.call("GET", "/api/v1/pipelines/hello", Some(&local), &[], None);
    assert_eq!(json_of(&text)["pipeline"]["paused"], true, "{text}");
    // The API with the session cookie needs the token in a header.
    let (st, _, _) = s.call("POST", "/api/v1/pipelines/hello/unpause", None, &with_cookie, None);
    assert_eq!(st, 403);
    let (st, _, _) =
        s.call("POST", "/api/v1/pipelines/hello/unpause", None, &[with_cookie[0], ("x-csrf-token", csrf)], None);
    assert_eq!(st, 200);

    let audit = wait_for(10, "the audit entries", || {
        let (_, _, text) = s.call("GET", "/api/v1/audit", Some(&local), &[], None);
        let entries = json_of(&text)["entries"].as_array().cloned().unwrap_or_default();
        (entries.len() >= 6).then_some(entries)
    });
    let find = |action: &str, status: i64| {
        audit.iter().any(|e| e["actor"] == "admin" && e["action"] == action && e["status"] == status)
    };
    assert!(find("POST /ui/pipelines/{name}/pause", 303), "{audit:?}");
    assert!(find("POST /ui/pipelines/{name}/pause", 403), "refusals are logged too: {audit:?}");
    assert!(find("POST /login", 401) && find("POST /login", 303), "{audit:?}");

    // After a login, only a path on this site is followed.
    for next in ["//evil.example/", "/%09/evil.example", "https://evil.example/", "/\\evil.example"] {
        let body = format!("name=admin&password={ADMIN_PASSWORD}&next={next}");
        let (st, headers, _) = s.call("POST", "/login", None, &form, Some(body.as_bytes()));
        assert_eq!(st, 303);
        assert!(headers.iter().any(|(k, v)| k == "location" && v == "/"), "{next}: {headers:?}");
    }
    // Guessing one user's password is stopped after 10 failures, whatever the guesses.
    for _ in 0..10 {
        let (st, _, _) = s.call("POST", "/login", None, &form, Some(b"name=ghost&password=guess-guess"));
        assert_eq!(st, 401);
    }
    let (st, _, html) = s.call("POST", "/login", None, &form, Some(b"name=ghost&password=guess-guess"));
    assert_eq!(st, 429, "{html}");
    assert!(html.contains("Too many failed logins"));

    // Logging out ends the session: the cookie no longer works.
    let (st, _, _) = s.call("POST", "/logout", None, &both, Some(format!("csrf={csrf}").as_bytes()));
    assert_eq!(st, 303);
    let (st, headers, _) = s.call("GET", "/pipelines", None, &with_cookie, None);
    assert_eq!(st, 303);
    assert!(headers.iter().any(|(k, v)| k == "location" && v.starts_with("/login?next=")), "{headers:?}");
}

#[test]
fn tokens_users_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_auth(dir.path(), ADMIN_PASSWORD);
    let c = setup(&s);
    // A viewer makes a token for themselves; the secret is shown once, listed by prefix only.
    let (st, _, text) = s.call("POST", "/api/v1/tokens", Some(&c.viewer), &[], Some(br#"{"name": "laptop"}"#));
    assert_eq!(st, 201, "{text}");
    let secret = json_of(&text)["secret"].as_str().unwrap().to_string();
    let (_, _, text) = s.call("GET", "/api/v1/tokens", Some(&secret), &[], None);
    assert!(!text.contains(&secret), "listing never shows a secret");
    let mine = json_of(&text)["tokens"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 2, "only vera's own tokens: {text}");
    assert!(mine.iter().all(|t| t["user"] == "vera"));
    // ...cannot make one for someone else, or see theirs.
    let (st, _, _) = s.call("POST", "/api/v1/tokens", Some(&c.viewer), &[], Some(br#"{"name": "x", "user": "ed"}"#));
    assert_eq!(st, 403);
    let (st, _, _) = s.call("GET", "/api/v1/tokens?user=ed", Some(&c.viewer), &[], None);
    assert_eq!(st, 403);
    // ...and a viewer cannot create a pipeline with a shell task: nothing is stored.
    let shell = "name: sneaky\ntasks:\n  - id: t\n    op: shell\n    with: {command: 'touch /tmp/pwned'}\n";
    let (st, _, _) = s.call("POST", "/api/v1/pipelines", Some(&c.viewer), &[], Some(shell.as_bytes()));
    assert_eq!(st, 403);
    let (st, _, _) = s.call("GET", "/api/v1/pipelines/sneaky", Some(&c.admin), &[], None);
    assert_eq!(st, 404);

    // A disabled user's tokens stop working; enabling them again restores access.
    let (st, _, _) = s.call("PUT", "/api/v1/users/vera", Some(&c.admin), &[], Some(br#"{"disabled": true}"#));
    assert_eq!(st, 200);
    assert_eq!(s.call("GET", "/api/v1/runs", Some(&secret), &[], None).0, 401);
    s.call("PUT", "/api/v1/users/vera", Some(&c.admin), &[], Some(br#"{"disabled": false}"#));
    assert_eq!(s.call("GET", "/api/v1/runs", Some(&secret), &[], None).0, 200);
    // The last admin stays.
    let (st, _, text) = s.call("DELETE", "/api/v1/users/ada", Some(&c.admin), &[], None);
    assert_eq!(st, 200, "{text}");
    let (st, _, text) =
        s.call("PUT", "/api/v1/users/admin", Some(&s.local_token()), &[], Some(br#"{"role": "viewer"}"#));
    assert_eq!(st, 409, "{text}");

    // The CLI on the server's machine goes through the local token: no password needed.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN).args(args).arg("--data-dir").arg(dir.path()).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, out) = cli(&["users", "add", "newbie", "--role", "editor"]);
    assert!(ok, "{out}");
    let password = out.lines().find_map(|l| l.strip_prefix("password: ")).expect("a printed password").to_string();
    let (ok, out) = cli(&["users", "list"]);
    assert!(ok && out.contains("newbie") && out.contains("editor"), "{out}");
    let (ok, out) = cli(&["tokens", "create", "ci", "--user", "newbie"]);
    assert!(ok, "{out}");
    let token = out.lines().find(|l| l.starts_with("mlbox_")).expect("the secret").to_string();
    // From another machine: --server with the token.
    let remote = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args).args(["--server", &s.base]).env_remove("MLBOX_TOKEN");
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, out) = remote(&["pipelines", "list"], Some(&token));
    assert!(ok && out.contains("hello"), "{out}");
    let (ok, out) = remote(&["pipelines", "list"], None);
    assert!(!ok && out.contains("401") && out.contains("--token"), "{out}");
    // The password works in the login form.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (st, _, _) = s.call("POST", "/login", None, &form, Some(format!("name=newbie&password={password}").as_bytes()));
    assert_eq!(st, 303);
    let (ok, out) = cli(&["audit", "--limit", "200"]);
    assert!(ok && out.contains("POST /api/v1/users") && out.contains("local"), "{out}");
}

#[test]
fn first_start_prints_the_admin_password_once_and_no_auth_needs_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::spawn(dir.path(), &[], &[]);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let password = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("created user `admin` with password"))
        .map(|p| p.trim().to_string())
        .expect("the first start prints the admin password");
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (st, _, _) = s.call("POST", "/login", None, &form, Some(format!("name=admin&password={password}").as_bytes()));
    assert_eq!(st, 303, "the printed password logs in");
    s.interrupt();
    let s = TestServer::spawn(dir.path(), &[], &[]);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert_eq!(log.matches("created user `admin`").count(), 1, "printed once only: {log}");
    drop(s);

    let out = std::process::Command::new(BIN)
        .args(["serve", "--no-auth", "--addr", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only on a loopback address"), "{err}");
}

#[test]
fn hostile_input_gets_a_clear_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_auth(dir.path(), ADMIN_PASSWORD);
    let c = setup(&s);
    let editor = Some(c.editor.as_str());
    let before = s.call("GET", "/api/v1/pipelines", editor, &[], None).2;
    // Path traversal in artifact and log paths.
    for path in [
        "/api/v1/runs/1/artifacts/..%2F..%2Fmlbox.db",
        "/api/v1/runs/1/artifacts/%2e%2e%2f%2e%2e%2fmlbox.db",
        "/api/v1/runs/1/tasks/..%2F..%2Fmlbox.db/logs",
        "/api/v1/runs/1/tasks/start/logs?try=../../mlbox.db",
        "/static/..%2F..%2FCargo.toml",
    ] {
        let (st, _, text) = s.call("GET", path, editor, &[], None);
        assert!((400..500).contains(&st), "{path}: {st} {text}");
        assert!(!text.contains("SQLite format"), "{path} leaked a file");
    }
    // Malformed JSON, invalid UTF-8, a wrong type, an oversized body.
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("POST", "/api/v1/pipelines/hello/trigger", b"{\"params\": ".to_vec(), 400),
        ("POST", "/api/v1/pipelines", vec![0xff, 0xfe, b'n', b'a'], 400),
        ("POST", "/api/v1/users", b"{\"name\": 7}".to_vec(), 403),
        ("POST", "/api/v1/pipelines/hello/trigger", br#"{"params": {"nope": 1}}"#.to_vec(), 422),
    ];
    for (method, path, body, want) in cases {
        let (st, _, text) = s.call(method, path, editor, &[], Some(&body));
        assert_eq!(st, want, "{method} {path}: {text}");
        let e = json_of(&text);
        assert!(
            e["error"]["message"].as_str().is_some_and(|m| m.len() > 10),
            "a message that says what to fix: {text}"
        );
    }
    let (st, v) = s.post_head_with("/api/v1/tokens", 100 * 1024, editor);
    assert_eq!(st, 413, "users and tokens take small bodies: {v}");
    // A deeply nested spec and a huge one: refused with a 4xx, the server still answers.
    let deep = format!("name: deep\ndescription: {}{}\ntasks: []\n", "[".repeat(20_000), "]".repeat(20_000));
    let (st, _, text) = s.call("POST", "/api/v1/pipelines", editor, &[], Some(deep.as_bytes()));
    assert!((400..500).contains(&st), "{st} {text}");
    let mut block = String::from("name: deep2\ntasks: []\ndescription:\n");
    for i in 1..1200 {
        block.push_str(&format!("{}k:\n", "  ".repeat(i)));
    }
    let (st, _, text) = s.call("POST", "/api/v1/pipelines", editor, &[], Some(block.as_bytes()));
    assert!((400..500).contains(&st), "{st} {text}");
    // A huge spec is refused from its declared length, before a byte of it is read.
    let (st, v) = s.post_head_with("/api/v1/pipelines", 5 << 20, editor);
    assert_eq!(st, 413, "{v}");
    // A template in a param value stays text: it is not evaluated a second time.
    let echo = "name: echo\nparams:\n  msg: {type: string, default: hi}\ntasks:\n  - id: t\n    op: shell\n    with:\n      command: printf '%s\\n' \"$MSG\"\n      env: {MSG: \"${{ params.msg }}\"}\n";
    let (st, _, text) = s.call("POST", "/api/v1/pipelines", editor, &[], Some(echo.as_bytes()));
    assert_eq!(st, 201, "{text}");
    let body = json!({"params": {"msg": "${{ run.id }} $(id) `id`"}}).to_string();
    let (st, _, text) = s.call("POST", "/api/v1/pipelines/echo/trigger", editor, &[], Some(body.as_bytes()));
    assert_eq!(st, 201, "{text}");
    let id = json_of(&text)["run_id"].as_i64().unwrap();
    let run = s.wait_run_with(id, &c.editor);
    assert_eq!(run["run"]["state"], "success", "{run}");
    let (_, _, log) = s.call("GET", &format!("/api/v1/runs/{id}/tasks/t/logs"), editor, &[], None);
    assert!(log.contains("${{ run.id }} $(id) `id`"), "the value reached the program as text: {log}");
    // Nothing the refused requests carried was stored.
    let (_, _, after) = s.call("GET", "/api/v1/pipelines", editor, &[], None);
    let names = |t: &str| {
        json_of(t)["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let mut expected = names(&before);
    expected.push("echo".into());
    expected.sort();
    assert_eq!(names(&after), expected);
    assert_eq!(s.get("/healthz").0, 200);
}

#[test]
fn https_with_a_certificate_secure_cookies_and_the_local_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=mlbox.test", "-addext", "subjectAltName=DNS:mlbox.test,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (the test makes its certificate with it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let args = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let s = TestServer::spawn(&data, &args, &[("MLBOX_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);

    // A client that trusts exactly this certificate verifies the chain and the address.
    let pem = std::fs::read(&cert).unwrap();
    let root = ureq::tls::Certificate::from_pem(&pem).unwrap().to_owned();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![root])))
        .build();
    let strict: ureq::Agent =
        ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).max_redirects(0).build().into();
    let r = strict.get(&format!("{}/healthz", s.base)).call().expect("a verified TLS connection");
    assert_eq!(r.status().as_u16(), 200);
    let r = strict
        .post(&format!("{}/login", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(format!("name=admin&password={ADMIN_PASSWORD}"))
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(cookie.contains("; Secure"), "over TLS the session cookie is Secure: {cookie}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = s.base.replacen("https://", "http://", 1);
    assert!(ureq::get(&format!("{plain}/healthz")).call().is_err());

    // The CLI on this machine finds the server through the lock and speaks TLS to it.
    let out = std::process::Command::new(BIN).args(["pipelines", "list", "--data-dir"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(s);

    // A bad certificate file stops the start with a message that names it.
    std::fs::write(&cert, "not a certificate").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cert.pem"), "{err}");
}

#[test]
fn without_sign_in_only_this_machine_may_call() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    assert_eq!(s.call("GET", "/api/v1/pipelines", None, &[], None).0, 200);
    // A web page elsewhere cannot post to the local server (a no-cors POST carries its Origin)...
    let (st, _, text) =
        s.call("POST", "/api/v1/pipelines", None, &[("origin", "http://evil.example")], Some(HELLO.as_bytes()));
    assert_eq!(st, 403, "{text}");
    let (st, _, _) = s.call("POST", "/api/v1/pipelines", None, &[("sec-fetch-site", "cross-site")], Some(b"x"));
    assert_eq!(st, 403);
    // ...nor read it through DNS rebinding (its own name pointed at 127.0.0.1).
    let (st, _, _) = s.call("GET", "/api/v1/pipelines", None, &[("host", "evil.example:8080")], None);
    assert_eq!(st, 403);
    assert_eq!(s.call("GET", "/api/v1/pipelines", None, &[("host", "localhost:8080")], None).0, 200);
    assert_eq!(s.call("GET", "/api/v1/pipelines/hello", None, &[], None).0, 404, "nothing was created");
}
