//! The mlbox web UI: Leptos components rendered to HTML on the server (no wasm, no hydration).
//! Every page is a function from the page's data (the same JSON the API serves) to a complete
//! HTML document. Pages work without JavaScript; `assets/app.js` adds live updates over
//! Server-Sent Events, confirmations and the model "try it" form. Charts are server-side SVG
//! (`svg`).

pub mod pages;
pub mod svg;

use leptos::prelude::*;
use serde_json::Value;

/// The sections in the header, with their paths.
pub const NAV: &[(&str, &str)] = &[
    ("Home", "/"),
    ("Pipelines", "/pipelines"),
    ("Runs", "/runs"),
    ("Experiments", "/experiments"),
    ("Datasets", "/datasets"),
    ("Models", "/models"),
];

/// What every page shares: its title, which header section is current, the search text, and
/// who is signed in (empty when authentication is off) with their session's CSRF token.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub title: String,
    pub section: &'static str,
    pub query: String,
    pub version: String,
    pub user: String,
    pub role: String,
    pub csrf: String,
}

/// The session's CSRF token, provided to every component of a page.
#[derive(Debug, Clone, Default)]
struct Csrf(String);

/// The hidden field every state-changing form carries (empty without a browser session).
pub fn csrf_field() -> impl IntoView {
    let token = use_context::<Csrf>().unwrap_or_default().0;
    (!token.is_empty()).then(|| view! { <input type="hidden" name="csrf" value=token/> })
}

/// A complete HTML document around `body`, rendered inside its own reactive owner (dropped
/// afterwards, so nothing a component creates outlives the request).
pub fn document<V: IntoView + 'static>(frame: Frame, body: impl FnOnce() -> V) -> String {
    let owner = Owner::new();
    let html = owner.with(move || {
        let Frame { title, section, query, version, user, role, csrf } = frame;
        provide_context(Csrf(csrf.clone()));
        let who = (!user.is_empty()).then(|| {
            let label = format!("{user} ({role})");
            view! {
                <form class="who" method="post" action="/logout">
                    {(role == "admin").then(|| view! { <a href="/admin/audit">"Audit log"</a> })}
                    <span>{label}</span>
                    {csrf_field()}
                    <button type="submit">"Log out"</button>
                </form>
            }
        });
        let nav = NAV
            .iter()
            .map(|(label, href)| {
                let class = if *label == section { "active" } else { "" };
                view! { <a href=*href class=class>{*label}</a> }
            })
            .collect_view();
        let css = format!("/static/app.css?v={version}");
        let js = format!("/static/app.js?v={version}");
        view! {
            <!DOCTYPE html>
            <html lang="en">
                <head>
                    <meta charset="utf-8"/>
                    <meta name="viewport" content="width=device-width, initial-scale=1"/>
                    <title>{format!("{title} · mlbox")}</title>
                    <link rel="icon" type="image/svg+xml" href="/static/favicon.svg"/>
                    <link rel="stylesheet" href=css/>
                    <meta name="csrf-token" content=csrf/>
                    <script defer src=js></script>
                </head>
                <body>
                    <header class="top">
                        <a class="brand" href="/">
                            <img src="/static/favicon.svg" alt="" width="22" height="22"/>
                            <span>"mlbox"</span>
                        </a>
                        <nav>{nav}</nav>
                        <form class="search" action="/search" method="get" role="search">
                            <input
                                type="search"
                                name="q"
                                value=query
                                placeholder="Search pipelines, runs, logs, models…"
                                aria-label="Search"
                            />
                        </form>
                        {who}
                    </header>
                    <main>{body()}</main>
                    <footer>
                        {format!("mlbox {version} · ")}
                        <a href="/api/v1/version">"API"</a>
                    </footer>
                </body>
            </html>
        }
        .to_html()
    });
    drop(owner);
    html
}

/// `v[key]` as text ("" when absent; numbers and booleans as written).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A timestamp in µs since the epoch as "2026-11-25 18:40:12" (UTC).
pub fn when(us: &Value) -> String {
    us.as_i64()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "–".into())
}

/// How long from `start` to `end` (µs), or "–".
pub fn took(start: &Value, end: &Value) -> String {
    match (start.as_i64(), end.as_i64()) {
        (Some(s), Some(e)) => svg::duration((e - s) as f64 / 1e6),
        _ => "–".into(),
    }
}

/// A number with up to 4 significant decimals.
pub fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
        Some(f) if f.abs() >= 1000.0 => format!("{f:.1}"),
        Some(f) => format!("{f:.4}"),
        None => text(v),
    }
}

/// A state as a coloured badge; `data-state-of` lets the live script update it in place.
pub fn badge(state: String, live_key: Option<String>) -> impl IntoView {
    let class = format!("badge st-{state}");
    view! { <span class=class data-state-of=live_key>{state}</span> }
}

/// A page's heading with an optional subtitle and actions on the right.
pub fn heading(title: String, sub: Option<String>) -> impl IntoView {
    view! {
        <div class="heading">
            <h1>{title}</h1>
            {sub.map(|s| view! { <p class="sub">{s}</p> })}
        </div>
    }
}

/// An empty-state box.
pub fn empty(msg: &'static str) -> impl IntoView {
    view! { <p class="empty">{msg}</p> }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_the_shell_and_escapes_text() {
        let f = Frame {
            title: "Runs <x>".into(),
            section: "Runs",
            query: "a\"b".into(),
            version: "1.2.3".into(),
            ..Default::default()
        };
        let html = document(f, || view! { <p>"body <b>"</p> });
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(html.contains("<title>Runs &lt;x&gt; · mlbox</title>"), "{html}");
        assert!(html.contains(r#"href="/runs" class="active""#), "{html}");
        assert!(html.contains(r#"value="a&quot;b""#), "{html}");
        assert!(html.contains("body &lt;b&gt;"), "{html}");
        assert!(html.contains("/static/app.css?v=1.2.3"));
    }

    #[test]
    fn values_format_for_people() {
        assert_eq!(when(&serde_json::json!(0)), "1970-01-01 00:00:00");
        assert_eq!(took(&serde_json::json!(0), &serde_json::json!(1_500_000)), "1.5 s");
        assert_eq!(num(&serde_json::json!(0.123456)), "0.1235");
        assert_eq!(num(&serde_json::json!(12)), "12");
    }
}
