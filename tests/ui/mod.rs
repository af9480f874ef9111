//! The web UI rendered by the real server: each page's content, the forms that work without
//! JavaScript, the embedded static files, and error pages.

use crate::common::*;

/// GET a page: (status, headers as lowercase name → value, body).
pub fn page(s: &TestServer, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut r = ureq::get(&format!("{}{path}", s.base))
        .header("accept-encoding", "identity")
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    let headers =
        r.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    (r.status().as_u16(), headers, r.body_mut().read_to_string().unwrap())
}

/// The response head of a GET sent as a browser would (gzip accepted), over raw HTTP so no client
/// decompresses the answer and hides its headers. Lowercase.
fn browser_head(s: &TestServer, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept-encoding: gzip, deflate, br\r\nconnection: close\r\n\r\n"
    );
    c.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).unwrap();
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    String::from_utf8_lossy(&buf[..end]).to_lowercase()
}

fn ok(s: &TestServer, path: &str) -> String {
    let (status, _, body) = page(s, path);
    assert_eq!(status, 200, "{path}: {body}");
    assert!(body.starts_with("<!DOCTYPE html>"), "{path}");
    body
}

/// POST a form without following the redirect: (status, Location).
pub fn form(s: &TestServer, path: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().max_redirects(0).http_status_as_error(false).build().into();
    let mut r = agent
        .post(&format!("{}{path}", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(body)
        .unwrap();
    let loc = r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let status = r.status().as_u16();
    let _ = r.body_mut().read_to_string();
    (status, loc)
}

fn hello() -> String {
    include_str!("../../pipelines/hello.yaml").replace("schedule: \"@daily\"\n", "")
}

#[test]
fn pages_render_runs_and_pipelines_and_the_forms_work_without_javascript() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path());
    s.apply(&hello());

    // Trigger from the pipelines page's form: a redirect to the new run's page.
    let body = ok(&s, "/pipelines");
    assert!(body.contains(r#"action="/ui/pipelines/hello/trigger""#), "{body}");
    assert!(body.contains(r#"name="param.count""#), "the trigger form has the params: {body}");
    let (status, loc) = form(&s, "/ui/pipelines/hello/trigger", "param.count=2&param.greeting=bonjour");
    assert_eq!(status, 303, "{loc}");
    let id: i64 = loc.strip_prefix("/runs/").unwrap().parse().unwrap();
    let run = s.wait_run(id, 60);
    assert_eq!(run["run"]["state"], "success", "{run}");
    assert_eq!(run["run"]["params"]["greeting"], "bonjour");

    // Home: counts, the run, favicon and assets.
    let home = ok(&s, "/");
    assert!(home.contains("Overview") && home.contains(&format!("href=\"/runs/{id}\"")), "{home}");
    assert!(home.contains(r#"rel="icon""#) && home.contains("/static/app.css?v="), "{home}");
    assert!(home.contains(r#"<a href="/" class="active">Home</a>"#), "{home}");

    // Pipelines: squares coloured by state, the pause button.
    let list = ok(&s, "/pipelines");
    let sq = &list[list.find(&format!(r#"title="run {id} · success"#)).expect("a square for the run")..];
    assert!(sq[..sq.find('>').unwrap()].contains(r#"class="sq st-success""#), "{list}");
    assert!(list.contains(r#"action="/ui/pipelines/hello/pause""#));

    // The pipeline page: its DAG coloured by the last run, the spec, the history.
    let p = ok(&s, "/pipelines/hello");
    assert!(p.contains(r#"<g class="node st-success" data-task="start">"#), "{p}");
    assert!(p.contains(r#"class="edge""#) && p.contains("name: hello"), "{p}");
    assert!(p.contains(r#"<g class="node st-skipped" data-task="big">"#), "the branch skipped `big`: {p}");
    assert!(p.contains("<h2>Run durations (seconds)</h2>") && p.contains(r#"<svg class="chart bars""#), "{p}");
    assert!(p.contains(r#"href="/runs?pipeline=hello""#), "{p}");

    // The run page: timeline, tasks, params; a task's log.
    let r = ok(&s, &format!("/runs/{id}"));
    assert!(r.contains(r#"<svg class="chart gantt""#) && r.contains("bonjour"), "{r}");
    assert!(r.contains(&format!(r#"href="/runs/{id}?task=start&amp;map_index=-1&amp;try=1#log""#)), "{r}");
    let log = ok(&s, &format!("/runs/{id}?task=start&map_index=-1&try=1"));
    assert!(log.contains(&format!("bonjour from run {id}")), "{log}");
    assert!(!log.contains("data-follow="), "a finished log is not followed: {log}");

    // Runs list with a state filter.
    let runs = ok(&s, "/runs?state=success");
    assert!(runs.contains(&format!("#{id}")), "{runs}");
    assert!(!ok(&s, "/runs?state=failed").contains(&format!("#{id}<")), "the filter applies");

    // A form posted from another site is refused and changes nothing.
    let agent: ureq::Agent = ureq::Agent::config_builder().max_redirects(0).http_status_as_error(false).build().into();
    let r = agent
        .post(&format!("{}/ui/pipelines/hello/pause", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .send("")
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = agent
        .post(&format!("{}/ui/pipelines/hello/pause", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "http://evil.example")
        .send("")
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(s.get("/api/v1/pipelines/hello").1["pipeline"]["paused"], false);

    // Pause and unpause through forms.
    assert_eq!(form(&s, "/ui/pipelines/hello/pause", "").0, 303);
    assert!(ok(&s, "/pipelines").contains(r#"<span class="badge st-paused">paused</span>"#));
    assert_eq!(form(&s, "/ui/pipelines/hello/unpause", "").0, 303);

    // Search from the header box: grouped, highlighted.
    // (The index commits within a second of the run's end.)
    let found = wait_for(20, "the log to be searchable", || {
        let b = ok(&s, "/search?q=bonjour");
        b.contains("<h2>logs</h2>").then_some(b)
    });
    assert!(found.contains("<h2>logs</h2>") && found.contains("<b>bonjour</b>"), "{found}");
    let bad = ok(&s, "/search?q=%22open");
    assert!(bad.contains(r#"class="error-box""#) && bad.contains("invalid query"), "{bad}");

    // Errors are pages with the right status; unknown things are 404s.
    let (status, headers, body) = page(&s, "/runs/9999");
    assert_eq!(status, 404);
    assert!(body.contains("no run 9999") && body.starts_with("<!DOCTYPE html>"), "{body}");
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/html")), "{headers:?}");
    let head = browser_head(&s, "/runs/9999");
    assert!(
        head.starts_with("http/1.1 404") && head.contains("content-type: text/html"),
        "an error page, compressed or not: {head}"
    );
    assert_eq!(page(&s, "/pipelines/nope").0, 404);
    let (status, _) = form(&s, "/ui/pipelines/hello/trigger", "param.count=lots");
    assert_eq!(status, 422, "a bad param is the API's error, shown as a page");

    // Static files: embedded, typed, cacheable, compressed on request.
    let (status, headers, css) = page(&s, "/static/app.css");
    assert_eq!(status, 200);
    let h = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert!(h("content-type").starts_with("text/css"), "{headers:?}");
    assert!(h("cache-control").contains("max-age"), "{headers:?}");
    assert!(css.contains("--success"));
    assert_eq!(page(&s, "/static/favicon.svg").0, 200);
    assert_eq!(page(&s, "/static/nope.js").0, 404);
    // Raw HTTP, so no client decompresses the answer and hides the header.
    let head = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
        c.write_all(
            b"GET /static/app.css HTTP/1.1\r\nhost: 127.0.0.1\r\naccept-encoding: gzip\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).unwrap();
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        String::from_utf8_lossy(&buf[..end]).to_lowercase()
    };
    assert!(head.contains("content-encoding: gzip"), "{head}");
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&#39;", "'").replace("&amp;", "&")
}

/// The ML pages after the taxi pipeline ran twice (called from the serving test, which has
/// trained, registered and promoted): models with the try-it and promote forms, experiments and
/// their comparison, datasets with statistics.
pub fn ml_pages_show_models_experiments_and_datasets(s: &TestServer) {
    let m = ok(s, "/models/taxi-duration");
    assert!(m.contains(r#"<span class="alias">production</span>"#), "{m}");
    assert!(m.contains("<th>eval_rmse</th>") && m.contains("blessed"), "{m}");
    assert!(m.contains(r#"data-try="/api/v1/models/taxi-duration/predict""#), "{m}");
    assert!(m.contains("pipeline taxi_small"), "the alias history names the pipeline: {m}");

    // "Try it" without JavaScript: the form's own example goes to the serving endpoint.
    let start = m.find("<textarea").unwrap();
    let example = &m[m[start..].find('>').unwrap() + start + 1..m.find("</textarea>").unwrap()];
    let example = unescape(example);
    assert!(example.contains("pickup_location_id"), "{example}");
    let body = format!("alias=production&input={}", mlbox_ui::pages::enc(&example));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .post(&format!("{}/ui/models/taxi-duration/try", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(body.as_str())
        .unwrap();
    let tried = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{tried}");
    let out = &tried[tried.find("try-output").unwrap()..];
    assert!(out.contains("\"predictions\"") && out.contains("\"version\""), "{out}");

    // Promote: refused without the confirmation, then done and recorded as the UI's move.
    let (_, mm) = s.get("/api/v1/models/taxi-duration");
    let v = mm["model"]["aliases"]["production"].as_i64().unwrap();
    assert_eq!(form(s, "/ui/models/taxi-duration/promote", &format!("version={v}&alias=staging&reason=ui")).0, 400);
    let (status, loc) = form(
        s,
        "/ui/models/taxi-duration/promote",
        &format!("version={v}&alias=staging&reason=from+the+ui&confirm=yes"),
    );
    assert_eq!((status, loc.as_str()), (303, "/models/taxi-duration"));
    let (_, h) = s.get("/api/v1/models/taxi-duration/history?alias=staging");
    assert_eq!(
        (h["history"][0]["actor"].as_str(), h["history"][0]["reason"].as_str()),
        (Some("ui"), Some("from the ui"))
    );
    let vp = ok(s, &format!("/models/taxi-duration/versions/{v}"));
    let row = &vp[vp.find(&format!(r#"id="v{v}""#)).expect("the version's row")..];
    assert!(row[..row.find('>').unwrap()].contains("current"), "the version is marked: {vp}");

    // A training run's page draws its loss curves.
    let (_, runs) = s.get("/api/v1/runs?pipeline=taxi_small");
    let rid = runs["runs"][0]["id"].as_i64().unwrap();
    let rp = ok(s, &format!("/runs/{rid}"));
    assert!(rp.contains("Training · train · experiment") && rp.contains("val_loss"), "{rp}");
    assert!(rp.contains(r#"<svg class="chart line""#), "{rp}");

    // Experiments: params and metrics as columns, sortable; two compared side by side.
    let (_, e) = s.get("/api/v1/experiments?pipeline=taxi_small");
    let ids: Vec<String> = e["experiments"].as_array().unwrap().iter().map(|x| x["id"].to_string()).collect();
    assert!(ids.len() >= 2, "{e}");
    let list = ok(s, "/experiments?order=-metrics.best_val_loss");
    assert!(list.contains("best_val_loss ↓") && list.contains(r#"name="ids""#), "{list}");
    let cmp = ok(s, &format!("/experiments/compare?ids={}&ids={}", ids[0], ids[1]));
    assert!(cmp.contains("<svg class=\"chart line\"") && cmp.contains("Params"), "{cmp}");
    assert!(cmp.contains(&format!("#{}", ids[0])) && cmp.contains(&format!("#{}", ids[1])));
    assert_eq!(page(s, "/experiments/compare?ids=1").0, 400, "one experiment is not a comparison");

    // Datasets: the list, one dataset's versions, schema and statistics as histograms.
    let dl = ok(s, "/datasets");
    let (_, ds) = s.get("/api/v1/datasets");
    let validated = ds["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .find(|n| s.get(&format!("/api/v1/datasets/{n}/versions/1/stats")).0 == 200);
    let name = validated.expect("the taxi pipeline validates a dataset");
    assert!(dl.contains(&format!(r#"href="/datasets/{name}""#)), "{dl}");
    let d = ok(s, &format!("/datasets/{name}?version=1"));
    assert!(d.contains("<h2>Schema</h2>") && d.contains(r#"<svg class="chart bars""#), "{d}");
}
