//! The UI in a real browser: Debian's chromium, driven by playwright-core (e2e/ui.test.mjs),
//! against the real server with the small taxi pipeline loaded and sign-in on. A new user's path:
//! login → home →
//! trigger → the run reaching success live → a task log → search → promote → try it. A
//! screenshot of every page is saved under `$CARGO_TARGET_TMPDIR/ui-screenshots/`.

use std::path::Path;
use std::process::Command;

use crate::common::*;

#[test]
fn a_new_user_clicks_through_the_ui_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the browser tests need chromium: `apt-get install -y --no-install-recommends chromium fonts-liberation` (.ci/run installs it)"
    );
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "the browser tests need playwright-core: run `npm ci` in e2e/ (.ci/run does)"
    );
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);

    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_auth(dir.path(), "e2e-admin-password");
    let pipeline = crate::serving::taxi_serving_pipeline();
    let (st, _, text) = s.call("POST", "/api/v1/pipelines", Some(&s.local_token()), &[], Some(pipeline.as_bytes()));
    assert_eq!(st, 201, "{text}");
    let out = Command::new("node")
        .arg("--test")
        .arg("--test-reporter=spec")
        .arg(e2e.join("ui.test.mjs"))
        .env("BASE_URL", &s.base)
        .env("MLBOX_PASSWORD", "e2e-admin-password")
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node (the browser tests need Node.js 18 or newer)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test failed:\n{text}");
    let saved = std::fs::read_dir(&shots).map(|d| d.count()).unwrap_or(0);
    assert!(saved >= 17, "expected a screenshot of every page in {}, found {saved}", shots.display());
    eprintln!("UI screenshots: {}", shots.display());
}
