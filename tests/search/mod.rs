//! Full-text search against the real server: what a run writes becomes searchable by itself,
//! results are grouped by kind with highlighted snippets, bad queries are 400s, and the index
//! is rebuilt by `mlbox search reindex` and after its directory is lost.

use serde_json::{Value, json};

use crate::common::*;

fn search(s: &TestServer, q: &str, kind: Option<&str>) -> (u16, Value) {
    let mut url = format!("/api/v1/search?q={}", mlbox_ui::pages::enc(q));
    if let Some(k) = kind {
        url.push_str(&format!("&kind={k}"));
    }
    s.get(&url)
}

fn hits(v: &Value) -> Vec<Value> {
    v["hits"].as_array().cloned().unwrap_or_default()
}

/// Wait until a search returns at least one hit (the index commits within a second).
fn wait_hits(s: &TestServer, q: &str, kind: Option<&str>) -> Vec<Value> {
    wait_for(20, &format!("hits for {q:?}"), || {
        let (status, v) = search(s, q, kind);
        assert_eq!(status, 200, "{v}");
        let h = hits(&v);
        (!h.is_empty()).then_some(h)
    })
}

const PIPELINE: &str = r#"
name: nightly-etl
description: Loads the warehouse snapshot for the marmalade dashboard
tags: [finance, reporting]
tasks:
  - id: extract
    op: shell
    # The words are put together at run time, so only the log (not this spec) contains them.
    with: {command: "echo starting; echo reading table one; echo zanzibar-$(echo quok)ka checksum mis$(echo match) on shard 7; echo done"}
  - id: load
    op: shell
    depends_on: [extract]
    with: {command: "echo loading; exit 7"}
"#;

#[test]
fn what_a_run_writes_becomes_searchable_and_bad_queries_are_400s() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    s.apply(PIPELINE);
    let id = s.trigger("nightly-etl", json!({}));
    assert_eq!(s.wait_run(id, 60)["run"]["state"], "failed");

    // A word from a task log: the hit is the log, its snippet highlights the word, and it says
    // which line of the log it is on.
    let h = wait_hits(&s, "quokka", None);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["kind"], "log");
    assert!(h[0]["snippet"].as_str().unwrap().contains("zanzibar-<b>quokka</b> checksum"), "{h:?}");
    assert_eq!(h[0]["line"], 3, "{h:?}");
    assert_eq!(h[0]["url"], format!("/runs/{id}?task=extract&map_index=-1&try=1#log"));
    assert!(h[0]["title"].as_str().unwrap().contains("extract"), "{h:?}");

    // A phrase; and the kind filter.
    assert_eq!(hits(&search(&s, "\"checksum mismatch\"", Some("log")).1).len(), 1);
    assert_eq!(hits(&search(&s, "\"mismatch checksum\"", None).1).len(), 0, "a phrase keeps its word order");
    assert_eq!(hits(&search(&s, "quokka", Some("run")).1).len(), 0);

    // The pipeline by its description and tags; the run by its task's error.
    let p = wait_hits(&s, "marmalade", None);
    assert_eq!((p[0]["kind"].as_str(), p[0]["url"].as_str()), (Some("pipeline"), Some("/pipelines/nightly-etl")));
    assert_eq!(wait_hits(&s, "reporting", Some("pipeline"))[0]["title"], "nightly-etl");
    let r = wait_hits(&s, "\"status 7\"", Some("run"));
    assert_eq!(r[0]["id"], format!("run:{id}"), "{r:?}");
    assert!(r[0]["snippet"].as_str().unwrap().contains("<b>status</b> <b>7</b>"), "{r:?}");

    // Words must all match by default; OR widens.
    assert_eq!(hits(&search(&s, "quokka marmalade", None).1).len(), 0);
    assert_eq!(hits(&search(&s, "quokka OR marmalade", None).1).len(), 2);

    // Bad queries: a 400 that says what to fix, never a 500.
    let cases = [
        ("\"unclosed phrase", "invalid query"),
        ("(quokka OR", "invalid query"),
        ("ERROR: shard", "unknown field 'ERROR'"),
        ("   ", "give a query"),
        ("-quokka", "only excludes"),
    ];
    for (q, want) in cases {
        let (status, v) = search(&s, q, None);
        assert_eq!(status, 400, "{q:?}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{q:?}: {msg}");
    }
    let (status, v) = search(&s, "quokka", Some("spaceship"));
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown kind 'spaceship'"), "{v}");
    let (status, _) = s.get(&format!("/api/v1/search?q={}", "a".repeat(2000)));
    assert_eq!(status, 400);

    // The CLI groups the hits by kind and marks the highlighted words.
    let out = std::process::Command::new(BIN)
        .args(["search", "quokka", "OR", "marmalade", "--server", &s.base])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("2 matches"), "{text}");
    let (pi, li) = (text.find("pipelines:").unwrap(), text.find("logs:").unwrap());
    assert!(pi < li, "groups follow the kinds' order: {text}");
    assert!(text.contains("zanzibar-*quokka* checksum"), "{text}");

    // `mlbox search reindex` rebuilds from the store and the logs: the same answers after.
    let out = std::process::Command::new(BIN).args(["search", "reindex", "--server", &s.base]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("search index rebuilt"), "{text}");
    assert_eq!(hits(&search(&s, "quokka", None).1).len(), 1);
    assert_eq!(hits(&search(&s, "marmalade", None).1).len(), 1);
    drop(s);

    // The index directory lost while the server was down: rebuilt on the next start.
    std::fs::remove_dir_all(dir.path().join("search")).unwrap();
    let s = TestServer::start(dir.path());
    assert_eq!(wait_hits(&s, "quokka", None)[0]["kind"], "log");
}

#[test]
fn a_deleted_run_takes_its_logs_out_of_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path(), false, 2);
    app.upsert_pipeline("test", PIPELINE, "api").unwrap();
    let id = app.trigger("nightly-etl", &Default::default(), None, "manual").unwrap();
    wait_app_run(&app, id, 60);
    let q = |q: &str| {
        app.search.flush();
        let req = mlbox::search::Request {
            q: q.into(),
            kind: Some("run".into()).filter(|_| q.contains("status")),
            ..Default::default()
        };
        app.search.query(&req).unwrap().hits.into_iter().map(|h| h.id).collect::<Vec<_>>()
    };
    wait_for(20, "the log to be indexed", || (!q("quokka").is_empty()).then_some(()));
    assert_eq!(q("\"status 7\""), vec![format!("run:{id}")]);
    app.search.update(mlbox::search::Item::DeleteRun(id));
    assert_eq!(q("quokka"), Vec::<String>::new(), "the run's logs left with it");
    assert_eq!(q("\"status 7\""), Vec::<String>::new());
    assert_eq!(q("marmalade"), vec!["pipeline:nightly-etl".to_string()], "the pipeline stays");
    app.shutdown(std::time::Duration::from_secs(5));
}
