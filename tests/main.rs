//! Integration tests: the real server over HTTP, the real binary killed with -9, the CLI and a
//! server on one data dir, and engine properties on random DAGs.

mod common;
mod e2e;
mod ml;
mod ops;
mod search;
mod security;
mod serving;
mod ui;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};

const HELLO_FILE: &str = include_str!("../pipelines/hello.yaml");

/// The demo pipeline without its schedule, so only the test's own triggers create runs.
fn hello() -> String {
    let s = HELLO_FILE.replace("schedule: \"@daily\"\n", "");
    assert_ne!(s, HELLO_FILE, "the demo pipeline's schedule line moved; update this helper");
    s
}

#[test]
fn api_runs_a_pipeline_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    let (status, v) = s.post_raw("/api/v1/pipelines", hello());
    assert_eq!(status, 201, "{v}");
    let (status, v) = s.post_raw("/api/v1/pipelines", hello());
    assert_eq!((status, v["result"].as_str()), (200, Some("unchanged")));

    let id = s.trigger("hello", json!({"count": 1, "greeting": "hi"}));
    let run = s.wait_run(id, 60);
    assert_eq!(run["run"]["state"], "success", "{run}");
    assert_eq!(task(&run, "start")["outputs"]["items"], json!(["a", "b", "c"]));
    assert_eq!(task(&run, "each")["outputs"]["results"].as_array().map(Vec::len), Some(3));
    // count=1 → the branch follows `small`, so `big` is skipped and `done` (none_failed) still runs.
    assert_eq!(task(&run, "big")["state"], "skipped");
    assert_eq!(task(&run, "small")["state"], "success");
    assert_eq!(task(&run, "done")["state"], "success");
    assert_eq!(run["artifacts"].as_array().map(Vec::len), Some(3));
    let attempts = task(&run, "start")["attempts"].as_array().unwrap().len();
    assert_eq!(attempts, 1);

    let log = ureq::get(&format!("{}/api/v1/runs/{id}/tasks/start/logs", s.base))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(log.contains(&format!("hi from run {id}")), "{log}");

    let (status, list) = s.get("/api/v1/runs?pipeline=hello&state=success");
    assert_eq!(status, 200);
    assert_eq!(list["runs"][0]["id"], id);
    let (_, p) = s.get("/api/v1/pipelines/hello");
    assert_eq!(p["recent_runs"][0]["id"], id);
}

#[test]
fn api_errors_are_json_with_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    // Unscheduled, so the only way a run could appear is one of the bad requests below.
    s.apply(&hello());
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("GET", "/api/v1/pipelines/nope", None, 404, "no pipeline named `nope`"),
        ("GET", "/api/v1/runs/999", None, 404, "no run 999"),
        ("GET", "/api/v1/nothing", None, 404, "no such route"),
        ("POST", "/api/v1/pipelines/hello/trigger", Some("{not json"), 400, "invalid JSON"),
        ("POST", "/api/v1/pipelines/hello/trigger", Some(r#"{"params":{"count":"many"}}"#), 422, "param `count`"),
        ("POST", "/api/v1/pipelines/hello/trigger", Some(r#"{"params":{"zzz":1}}"#), 422, "unknown param `zzz`"),
        ("POST", "/api/v1/pipelines", Some("name: x\ntasks:\n  - id: a\n    op: nope\n"), 422, "1:1"),
        ("POST", "/api/v1/runs/999/cancel", None, 404, "no run"),
        ("GET", "/api/v1/runs?state=weird", None, 400, "unknown state"),
    ];
    for (method, path, body, want, text) in cases {
        let (status, v) = match *method {
            "GET" => s.get(path),
            _ => s.post_raw(path, body.unwrap_or("")),
        };
        assert_eq!(status, *want, "{method} {path}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_else(|| panic!("no JSON error for {path}: {v}"));
        if *text == "1:1" {
            assert!(msg.contains("4:9") && msg.contains("unknown op `nope`"), "{msg}");
            assert_eq!(v["error"]["details"]["errors"][0]["line"], 4);
        } else {
            assert!(msg.contains(text), "{path}: {msg}");
        }
    }
    // Declared too large: answered from the headers alone, so no body is sent (a client still writing a
    // body the server will never read can see a broken pipe instead of the answer).
    let (status, v) = s.post_headers_only("/api/v1/pipelines", 3 * 1024 * 1024);
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");
    let (_, runs) = s.get("/api/v1/runs");
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "bad requests must not create runs");
}

#[test]
fn retries_timeouts_and_outputs_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    let marker = dir.path().join("marker");
    let pidfile = dir.path().join("child.pid");
    s.apply(&format!(
        r#"
name: flaky
tasks:
  - id: flaky
    op: shell
    retries: 2
    retry_delay: 100ms
    with:
      command: "if [ -f {m} ]; then echo ok; else touch {m}; echo first try fails >&2; exit 3; fi"
  - id: slow
    op: shell
    timeout: 1s
    with:
      command: "sleep 30 & echo $! > {p}; wait"
  - id: big
    op: shell
    retries: 2
    with:
      command: "python3 -c 'import json; print(json.dumps({{\"x\": \"a\" * 70000}}))' > $MLBOX_OUTPUTS"
"#,
        m = marker.display(),
        p = pidfile.display()
    ));
    let id = s.trigger("flaky", json!({}));
    let run = s.wait_run(id, 60);
    assert_eq!(run["run"]["state"], "failed");
    let flaky = task(&run, "flaky");
    assert_eq!(flaky["state"], "success");
    assert_eq!(flaky["try_number"], 2);
    assert_eq!(flaky["attempts"][0]["state"], "failed");
    assert!(flaky["attempts"][0]["error"].as_str().unwrap().contains("status 3"));
    let slow = task(&run, "slow");
    assert_eq!(slow["state"], "failed");
    assert!(slow["error"].as_str().unwrap().contains("timed out"), "{slow}");
    // The whole process group died, not just `sh`.
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    wait_for(10, "the background sleep to be killed", || (unsafe { libc::kill(pid, 0) } != 0).then_some(()));
    let big = task(&run, "big");
    assert_eq!(big["state"], "failed");
    assert!(big["error"].as_str().unwrap().contains("64 KiB"), "{big}");
    assert_eq!(big["try_number"], 1, "too-large outputs fail the same way every time: no retry");
    let log = ureq::get(&format!("{}/api/v1/runs/{id}/tasks/flaky/logs?try=1", s.base))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(log.contains("first try fails"), "{log}");
}

#[test]
fn cancel_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    let gate = dir.path().join("gate");
    let count = dir.path().join("count");
    s.apply(&format!(
        r#"
name: gated
tasks:
  - id: first
    op: shell
    with: {{command: "echo x >> {c}"}}
  - id: second
    op: shell
    depends_on: [first]
    with: {{command: "test -f {g}"}}
  - id: third
    op: noop
    depends_on: [second]
"#,
        c = count.display(),
        g = gate.display()
    ));
    let id = s.trigger("gated", json!({}));
    let run = s.wait_run(id, 60);
    assert_eq!(run["run"]["state"], "failed");
    assert_eq!(task(&run, "third")["state"], "upstream_failed");
    std::fs::write(&gate, "open").unwrap();
    let (status, v) = s.post_json(&format!("/api/v1/runs/{id}/resume"), &json!({}));
    assert_eq!(status, 200, "{v}");
    let run = s.wait_run(id, 60);
    assert_eq!(run["run"]["state"], "success", "{run}");
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1, "resume must not re-run successful tasks");
    let (status, _) = s.post_json(&format!("/api/v1/runs/{id}/resume"), &json!({}));
    assert_eq!(status, 409);

    s.apply("name: sleepy\ntasks:\n  - id: nap\n    op: shell\n    with: {command: 'sleep 30'}\n  - id: after\n    op: noop\n    depends_on: [nap]\n");
    let id = s.trigger("sleepy", json!({}));
    wait_for(20, "nap to run", || {
        let (_, v) = s.get(&format!("/api/v1/runs/{id}"));
        (task(&v, "nap")["state"] == "running").then_some(())
    });
    let (status, _) = s.post_json(&format!("/api/v1/runs/{id}/cancel"), &json!({}));
    assert_eq!(status, 200);
    let run = s.wait_run(id, 20);
    assert_eq!(run["run"]["state"], "cancelled");
    assert_eq!(task(&run, "nap")["state"], "cancelled");
    assert_eq!(task(&run, "after")["state"], "cancelled");
}

#[test]
fn sensor_gives_back_its_slot_while_waiting() {
    let dir = tempfile::tempdir().unwrap();
    // One executor slot: if the sensor held it while waiting, `maker` could never run.
    let s = TestServer::start_with(dir.path(), &["--slots", "1"]);
    let f = dir.path().join("ready.flag");
    s.apply(&format!(
        r#"
name: sensing
tasks:
  - id: wait
    op: sensor
    with: {{file: "{f}", poke_interval: 50ms, timeout: 20s}}
  - id: maker
    op: shell
    with: {{command: "sleep 0.3; touch {f}"}}
  - id: after
    op: noop
    depends_on: [wait, maker]
"#,
        f = f.display()
    ));
    let run = s.wait_run(s.trigger("sensing", json!({})), 60);
    assert_eq!(run["run"]["state"], "success", "{run}");
}

#[test]
fn kill_9_mid_run_then_restart_completes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start(dir.path());
    let started = dir.path().join("started");
    s.apply(&format!(
        "name: crashy\ntasks:\n  - id: a\n    op: noop\n  - id: long\n    op: shell\n    retries: 1\n    retry_delay: 100ms\n    depends_on: [a]\n    with: {{command: 'touch {}; sleep 1'}}\n  - id: z\n    op: noop\n    depends_on: [long]\n",
        started.display()
    ));
    let id = s.trigger("crashy", json!({}));
    wait_for(30, "the long task to start", || started.exists().then_some(()));
    s.kill9();
    let s = TestServer::start(dir.path());
    let run = s.wait_run(id, 60);
    assert_eq!(run["run"]["state"], "success", "{run}");
    let long = task(&run, "long");
    assert_eq!(long["try_number"], 2);
    assert!(long["attempts"][0]["error"].as_str().unwrap().contains("stopped while this attempt was running"));
    assert_eq!(task(&run, "a")["try_number"], 1, "finished work is not redone");
}

#[test]
fn cli_and_server_share_a_data_dir_without_locking_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(&pipeline, "name: busy\ntasks:\n  - id: a\n    op: shell\n    with: {command: 'echo hi'}\n  - id: b\n    op: noop\n    depends_on: [a]\n").unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(BIN).args(args).arg("--data-dir").arg(dir.path()).output().expect("run the CLI")
    };
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let p = pipeline.clone();
            let d = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut outs = Vec::new();
                for _ in 0..5 {
                    let args: Vec<String> = if i % 2 == 0 {
                        vec!["run".into(), p.display().to_string()]
                    } else {
                        vec!["runs".into(), "list".into()]
                    };
                    outs.push(std::process::Command::new(BIN).args(&args).arg("--data-dir").arg(&d).output().unwrap());
                }
                outs
            })
        })
        .collect();
    for t in threads {
        for out in t.join().unwrap() {
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(!text.to_lowercase().contains("locked"), "{text}");
            assert!(out.status.success(), "{text}");
        }
    }
    let out = cli(&["runs", "list", "--json", "--limit", "100"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"].as_array().map(Vec::len), Some(10));
    assert!(v["runs"].as_array().unwrap().iter().all(|r| r["state"] == "success"));
    drop(s);
}

#[test]
fn cli_run_without_a_server_reports_success_and_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new(BIN)
        .args(["run", "pipelines/hello.yaml", "--param", "count=4", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}{}", String::from_utf8_lossy(&ok.stderr));
    assert!(out.contains("finished  big") && out.contains("run 1 success"), "{out}");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: bad\ntasks:\n  - id: a\n    op: shell\n    with: {command: 'exit 1'}\n").unwrap();
    let failed =
        std::process::Command::new(BIN).arg("run").arg(&bad).arg("--data-dir").arg(dir.path()).output().unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stdout).contains("FAILED    a"));
    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(&invalid, "name: x\ntasks:\n  - id: a\n    op: noop\n    depends_on: [b]\n").unwrap();
    let v = std::process::Command::new(BIN).arg("validate").arg(&invalid).output().unwrap();
    assert_eq!(v.status.code(), Some(2));
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(err.contains("invalid.yaml:5:18: unknown dependency `b`"), "{err}");
}

#[test]
fn cron_catchup_respects_max_active_runs() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path(), true, 2);
    let start = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let yaml = format!(
        "name: every-minute\nschedule: '* * * * *'\nstart_date: '{start}'\ncatchup: true\nmax_active_runs: 1\ntasks:\n  - id: t\n    op: shell\n    with: {{command: 'sleep 0.05'}}\n"
    );
    app.upsert_pipeline("test", &yaml, "api").unwrap();
    let runs = wait_for(60, "catch-up runs to finish", || {
        let rs = app
            .store
            .read(|c| mlbox::store::runs::list(c, &mlbox::store::runs::RunFilter { limit: 100, ..Default::default() }))
            .ok()?;
        (rs.len() >= 4 && rs.iter().all(|r| r.state == "success")).then_some(rs)
    });
    assert!(runs.len() <= 6, "one run per missed minute, got {}", runs.len());
    let mut spans: Vec<(i64, i64)> = runs.iter().map(|r| (r.started_at.unwrap(), r.finished_at.unwrap())).collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "runs overlapped despite max_active_runs: 1");
    }
    let mut dates: Vec<i64> = runs.iter().map(|r| r.logical_date).collect();
    dates.sort();
    dates.dedup();
    assert_eq!(dates.len(), runs.len(), "each interval runs once");
    app.shutdown(Duration::from_secs(5));
}

#[test]
fn backfill_creates_one_run_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    s.apply("name: daily\nschedule: '@daily'\ntasks:\n  - id: t\n    op: shell\n    with: {command: 'echo ${{ run.ds }}'}\n");
    let (status, v) =
        s.post_json("/api/v1/pipelines/daily/backfill", &json!({"from": "2024-01-01", "to": "2024-01-03"}));
    assert_eq!(status, 201, "{v}");
    let ids: Vec<i64> = v["run_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    for id in &ids {
        assert_eq!(s.wait_run(*id, 60)["run"]["state"], "success");
    }
    let log = ureq::get(&format!("{}/api/v1/runs/{}/tasks/t/logs", s.base, ids[1]))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert_eq!(log.trim(), "2024-01-02");
    let (_, v) = s.post_json("/api/v1/pipelines/daily/backfill", &json!({"from": "2024-01-01", "to": "2024-01-03"}));
    assert_eq!(v["run_ids"].as_array().map(Vec::len), Some(0), "a backfill never duplicates a logical date");
}

#[test]
fn ctrl_c_drains_and_a_restart_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_with(dir.path(), &["--grace", "5s"]);
    let started = dir.path().join("started");
    s.apply(&format!(
        "name: drain\ntasks:\n  - id: a\n    op: shell\n    with: {{command: 'touch {}; sleep 0.5'}}\n  - id: b\n    op: noop\n    depends_on: [a]\n",
        started.display()
    ));
    let id = s.trigger("drain", json!({}));
    wait_for(30, "a to start", || started.exists().then_some(()));
    let status = s.interrupt();
    assert!(status.success(), "graceful exit, got {status}");
    let s = TestServer::start(dir.path());
    let run = s.wait_run(id, 60);
    assert_eq!(run["run"]["state"], "success", "{run}");
    assert_eq!(task(&run, "a")["try_number"], 1, "a finished within the grace period and is not redone");
}

/// A random DAG: task i may depend on any earlier task.
fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1usize..25).prop_flat_map(|n| {
        (0..n).map(|i| proptest::collection::vec(0..i.max(1), 0..3.min(i + 1))).collect::<Vec<_>>().prop_map(
            move |deps| deps.into_iter().enumerate().map(|(i, d)| if i == 0 { Vec::new() } else { d }).collect(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]
    #[test]
    fn random_dags_run_every_task_once_after_its_dependencies(deps in dag()) {
        let dir = tempfile::tempdir().unwrap();
        let app = open_app(dir.path(), false, 2);
        let mut yaml = String::from("name: random\ntasks:\n");
        for (i, d) in deps.iter().enumerate() {
            let mut d = d.clone();
            d.sort();
            d.dedup();
            let d: Vec<String> = d.iter().map(|j| format!("t{j}")).collect();
            yaml.push_str(&format!("  - id: t{i}\n    op: noop\n    depends_on: [{}]\n", d.join(", ")));
        }
        app.upsert_pipeline("random", &yaml, "api").unwrap();
        let id = app.trigger("random", &BTreeMap::new(), None, "manual").unwrap();
        prop_assert_eq!(wait_app_run(&app, id, 60), "success");
        let (tasks, attempts) = app.store.read(|c| Ok((mlbox::store::runs::tasks(c, id)?, mlbox::store::runs::attempts(c, id)?))).unwrap();
        let by_id: BTreeMap<String, &mlbox::store::runs::TaskRow> = tasks.iter().map(|t| (t.task_id.clone(), t)).collect();
        prop_assert_eq!(attempts.len(), deps.len(), "every task ran exactly once");
        for (i, d) in deps.iter().enumerate() {
            let t = by_id[&format!("t{i}")];
            prop_assert_eq!(t.try_number, 1);
            for j in d {
                let up = by_id[&format!("t{j}")];
                prop_assert!(t.started_at.unwrap() >= up.finished_at.unwrap(), "t{} started before t{} finished", i, j);
            }
        }
        app.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn a_sensor_waiting_between_pokes_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start(dir.path());
    let flag = dir.path().join("flag");
    s.apply(&format!(
        "name: patient\ntasks:\n  - id: wait\n    op: sensor\n    with: {{file: '{}', poke_interval: 100ms}}\n  - id: after\n    op: noop\n    depends_on: [wait]\n",
        flag.display()
    ));
    let id = s.trigger("patient", json!({}));
    wait_for(30, "the sensor to wait between pokes", || {
        let (_, v) = s.get(&format!("/api/v1/runs/{id}"));
        (task(&v, "wait")["state"] == "running" && !task(&v, "wait")["next_try_at"].is_null()).then_some(())
    });
    s.kill9();
    let s = TestServer::start(dir.path());
    std::fs::write(&flag, "").unwrap();
    let run = s.wait_run(id, 60);
    assert_eq!(run["run"]["state"], "success", "{run}");
    let wait = task(&run, "wait");
    assert_eq!(wait["try_number"], 1, "a restart is not a failed attempt for a waiting sensor");
    assert_eq!(wait["attempts"].as_array().map(Vec::len), Some(1));
}

#[test]
fn http_op_sensor_timeout_threads_and_live_logs() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), &["--slots", "2"]);
    s.apply(&format!(
        r#"
name: mixed
tasks:
  - id: ask
    op: http
    with: {{url: "{b}/api/v1/version"}}
  - id: up
    op: sensor
    with: {{http: "{b}/healthz", poke_interval: 50ms}}
  - id: never
    op: sensor
    timeout: 400ms
    with: {{file: "/nonexistent/mlbox-test", poke_interval: 50ms}}
  - id: wide
    op: shell
    threads: 2
    with: {{command: "sleep 0.3"}}
  - id: narrow1
    op: shell
    with: {{command: "sleep 0.3"}}
  - id: narrow2
    op: shell
    with: {{command: "sleep 0.3"}}
  - id: talk
    op: shell
    with: {{command: "for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done"}}
"#,
        b = s.base
    ));
    let id = s.trigger("mixed", json!({}));
    // Follow `talk` live over SSE from the start: every line arrives, then `end`.
    wait_for(30, "talk to start", || {
        let (_, v) = s.get(&format!("/api/v1/runs/{id}"));
        (task(&v, "talk")["try_number"] == 1).then_some(())
    });
    let mut resp = ureq::get(&format!("{}/api/v1/runs/{id}/tasks/talk/logs/follow", s.base)).call().unwrap();
    let body = resp.body_mut().read_to_string().unwrap();
    for i in 1..=5 {
        assert!(body.contains(&format!("line {i}")), "{body}");
    }
    assert!(body.contains("event: end"), "{body}");

    let run = s.wait_run(id, 60);
    assert_eq!(run["run"]["state"], "failed", "only the `never` sensor fails");
    let ask = task(&run, "ask");
    assert_eq!(ask["outputs"]["status"], 200);
    assert_eq!(ask["outputs"]["body"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(task(&run, "up")["state"], "success");
    let never = task(&run, "never");
    assert_eq!(never["state"], "failed");
    assert!(never["error"].as_str().unwrap().contains("timed out"), "{never}");
    // `wide` takes both slots, so nothing else may run while it does.
    let span = |t: &Value| (t["started_at"].as_i64().unwrap(), t["finished_at"].as_i64().unwrap());
    let (ws, we) = span(task(&run, "wide"));
    for other in ["narrow1", "narrow2", "talk", "ask"] {
        let (os, oe) = span(task(&run, other));
        assert!(oe <= ws || os >= we, "{other} ran while `wide` held both slots");
    }
}

#[test]
fn scheduled_pipelines_need_param_defaults_and_framework_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    let (status, v) = s.post_raw(
        "/api/v1/pipelines",
        "name: nodefault\nschedule: '@daily'\nparams:\n  day: {type: date}\ntasks:\n  - id: a\n    op: noop\n",
    );
    assert_eq!(status, 422);
    assert!(v["error"]["message"].as_str().unwrap().contains("needs a default"), "{v}");
    let (status, v) = s.get("/api/v1/runs/abc");
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("parse"), "{v}");
    let r = ureq::put(&format!("{}/api/v1/runs", s.base))
        .config()
        .http_status_as_error(false)
        .build()
        .send_empty()
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
}

#[test]
fn env_beats_mlbox_toml_for_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mlbox.toml"), "data_dir = \"from-toml\"\n").unwrap();
    let run = |env: Option<&str>| {
        let mut c = std::process::Command::new(BIN);
        c.args(["runs", "list"]).current_dir(dir.path()).env_remove("MLBOX_DATA_DIR");
        if let Some(e) = env {
            c.env("MLBOX_DATA_DIR", e);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run(None);
    assert!(dir.path().join("from-toml/mlbox.db").exists(), "mlbox.toml names the data dir");
    run(Some("from-env"));
    assert!(dir.path().join("from-env/mlbox.db").exists(), "MLBOX_DATA_DIR beats mlbox.toml");
}

#[test]
fn tasks_still_running_after_the_grace_period_are_requeued_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_with(dir.path(), &["--grace", "300ms"]);
    let marker = dir.path().join("once");
    s.apply(&format!(
        "name: long\ntasks:\n  - id: nap\n    op: shell\n    with: {{command: 'if [ -f {m} ]; then exit 0; fi; touch {m}; sleep 30'}}\n",
        m = marker.display()
    ));
    let id = s.trigger("long", json!({}));
    wait_for(30, "nap to start", || marker.exists().then_some(()));
    let t = std::time::Instant::now();
    assert!(s.interrupt().success());
    assert!(t.elapsed() < Duration::from_secs(15), "shutdown waited for the task instead of stopping it");
    let s = TestServer::start(dir.path());
    let run = s.wait_run(id, 60);
    assert_eq!(run["run"]["state"], "success", "{run}");
    let nap = task(&run, "nap");
    assert_eq!(nap["attempts"][0]["state"], "interrupted", "{nap}");
    assert_eq!(nap["attempts"][1]["state"], "success");
    assert_eq!(nap["max_tries"], 2, "the interrupted attempt was given back");
}

#[test]
fn cancel_lands_during_a_slow_sensor_poke_and_on_tasks_waiting_for_a_slot() {
    // A local TCP server that answers each request only after 1.5 s: the sensor's poke is in
    // flight when the cancel arrives.
    let slow = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow_addr = slow.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in slow.incoming().flatten().take(20) {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut conn = conn;
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                std::thread::sleep(Duration::from_millis(1500));
                let _ = conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), &["--slots", "1"]);
    s.apply(&format!("name: slowpoke\ntasks:\n  - id: wait\n    op: sensor\n    with: {{http: 'http://{slow_addr}/', poke_interval: 100ms}}\n"));
    let id = s.trigger("slowpoke", json!({}));
    wait_for(20, "the first poke", || {
        let (_, v) = s.get(&format!("/api/v1/runs/{id}"));
        (task(&v, "wait")["try_number"] == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.post_json(&format!("/api/v1/runs/{id}/cancel"), &json!({})).0, 200);
    let run = s.wait_run(id, 15);
    assert_eq!(run["run"]["state"], "cancelled", "{run}");
    let wait = task(&run, "wait");
    assert_eq!(wait["state"], "cancelled");
    assert_ne!(wait["attempts"][0]["state"], "running", "no attempt is left open: {wait}");

    // With one slot busy, a second run's task waits in the executor queue; cancelling that run
    // must not wait for the slot.
    s.apply("name: hog\ntasks:\n  - id: t\n    op: shell\n    with: {command: 'sleep 5'}\n");
    let hog = s.trigger("hog", json!({}));
    s.apply("name: behind\ntasks:\n  - id: t\n    op: noop\n");
    wait_for(20, "the hog to run", || {
        let (_, v) = s.get(&format!("/api/v1/runs/{hog}"));
        (task(&v, "t")["state"] == "running").then_some(())
    });
    let behind = s.trigger("behind", json!({}));
    assert_eq!(s.post_json(&format!("/api/v1/runs/{behind}/cancel"), &json!({})).0, 200);
    let run = s.wait_run(behind, 3);
    assert_eq!(run["run"]["state"], "cancelled");
    let (_, h) = s.get(&format!("/api/v1/runs/{hog}"));
    assert_eq!(h["run"]["state"], "running", "the cancel did not wait for the busy slot");
}

#[test]
fn background_processes_die_with_their_task_and_template_errors_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    let pidfile = dir.path().join("bg.pid");
    s.apply(&format!(
        "name: leaky\ntasks:\n  - id: a\n    op: shell\n    timeout: 10s\n    with: {{command: 'sleep 30 & echo $! > {p}; echo started'}}\n  - id: b\n    op: shell\n    depends_on: [a]\n    with: {{command: 'echo ${{{{ tasks.a.outputs.nope }}}}'}}\n  - id: c\n    op: noop\n    depends_on: [b]\n",
        p = pidfile.display()
    ));
    let t = std::time::Instant::now();
    let run = s.wait_run(s.trigger("leaky", json!({})), 30);
    assert!(t.elapsed() < Duration::from_secs(8), "the task waited for its background child");
    assert_eq!(task(&run, "a")["state"], "success");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    wait_for(10, "the background sleep to be stopped", || (unsafe { libc::kill(pid, 0) } != 0).then_some(()));
    assert_eq!(run["run"]["state"], "failed");
    assert!(task(&run, "b")["error"].as_str().unwrap().contains("has no `nope`"), "{run}");
    assert_eq!(task(&run, "c")["state"], "upstream_failed");
    // The scheduler is still healthy after that.
    s.apply("name: fine\ntasks:\n  - id: t\n    op: noop\n");
    assert_eq!(s.wait_run(s.trigger("fine", json!({})), 20)["run"]["state"], "success");
}

#[test]
fn ingest_reads_real_csv_and_parquet_into_dataset_versions() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    s.apply(&format!(
        r#"
name: ingest
params:
  policy: {{type: string, default: drop}}
tasks:
  - id: month
    op: ingest
    with:
      source: "{csv}"
      name: trips_2019_01
      rename: {{PULocationID_unused: x}}
      types: {{passenger_count: int, pickup_datetime: datetime}}
  - id: all
    op: ingest
    with: {{source: "{pq}", name: trips}}
  - id: btc
    op: ingest
    with: {{source: "{btc}", name: btc_daily, skip_rows: 1, types: {{close: float}}}}
  - id: strict
    op: ingest
    with:
      source: "{glob}"
      name: flags
      types: {{store_and_fwd_flag: int}}
      bad_rows: "${{{{ params.policy }}}}"
"#,
        csv = sample("taxi/yellow_tripdata_sample_2019-01.csv"),
        pq = sample("taxi/nyc_yellow_trips.parquet"),
        btc = sample("crypto/Coinbase_BTCUSD_d.csv"),
        glob = sample("taxi/yellow_tripdata_sample_*.csv"),
    ));
    let run = s.wait_run(s.trigger("ingest", json!({})), 120);
    let month = task(&run, "month");
    assert_eq!(month["state"], "failed", "renaming a column that does not exist is an error: {month}");
    assert!(month["error"].as_str().unwrap().contains("no column `PULocationID_unused`"), "{month}");
    let all = task(&run, "all");
    assert_eq!(all["outputs"]["rows"], 300_000, "{all}");
    assert_eq!(all["outputs"]["dataset"]["version"], 1);
    assert_eq!(all["outputs"]["schema"]["pickup_location_id"], "i32");
    let btc = task(&run, "btc");
    assert_eq!(btc["outputs"]["rows"], 1770, "{btc}");
    let strict = task(&run, "strict");
    // `store_and_fwd_flag` holds N/Y: every non-empty value fails to convert to int and is dropped.
    let dropped = strict["outputs"]["dropped"].as_i64().unwrap();
    assert!(dropped > 9_000 && strict["outputs"]["rows"].as_i64().unwrap() + dropped == 10_000, "{strict}");
    let log = ureq::get(&format!("{}/api/v1/runs/{}/tasks/strict/logs", s.base, run["run"]["id"]))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(log.contains(&format!("dropped {dropped} of 10000 rows")), "{log}");

    // Same content again: same version. bad_rows: fail turns the drop into a clear failure.
    let run2 = s.wait_run(s.trigger("ingest", json!({"policy": "fail"})), 120);
    assert_eq!(task(&run2, "all")["outputs"]["dataset"]["version"], 1, "unchanged data keeps its version");
    let strict = task(&run2, "strict");
    assert_eq!(strict["state"], "failed");
    assert!(strict["error"].as_str().unwrap().contains("rows have values that do not convert"), "{strict}");
    let sha = all["outputs"]["dataset"]["sha256"].as_str().unwrap();
    assert!(
        dir.path().join(format!("artifacts/sha256/{}/{sha}", &sha[..2])).exists(),
        "the dataset is in the content store"
    );
    let (_, list) = s.get("/api/v1/datasets");
    let names: Vec<&str> = list["datasets"].as_array().unwrap().iter().filter_map(|d| d["name"].as_str()).collect();
    assert!(names.contains(&"trips") && names.contains(&"btc_daily"), "{list}");
    let (_, trips) = s.get("/api/v1/datasets/trips");
    assert_eq!(trips["versions"].as_array().map(Vec::len), Some(1), "{trips}");
    assert_eq!(trips["versions"][0]["rows"], 300_000);
    assert_eq!(trips["versions"][0]["schema"]["trip_distance"], "f64");
    assert_eq!(s.get("/api/v1/datasets/nope").0, 404);
}

#[test]
fn sql_and_split_on_real_taxi_data_never_put_the_future_in_training() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    s.apply(&format!(
        r#"
name: prep
tasks:
  - id: load
    op: ingest
    with: {{source: "{pq}", name: trips}}
  - id: clean
    op: sql
    depends_on: [load]
    with:
      inputs: {{trips: "${{{{ tasks.load.outputs.dataset }}}}"}}
      query: "SELECT * FROM trips WHERE pickup_datetime >= '2018-01-01' AND trip_distance > 0"
      name: trips_clean
  - id: by_time
    op: split
    depends_on: [clean]
    with: {{input: "${{{{ tasks.clean.outputs.dataset }}}}", name: trips, by: time, column: pickup_datetime, fractions: [0.8, 0.1, 0.1]}}
  - id: by_zone
    op: split
    depends_on: [clean]
    with: {{input: "${{{{ tasks.clean.outputs.dataset }}}}", name: zones, by: hash, column: pickup_location_id, seed: 3}}
  - id: leak_check
    op: sql
    depends_on: [by_time]
    with:
      inputs:
        train: "${{{{ tasks.by_time.outputs.train }}}}"
        test: "${{{{ tasks.by_time.outputs.test }}}}"
      query: >
        SELECT a.train_max, b.test_min
        FROM (SELECT max(pickup_datetime) AS train_max FROM train) AS a
        CROSS JOIN (SELECT min(pickup_datetime) AS test_min FROM test) AS b
      name: leak_check
  - id: zone_check
    op: sql
    depends_on: [by_zone]
    with:
      inputs:
        ztrain: "${{{{ tasks.by_zone.outputs.train }}}}"
        ztest: "${{{{ tasks.by_zone.outputs.test }}}}"
      query: "SELECT count(*) AS shared_zone_rows FROM ztrain WHERE pickup_location_id IN (SELECT pickup_location_id FROM ztest)"
      name: zone_check
"#,
        pq = sample("taxi/nyc_yellow_trips.parquet")
    ));
    let run = s.wait_run(s.trigger("prep", json!({})), 180);
    assert_eq!(run["run"]["state"], "success", "{run}");
    let clean = task(&run, "clean")["outputs"]["rows"].as_i64().unwrap();
    assert!(clean > 290_000 && clean < 300_000, "the filter dropped the bad rows only: {clean}");
    let t = &task(&run, "by_time")["outputs"];
    let parts: Vec<i64> = ["train", "validation", "test"].iter().map(|p| t[p]["rows"].as_i64().unwrap()).collect();
    assert_eq!(parts.iter().sum::<i64>(), clean, "{t}");
    assert!((parts[0] as f64 / clean as f64 - 0.8).abs() < 0.001, "{parts:?}");
    let check = &task(&run, "leak_check")["outputs"]["preview"][0];
    let (train_max, test_min) = (check["train_max"].clone(), check["test_min"].clone());
    assert!(!train_max.is_null() && !test_min.is_null(), "{check}");
    // Timestamps come back as ISO text or as numbers; both order the same way.
    let before = match (train_max.as_str(), test_min.as_str()) {
        (Some(a), Some(b)) => a <= b,
        _ => train_max.as_i64().unwrap() <= test_min.as_i64().unwrap(),
    };
    assert!(before, "training saw the test period: {check}");
    let zones = &task(&run, "zone_check")["outputs"]["preview"][0];
    assert_eq!(zones["shared_zone_rows"], 0, "a hash split keeps each key in one part: {zones}");
}

#[test]
fn ingest_downloads_from_a_url() {
    // A one-file HTTP server on loopback, serving the real CSV as shipped.
    let body = std::fs::read(sample("crypto/Coinbase_BTCUSD_d.csv")).unwrap();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in server.incoming().flatten().take(4) {
            let mut conn = conn;
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/csv\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    s.apply(&format!(
        "name: fetch\ntasks:\n  - id: get\n    op: ingest\n    with: {{source: 'http://{addr}/btc.csv', name: btc, skip_rows: 1}}\n"
    ));
    let run = s.wait_run(s.trigger("fetch", json!({})), 60);
    assert_eq!(run["run"]["state"], "success", "{run}");
    assert_eq!(task(&run, "get")["outputs"]["rows"], 1770);
}
