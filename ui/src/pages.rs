//! One function per page: the page's data (JSON assembled by the server from the same queries
//! the API uses) → a complete HTML document. Forms post to `/ui/...` routes that redirect back,
//! so every action works without JavaScript.

use std::collections::{BTreeMap, BTreeSet};

use leptos::either::Either;
use leptos::prelude::*;
use serde_json::Value;

use crate::svg::{self, Series};
use crate::{Frame, badge, csrf_field, document, empty, heading, num, text, took, when};

/// A value for a URL query string.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn arr(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn run_link(id: &Value) -> impl IntoView + use<> {
    let href = format!("/runs/{}", text(id));
    view! { <a href=href>{format!("#{}", text(id))}</a> }
}

fn pipeline_link(name: String) -> impl IntoView {
    let href = format!("/pipelines/{name}");
    view! { <a href=href>{name}</a> }
}

/// Recent runs as coloured squares, oldest left (Airflow's grid).
fn squares(recent: Vec<Value>) -> impl IntoView {
    let cells = recent
        .into_iter()
        .rev()
        .map(|r| {
            let href = format!("/runs/{}", text(&r["id"]));
            let class = format!("sq st-{}", text(&r["state"]));
            let title = format!("run {} · {} · {}", text(&r["id"]), text(&r["state"]), when(&r["created_at"]));
            let key = format!("run:{}", text(&r["id"]));
            view! { <a href=href class=class title=title data-state-of=key></a> }
        })
        .collect_view();
    view! { <span class="squares">{cells}</span> }
}

fn runs_table(runs: Vec<Value>, show_pipeline: bool) -> impl IntoView {
    if runs.is_empty() {
        return Either::Left(empty("No runs yet."));
    }
    let rows = runs
        .into_iter()
        .map(|r| {
            let key = format!("run:{}", text(&r["id"]));
            view! {
                <tr>
                    <td>{run_link(&r["id"])}</td>
                    {show_pipeline.then(|| view! { <td>{pipeline_link(text(&r["pipeline"]))}</td> })}
                    <td>{badge(text(&r["state"]), Some(key))}</td>
                    <td>{text(&r["trigger"])}</td>
                    <td class="num">{when(&r["created_at"])}</td>
                    <td class="num">{took(&r["started_at"], &r["finished_at"])}</td>
                </tr>
            }
        })
        .collect_view();
    Either::Right(view! {
        <table class="grid-table">
            <thead>
                <tr>
                    <th>"Run"</th>
                    {show_pipeline.then(|| view! { <th>"Pipeline"</th> })}
                    <th>"State"</th>
                    <th>"Trigger"</th>
                    <th>"Created (UTC)"</th>
                    <th>"Duration"</th>
                </tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
    })
}

/// `/`: counts, failing pipelines first, recent runs, models in production.
pub fn home(frame: Frame, d: &Value) -> String {
    let d = d.clone();
    document(frame, move || {
        let c = &d["counts"];
        let stat = |label: &'static str, v: &Value, href: &'static str, class: &'static str| {
            let n = text(v);
            view! {
                <a class=format!("stat {class}") href=href>
                    <b>{n}</b>
                    <span>{label}</span>
                </a>
            }
        };
        let failing = arr(&d["failing"]);
        let failing_view = if failing.is_empty() {
            Either::Left(view! { <p class="ok-note">"No pipeline's latest run failed."</p> })
        } else {
            Either::Right(
                failing
                    .into_iter()
                    .map(|p| {
                        let name = text(&p["name"]);
                        view! {
                            <li>
                                {pipeline_link(name)}
                                " — run "
                                {run_link(&p["last_run"]["id"])}
                                " failed "
                                <span class="muted">{when(&p["last_run"]["created_at"])}</span>
                                {squares(arr(&p["recent"]))}
                            </li>
                        }
                    })
                    .collect_view(),
            )
        };
        let prod = arr(&d["production"]);
        let prod_view = if prod.is_empty() {
            Either::Left(empty("No model serves under an alias yet."))
        } else {
            Either::Right(
                prod.into_iter()
                    .map(|m| {
                        let href = format!("/models/{}", text(&m["model"]));
                        view! {
                            <tr>
                                <td><a href=href>{text(&m["model"])}</a></td>
                                <td><span class="alias">{text(&m["alias"])}</span></td>
                                <td class="num">{format!("v{}", text(&m["version"]))}</td>
                                <td>{text(&m["summary"])}</td>
                            </tr>
                        }
                    })
                    .collect_view(),
            )
        };
        view! {
            {heading("Overview".into(), None)}
            <section class="stats">
                {stat("pipelines", &c["pipelines"], "/pipelines", "")}
                {stat("runs", &c["runs"], "/runs", "")}
                {stat("running", &c["running"], "/runs?state=running", "stat-running")}
                {stat("failed (24 h)", &c["failed"], "/runs?state=failed", "stat-failed")}
                {stat("models", &c["models"], "/models", "")}
                {stat("datasets", &c["datasets"], "/datasets", "")}
            </section>
            <div class="cols">
                <section class="card">
                    <h2>"Failing pipelines"</h2>
                    <ul class="failing">{failing_view}</ul>
                </section>
                <section class="card">
                    <h2>"Models serving"</h2>
                    <table class="grid-table"><tbody>{prod_view}</tbody></table>
                </section>
            </div>
            <section class="card" data-live-runs="1">
                <h2>"Recent runs"</h2>
                {runs_table(arr(&d["recent_runs"]), true)}
            </section>
        }
    })
}

fn trigger_form(name: &str, params: Vec<Value>) -> impl IntoView + use<> {
    let action = format!("/ui/pipelines/{name}/trigger");
    let fields = params
        .into_iter()
        .map(|p| {
            let field = format!("param.{}", text(&p["name"]));
            let label = format!("{} ({})", text(&p["name"]), text(&p["type"]));
            view! {
                <label>
                    <span>{label}</span>
                    <input name=field value=text(&p["default"])/>
                </label>
            }
        })
        .collect_view();
    view! {
        <details class="trigger">
            <summary class="button primary">"Trigger"</summary>
            <form method="post" action=action class="params">{csrf_field()}
                {fields}
                <button type="submit" class="primary">"Start run"</button>
            </form>
        </details>
    }
}

fn pause_button(name: &str, paused: bool) -> impl IntoView + use<> {
    let (verb, label) = if paused { ("unpause", "Unpause") } else { ("pause", "Pause") };
    let action = format!("/ui/pipelines/{name}/{verb}");
    view! {
        <form method="post" action=action class="inline">{csrf_field()}
            <button type="submit">{label}</button>
        </form>
    }
}

/// `/pipelines`: schedule, next run, recent runs as squares, pause and trigger.
pub fn pipelines(frame: Frame, d: &Value) -> String {
    let list = arr(&d["pipelines"]);
    document(frame, move || {
        let rows = list
            .into_iter()
            .map(|p| {
                let name = text(&p["name"]);
                let paused = p["paused"].as_bool().unwrap_or(false);
                let schedule = if p["schedule"].is_null() { "manual".to_string() } else { text(&p["schedule"]) };
                view! {
                    <tr>
                        <td>
                            {pipeline_link(name.clone())}
                            <div class="muted small">{text(&p["description"])}</div>
                        </td>
                        <td><code>{schedule}</code>{paused.then(|| view! { <span class="badge st-paused">"paused"</span> })}</td>
                        <td class="num">{if paused { "–".to_string() } else { when(&p["next_logical"]) }}</td>
                        <td>{squares(arr(&p["recent"]))}</td>
                        <td class="actions">{pause_button(&name, paused)}{trigger_form(&name, arr(&p["params"]))}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            {heading("Pipelines".into(), Some("Schedules, recent runs (oldest left) and actions.".into()))}
            <table class="grid-table" data-live-runs="1">
                <thead>
                    <tr><th>"Pipeline"</th><th>"Schedule"</th><th>"Next run (UTC)"</th><th>"Recent runs"</th><th></th></tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        }
    })
}

/// The DAG of a pipeline's tasks, coloured by the states in `run` (the run detail JSON).
fn dag_of(tasks: &[Value], run: Option<&Value>) -> String {
    let state = |id: &str| -> String {
        run.and_then(|r| r["tasks"].as_array())
            .and_then(|ts| {
                let mine: Vec<&Value> = ts.iter().filter(|t| t["task_id"] == id).collect();
                // A fanned-out task shows its worst instance.
                let order = [
                    "failed",
                    "upstream_failed",
                    "running",
                    "up_for_retry",
                    "queued",
                    "pending",
                    "cancelled",
                    "skipped",
                    "success",
                ];
                order.iter().find(|s| mine.iter().any(|t| t["state"] == **s)).map(|s| s.to_string())
            })
            .unwrap_or_else(|| "none".into())
    };
    let run_id = run.map(|r| text(&r["run"]["id"]));
    let nodes: Vec<svg::Node> = tasks
        .iter()
        .map(|t| {
            let id = text(&t["id"]);
            svg::Node {
                state: state(&id),
                op: text(&t["op"]),
                href: run_id.as_ref().map(|r| format!("/runs/{r}?task={id}#log")),
                id,
            }
        })
        .collect();
    let edges: Vec<(String, String)> =
        tasks.iter().flat_map(|t| arr(&t["depends_on"]).into_iter().map(move |d| (text(&d), text(&t["id"])))).collect();
    svg::dag(&nodes, &edges)
}

/// `/pipelines/{name}`: the DAG coloured by the selected run, run history, the spec.
pub fn pipeline(frame: Frame, d: &Value) -> String {
    let d = d.clone();
    document(frame, move || {
        let p = &d["pipeline"];
        let name = text(&p["name"]);
        let paused = p["paused"].as_bool().unwrap_or(false);
        let selected = d.get("selected").filter(|s| !s.is_null());
        let graph = dag_of(&arr(&d["tasks"]), selected);
        let caption = match selected {
            Some(s) => format!("States of run #{} ({}).", text(&s["run"]["id"]), text(&s["run"]["state"])),
            None => "No run yet.".to_string(),
        };
        let all_runs = format!("/runs?pipeline={}", enc(&name));
        // Oldest left; failed runs highlighted.
        let bars: Vec<(String, f64, bool)> = arr(&d["recent_runs"])
            .iter()
            .rev()
            .filter_map(|r| {
                let secs = (r["finished_at"].as_i64()? - r["started_at"].as_i64()?) as f64 / 1e6;
                Some((format!("#{}", text(&r["id"])), secs, r["state"] == "failed"))
            })
            .collect();
        let durations = svg::bars(&bars, 150.0);
        let schedule = if p["schedule"].is_null() { "manual".to_string() } else { text(&p["schedule"]) };
        let description = text(&p["description"]);
        let sub = if description.is_empty() {
            format!("schedule {schedule}")
        } else {
            format!("{description} · schedule {schedule}")
        };
        view! {
            <div class="title-row">
                {heading(name.clone(), Some(sub))}
                <div class="actions">{pause_button(&name, paused)}{trigger_form(&name, arr(&d["params"]))}</div>
            </div>
            <section class="card">
                <h2>"Graph"</h2>
                <div class="dag-wrap" inner_html=graph></div>
                <p class="muted small">{caption}</p>
            </section>
            <section class="card">
                <h2>"Run durations (seconds)"</h2>
                <div inner_html=durations></div>
            </section>
            <section class="card" data-live-runs="1">
                <h2>"Runs"</h2>
                {runs_table(arr(&d["recent_runs"]), false)}
                <p class="pager"><a href=all_runs>"All runs of this pipeline →"</a></p>
            </section>
            <section class="card">
                <h2>"Spec"</h2>
                <pre class="code">{text(&d["yaml"])}</pre>
            </section>
        }
    })
}

/// `/runs`: every run, newest first, filtered by pipeline and state, paginated by cursor.
pub fn runs(frame: Frame, d: &Value) -> String {
    let d = d.clone();
    document(frame, move || {
        let states = ["", "queued", "running", "success", "failed", "cancelled"];
        let current = text(&d["filter"]["state"]);
        let pipeline = text(&d["filter"]["pipeline"]);
        let options = states
            .iter()
            .map(|s| {
                let label = if s.is_empty() { "any state" } else { s };
                view! { <option value=*s selected=current == *s>{label}</option> }
            })
            .collect_view();
        let next = d["next_cursor"].as_i64().map(|c| {
            let href = format!("/runs?cursor={c}&state={}&pipeline={}", enc(&current), enc(&pipeline));
            view! { <a class="button" href=href>"Older runs →"</a> }
        });
        view! {
            {heading("Runs".into(), None)}
            <form class="filters" method="get" action="/runs">
                <input name="pipeline" placeholder="pipeline" value=pipeline.clone()/>
                <select name="state">{options}</select>
                <button type="submit">"Filter"</button>
            </form>
            <section class="card" data-live-runs="1">{runs_table(arr(&d["runs"]), true)}</section>
            <p class="pager">{next}</p>
        }
    })
}

/// Task instances a run page draws (a large fan-out is summarised; the API has them all).
const MAX_TASKS: usize = 300;

/// `/runs/{id}`: state, graph, timeline, tasks, the selected task's log (live), loss curves,
/// outputs, artifacts, params; cancel and resume.
pub fn run(frame: Frame, d: &Value) -> String {
    let d = d.clone();
    document(frame, move || {
        let r = &d["run"];
        let id = text(&r["id"]);
        let state = text(&r["state"]);
        let live = matches!(state.as_str(), "queued" | "running").then(|| id.clone());
        let graph = dag_of(&arr(&d["pipeline_tasks"]), Some(&d));
        let now = d["now"].as_i64().unwrap_or(0);
        let all_tasks = arr(&d["tasks"]);
        let shown = all_tasks.len().min(MAX_TASKS);
        let more = (all_tasks.len() > MAX_TASKS)
            .then(|| format!("The first {MAX_TASKS} of {} task instances; the API lists them all.", all_tasks.len()));
        let spans: Vec<svg::Span> = all_tasks[..shown]
            .iter()
            .flat_map(|t| {
                let label = task_label(t);
                let run_id = id.clone();
                arr(&t["attempts"]).into_iter().map(move |a| svg::Span {
                    label: if a["try_number"].as_i64().unwrap_or(1) > 1 {
                        format!("{label} (try {})", text(&a["try_number"]))
                    } else {
                        label.clone()
                    },
                    start: a["started_at"].as_i64().unwrap_or(0),
                    end: a["finished_at"].as_i64(),
                    state: text(&a["state"]),
                    href: Some(format!("/runs/{run_id}?{}#log", log_query(t, &a["try_number"]))),
                })
            })
            .collect();
        let gantt = svg::gantt(&spans, now);
        let cancel = matches!(state.as_str(), "queued" | "running").then(|| {
            let action = format!("/ui/runs/{id}/cancel");
            view! { <form method="post" action=action class="inline" data-confirm="Cancel this run? Running tasks are stopped.">{csrf_field()}<button type="submit" class="danger">"Cancel"</button></form> }
        });
        let resume = matches!(state.as_str(), "failed" | "cancelled").then(|| {
            let action = format!("/ui/runs/{id}/resume");
            view! { <form method="post" action=action class="inline">{csrf_field()}<button type="submit">"Resume"</button></form> }
        });
        let tasks = all_tasks[..shown]
            .iter()
            .map(|t| {
                let key = format!("task:{}:{}", text(&t["task_id"]), text(&t["map_index"]));
                let href = format!("/runs/{}?{}#log", text(&d["run"]["id"]), log_query(t, &t["try_number"]));
                let outputs = if t["outputs"].is_null() { String::new() } else { serde_json::to_string_pretty(&t["outputs"]).unwrap_or_default() };
                let has_outputs = !outputs.is_empty();
                view! {
                    <tr>
                        <td><a href=href>{task_label(t)}</a></td>
                        <td>{badge(text(&t["state"]), Some(key))}</td>
                        <td class="num">{format!("{}/{}", text(&t["try_number"]), text(&t["max_tries"]))}</td>
                        <td class="num">{took(&t["started_at"], &t["finished_at"])}</td>
                        <td class="error">{text(&t["error"])}</td>
                        <td>{has_outputs.then(|| view! { <details><summary>"outputs"</summary><pre class="code small">{outputs}</pre></details> })}</td>
                    </tr>
                }
            })
            .collect_view();
        let artifacts = arr(&d["artifacts"]);
        let artifacts_view = if artifacts.is_empty() {
            Either::Left(empty("No artifacts."))
        } else {
            Either::Right(view! {
                <ul class="artifacts">
                    {artifacts
                        .into_iter()
                        .map(|a| {
                            let href = format!("/api/v1/runs/{}/artifacts/{}", text(&d["run"]["id"]), text(&a["id"]));
                            view! {
                                <li>
                                    <a href=href download="">{text(&a["name"])}</a>
                                    <span class="muted small">{format!(" · {} · {} bytes", text(&a["task_id"]), text(&a["size"]))}</span>
                                </li>
                            }
                        })
                        .collect_view()}
                </ul>
            })
        };
        let params = serde_json::to_string_pretty(&r["params"]).unwrap_or_default();
        // Loss curves: every metric each training task logged per epoch.
        let training = arr(&d["experiments"])
            .into_iter()
            .map(|e| {
                // Losses share a scale; other metrics (e.g. samples/s) would flatten them.
                let all: Vec<(String, Value)> =
                    e["histories"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
                let losses = all.iter().any(|(k, _)| k.contains("loss"));
                let series: Vec<Series> = all
                    .into_iter()
                    .filter(|(k, _)| !losses || k.contains("loss"))
                    .map(|(k, pts)| Series {
                        label: k,
                        points: arr(&pts).iter().filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?))).collect(),
                    })
                    .collect();
                let chart = svg::line_chart(&series, "epoch", 220.0);
                let title = format!("Training · {} · experiment {}", text(&e["task_id"]), text(&e["id"]));
                view! { <section class="card"><h2>{title}</h2><div inner_html=chart></div></section> }
            })
            .collect_view();
        let log = &d["log"];
        let log_view = (!log.is_null()).then(|| {
            let title = format!("Log · {} · try {}", text(&log["label"]), text(&log["try"]));
            let follow = (!log["finished"].as_bool().unwrap_or(true)).then(|| text(&log["follow"]));
            view! {
                <section class="card" id="log">
                    <h2>{title}</h2>
                    <pre class="log" data-follow=follow>{text(&log["text"])}</pre>
                </section>
            }
        });
        let sub =
            format!("{} · {} · logical date {}", text(&r["pipeline"]), text(&r["trigger"]), when(&r["logical_date"]));
        let title = format!("Run #{id}");
        let run_key = format!("run:{id}");
        view! {
            <div class="title-row" data-live-run=live>
                {heading(title, Some(sub))}
                <div class="actions">{badge(state.clone(), Some(run_key))}{cancel}{resume}</div>
            </div>
            {(!text(&r["error"]).is_empty()).then(|| view! { <p class="error-box">{text(&r["error"])}</p> })}
            <section class="card">
                <h2>"Graph"</h2>
                <div class="dag-wrap" inner_html=graph></div>
            </section>
            <section class="card">
                <h2>"Timeline"</h2>
                <div inner_html=gantt></div>
            </section>
            <section class="card">
                <h2>"Tasks"</h2>
                <table class="grid-table">
                    <thead><tr><th>"Task"</th><th>"State"</th><th>"Try"</th><th>"Duration"</th><th>"Error"</th><th></th></tr></thead>
                    <tbody>{tasks}</tbody>
                </table>
                {more.map(|m| view! { <p class="muted small">{m}</p> })}
            </section>
            {log_view}
            {training}
            <div class="cols">
                <section class="card"><h2>"Params"</h2><pre class="code">{params}</pre></section>
                <section class="card"><h2>"Artifacts"</h2>{artifacts_view}</section>
            </div>
        }
    })
}

fn task_label(t: &Value) -> String {
    let m = t["map_index"].as_i64().unwrap_or(-1);
    if m >= 0 { format!("{}[{m}]", text(&t["task_id"])) } else { text(&t["task_id"]) }
}

fn log_query(t: &Value, try_number: &Value) -> String {
    format!("task={}&map_index={}&try={}", text(&t["task_id"]), text(&t["map_index"]), text(try_number))
}

/// `/experiments`: tracked training runs with params and metrics as columns; sort by a column,
/// filter with conditions, tick several to compare.
pub fn experiments(frame: Frame, d: &Value) -> String {
    let d = d.clone();
    document(frame, move || {
        let list = arr(&d["experiments"]);
        let n_rows = list.len();
        let mut pkeys = BTreeSet::new();
        let mut mkeys = BTreeSet::new();
        for e in &list {
            pkeys.extend(
                e["params"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| !v.is_object() && !v.is_array())
                    .map(|(k, _)| k.clone()),
            );
            mkeys.extend(e["metrics"].as_object().into_iter().flatten().map(|(k, _)| k.clone()));
        }
        let pkeys: Vec<String> = pkeys.into_iter().take(8).collect();
        let mkeys: Vec<String> = mkeys.into_iter().filter(|k| !k.starts_with("epoch")).take(10).collect();
        let order = text(&d["order"]);
        let filter = text(&d["where"]);
        let pipeline = text(&d["pipeline"]);
        let sort_link = |field: String, label: String| {
            let desc = order == field;
            let next = if desc { format!("-{field}") } else { field.clone() };
            let arrow = if order == field {
                " ↑"
            } else if order == format!("-{field}") {
                " ↓"
            } else {
                ""
            };
            let href = format!("/experiments?order={}&where={}&pipeline={}", enc(&next), enc(&filter), enc(&pipeline));
            view! { <th><a href=href>{format!("{label}{arrow}")}</a></th> }
        };
        let head = view! {
            <tr>
                <th></th>
                {sort_link("id".into(), "#".into())}
                <th>"Run"</th>
                <th>"Pipeline · task"</th>
                <th>"State"</th>
                {pkeys.iter().map(|k| sort_link(format!("params.{k}"), k.clone())).collect_view()}
                {mkeys.iter().map(|k| sort_link(format!("metrics.{k}"), k.clone())).collect_view()}
            </tr>
        };
        let rows = list
            .into_iter()
            .map(|e| {
                let id = text(&e["id"]);
                view! {
                    <tr>
                        <td><input type="checkbox" name="ids" value=id.clone() form="compare" aria-label="compare"/></td>
                        <td class="num">{id}</td>
                        <td>{run_link(&e["run_id"])}</td>
                        <td>{format!("{} · {}", text(&e["pipeline"]), text(&e["task_id"]))}</td>
                        <td>{badge(text(&e["state"]), None)}</td>
                        {pkeys.iter().map(|k| view! { <td class="num">{text(&e["params"][k])}</td> }).collect_view()}
                        {mkeys.iter().map(|k| view! { <td class="num">{num(&e["metrics"][k])}</td> }).collect_view()}
                    </tr>
                }
            })
            .collect_view();
        view! {
            {heading("Experiments".into(), Some("Every training task is tracked. Tick two or more to compare.".into()))}
            <form class="filters" method="get" action="/experiments">
                <input name="pipeline" placeholder="pipeline" value=pipeline.clone()/>
                <input name="where" class="wide" placeholder="metrics.val_loss<0.3, params.hidden=64" value=filter.clone()/>
                <input type="hidden" name="order" value=order.clone()/>
                <button type="submit">"Filter"</button>
            </form>
            {(!text(&d["error"]).is_empty()).then(|| view! { <p class="error-box">{text(&d["error"])}</p> })}
            {(n_rows >= 200).then(|| view! { <p class="muted small">"The first 200 by this order; filter to narrow them down."</p> })}
            <form id="compare" method="get" action="/experiments/compare">
                <button type="submit" class="primary">"Compare selected"</button>
            </form>
            <div class="scroll">
                <table class="grid-table">
                    <thead>{head}</thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
        }
    })
}

/// `/experiments/compare`: params side by side (differences marked), metrics, and every
/// logged metric's history overlaid per experiment.
pub fn compare(frame: Frame, d: &Value) -> String {
    let d = d.clone();
    document(frame, move || {
        let list = arr(&d["experiments"]);
        let header = list
            .iter()
            .map(|e| view! { <th>{format!("#{} · run {}", text(&e["id"]), text(&e["run_id"]))}</th> })
            .collect_view();
        let keys = |field: &str| -> Vec<String> {
            let mut k = BTreeSet::new();
            for e in &list {
                k.extend(e[field].as_object().into_iter().flatten().map(|(k, _)| k.clone()));
            }
            k.into_iter().collect()
        };
        let table = |field: &'static str, values: fn(&Value) -> String| {
            keys(field)
                .into_iter()
                .map(|k| {
                    let cells: Vec<String> = list.iter().map(|e| values(&e[field][&k])).collect();
                    let differs = cells.iter().collect::<BTreeSet<_>>().len() > 1;
                    view! {
                        <tr class:differs=differs>
                            <th>{k}</th>
                            {cells.into_iter().map(|c| view! { <td class="num">{c}</td> }).collect_view()}
                        </tr>
                    }
                })
                .collect_view()
        };
        let params = table("params", |v| if v.is_object() || v.is_array() { v.to_string() } else { text(v) });
        let metrics = table("metrics", num);
        let mut charts: BTreeMap<String, Vec<Series>> = BTreeMap::new();
        for e in &list {
            let id = text(&e["id"]);
            for (key, points) in d["histories"][&id].as_object().into_iter().flatten() {
                let pts = arr(points).iter().filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?))).collect();
                charts.entry(key.clone()).or_default().push(Series { label: format!("#{id}"), points: pts });
            }
        }
        let charts = charts
            .into_iter()
            .map(|(key, series)| {
                let svg = svg::line_chart(&series, "epoch", 220.0);
                view! { <section class="card"><h2>{key}</h2><div inner_html=svg></div></section> }
            })
            .collect_view();
        view! {
            {heading("Compare experiments".into(), Some("Rows that differ are marked.".into()))}
            <div class="scroll">
                <table class="grid-table compare">
                    <thead><tr><th></th>{header}</tr></thead>
                    <tbody>
                        <tr class="group"><th colspan="99">"Params"</th></tr>
                        {params}
                        <tr class="group"><th colspan="99">"Metrics"</th></tr>
                        {metrics}
                    </tbody>
                </table>
            </div>
            <div class="chart-grid">{charts}</div>
        }
    })
}

/// `/datasets`: the latest version of each dataset.
pub fn datasets(frame: Frame, d: &Value) -> String {
    let list = arr(&d["datasets"]);
    document(frame, move || {
        let rows = list
            .into_iter()
            .map(|ds| {
                let href = format!("/datasets/{}", text(&ds["name"]));
                let cols = ds["schema"].as_object().map(|m| m.len()).unwrap_or(0);
                view! {
                    <tr>
                        <td><a href=href>{text(&ds["name"])}</a></td>
                        <td class="num">{format!("v{}", text(&ds["version"]))}</td>
                        <td class="num">{text(&ds["rows"])}</td>
                        <td class="num">{cols}</td>
                        <td class="muted small">{text(&ds["source"])}</td>
                        <td class="num">{when(&ds["created_at"])}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            {heading("Datasets".into(), Some("Latest version of each; every version keeps its content hash and schema.".into()))}
            <table class="grid-table">
                <thead><tr><th>"Dataset"</th><th>"Latest"</th><th>"Rows"</th><th>"Columns"</th><th>"Source"</th><th>"Created (UTC)"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        }
    })
}

/// `/datasets/{name}`: versions, schema, and the selected version's statistics from `validate`
/// as histograms and tables, anomalies highlighted.
pub fn dataset(frame: Frame, d: &Value) -> String {
    let d = d.clone();
    document(frame, move || {
        let name = text(&d["name"]);
        let selected = d["version"].as_i64().unwrap_or(0);
        let versions = arr(&d["versions"])
            .into_iter()
            .map(|v| {
                let href = format!("/datasets/{name}?version={}", text(&v["version"]));
                let current = v["version"].as_i64() == Some(selected);
                view! {
                    <tr class:current=current>
                        <td><a href=href>{format!("v{}", text(&v["version"]))}</a></td>
                        <td class="num">{text(&v["rows"])}</td>
                        <td><code class="small">{text(&v["sha256"]).chars().take(12).collect::<String>()}</code></td>
                        <td>{v["run_id"].as_i64().map(|r| run_link(&Value::from(r)))}</td>
                        <td class="num">{when(&v["created_at"])}</td>
                    </tr>
                }
            })
            .collect_view();
        let schema_of = arr(&d["versions"])
            .into_iter()
            .find(|v| v["version"].as_i64() == Some(selected))
            .map(|v| v["schema"].clone())
            .unwrap_or(Value::Null);
        let stats = &d["stats"];
        let anomalies = arr(&stats["anomalies"]);
        let hot: BTreeSet<String> = anomalies.iter().map(|a| text(&a["column"])).collect();
        let anomaly_view = (!anomalies.is_empty()).then(|| {
            view! {
                <section class="card warn">
                    <h2>{format!("Anomalies ({})", anomalies.len())}</h2>
                    <ul>{anomalies.iter().map(|a| view! { <li><b>{text(&a["column"])}</b>{format!(" · {} · {}", text(&a["kind"]), text(&a["message"]))}</li> }).collect_view()}</ul>
                </section>
            }
        });
        let columns = arr(&stats["statistics"]["columns"]);
        let stats_view = if stats.is_null() {
            Either::Left(
                view! { <section class="card">{empty("No statistics for this version: a `validate` task computes them.")}</section> },
            )
        } else {
            Either::Right(
                columns
                    .into_iter()
                    .map(|c| {
                        let col = text(&c["name"]);
                        let is_hot = hot.contains(&col);
                        let bars: Vec<(String, f64, bool)> = match c["histogram"].as_object() {
                            Some(h) => {
                                let edges = arr(&h["edges"]);
                                arr(&h["counts"]).iter().enumerate().map(|(i, n)| (svg::short(edges.get(i).and_then(Value::as_f64).unwrap_or(0.0)), n.as_f64().unwrap_or(0.0), false)).collect()
                            }
                            None => arr(&c["top"]).iter().map(|t| (text(&t[0]), t[1].as_f64().unwrap_or(0.0), false)).collect(),
                        };
                        let chart = svg::bars(&bars, 140.0);
                        view! {
                            <section class="card column" class:hot=is_hot>
                                <h3>{col}<span class="muted small">{format!(" {} · {}", text(&c["dtype"]), text(&c["kind"]))}</span></h3>
                                <div inner_html=chart></div>
                                <table class="kv">
                                    <tr><th>"count"</th><td>{text(&c["count"])}</td><th>"nulls"</th><td>{format!("{} ({})", text(&c["nulls"]), num(&c["null_rate"]))}</td></tr>
                                    <tr><th>"min"</th><td>{num(&c["min"])}</td><th>"max"</th><td>{num(&c["max"])}</td></tr>
                                    <tr><th>"mean"</th><td>{num(&c["mean"])}</td><th>"std"</th><td>{num(&c["std"])}</td></tr>
                                    <tr><th>"distinct"</th><td>{text(&c["distinct"])}</td><th></th><td></td></tr>
                                </table>
                            </section>
                        }
                    })
                    .collect_view(),
            )
        };
        let schema = schema_of
            .as_object()
            .map(|m| m.iter().map(|(k, v)| view! { <tr class:hot=hot.contains(k)><td>{k.clone()}</td><td><code>{text(v)}</code></td></tr> }).collect_view());
        view! {
            {heading(name.clone(), Some(format!("Version {selected}")))}
            <div class="cols">
                <section class="card">
                    <h2>"Versions"</h2>
                    <table class="grid-table">
                        <thead><tr><th>"Version"</th><th>"Rows"</th><th>"SHA-256"</th><th>"Run"</th><th>"Created (UTC)"</th></tr></thead>
                        <tbody>{versions}</tbody>
                    </table>
                </section>
                <section class="card">
                    <h2>"Schema"</h2>
                    <table class="grid-table"><tbody>{schema}</tbody></table>
                </section>
            </div>
            {anomaly_view}
            <div class="chart-grid">{stats_view}</div>
        }
    })
}

/// `/models`: registered models with their aliases and latest version.
pub fn models(frame: Frame, d: &Value) -> String {
    let list = arr(&d["models"]);
    document(frame, move || {
        let rows = list
            .into_iter()
            .map(|m| {
                let href = format!("/models/{}", text(&m["name"]));
                let aliases = m["aliases"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(a, v)| view! { <span class="alias">{format!("{a} → v{}", text(v))}</span> })
                    .collect_view();
                view! {
                    <tr>
                        <td><a href=href>{text(&m["name"])}</a><div class="muted small">{text(&m["description"])}</div></td>
                        <td class="num">{format!("v{}", text(&m["latest_version"]))}</td>
                        <td>{aliases}</td>
                        <td class="num">{when(&m["updated_at"])}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            {heading("Models".into(), Some("The registry: versions, and the aliases that serve them.".into()))}
            <table class="grid-table">
                <thead><tr><th>"Model"</th><th>"Latest"</th><th>"Aliases"</th><th>"Updated (UTC)"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        }
    })
}

/// `/models/{name}`: versions with metrics and lineage, aliases and their history, a promote
/// form (confirmed), and a "try it" form that sends records to the serving endpoint.
pub fn model(frame: Frame, d: &Value) -> String {
    let d = d.clone();
    document(frame, move || {
        let m = &d["model"];
        let name = text(&m["name"]);
        let focus = d["focus"].as_i64();
        let versions = arr(&d["versions"]);
        let metric_keys: Vec<String> = {
            let mut k = BTreeSet::new();
            for v in &versions {
                k.extend(
                    v["metrics"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, _)| k.clone())
                        .filter(|k| k.starts_with("eval_") || k.starts_with("test_")),
                );
            }
            k.into_iter().take(5).collect()
        };
        let rows = versions
            .iter()
            .map(|v| {
                let anchor = format!("v{}", text(&v["version"]));
                let lineage = &v["lineage"];
                let blessed = match v["blessed"].as_bool() {
                    Some(true) => "blessed",
                    Some(false) => "not blessed",
                    None => "–",
                };
                let archived = v["archived"].as_bool().unwrap_or(false);
                view! {
                    <tr id=anchor class:current=focus == v["version"].as_i64() class:archived=archived>
                        <td class="num">{format!("v{}", text(&v["version"]))}</td>
                        <td>{arr(&v["aliases"]).into_iter().map(|a| view! { <span class="alias">{text(&a)}</span> }).collect_view()}{archived.then(|| view! { <span class="badge st-cancelled">"archived"</span> })}</td>
                        <td>{blessed}</td>
                        {metric_keys.iter().map(|k| view! { <td class="num">{num(&v["metrics"][k])}</td> }).collect_view()}
                        <td>{lineage["run_id"].as_i64().map(|r| run_link(&Value::from(r)))}{format!(" {}", text(&lineage["task_id"]))}</td>
                        <td class="muted small">{text(&v["created_by"])}</td>
                        <td class="num">{when(&v["created_at"])}</td>
                    </tr>
                }
            })
            .collect_view();
        let history = arr(&d["history"])
            .into_iter()
            .map(|h| {
                let to = if h["to_version"].is_null() {
                    "removed".to_string()
                } else {
                    format!("v{}", text(&h["to_version"]))
                };
                let from = if h["from_version"].is_null() {
                    "–".to_string()
                } else {
                    format!("v{}", text(&h["from_version"]))
                };
                view! {
                    <tr>
                        <td class="num">{when(&h["at"])}</td>
                        <td><span class="alias">{text(&h["alias"])}</span></td>
                        <td>{format!("{from} → {to}")}</td>
                        <td>{text(&h["actor"])}</td>
                        <td class="muted">{text(&h["reason"])}</td>
                    </tr>
                }
            })
            .collect_view();
        let version_options = versions
            .iter()
            .filter(|v| !v["archived"].as_bool().unwrap_or(false))
            .map(|v| view! { <option value=text(&v["version"])>{format!("v{}", text(&v["version"]))}</option> })
            .collect_view();
        let promote_action = format!("/ui/models/{name}/promote");
        let try_action = format!("/ui/models/{name}/try");
        let try_api = format!("/api/v1/models/{name}/predict");
        let confirm = format!("Move this alias of {name}? Serving switches to that version at once.");
        let flash = (!text(&d["flash"]).is_empty()).then(|| view! { <p class="flash">{text(&d["flash"])}</p> });
        let try_output = text(&d["try_output"]);
        view! {
            {heading(name.clone(), Some(text(&m["description"])))}
            {flash}
            <section class="card">
                <h2>"Versions"</h2>
                <div class="scroll">
                    <table class="grid-table">
                        <thead>
                            <tr>
                                <th>"Version"</th><th>"Aliases"</th><th>"Evaluation"</th>
                                {metric_keys.iter().map(|k| view! { <th>{k.clone()}</th> }).collect_view()}
                                <th>"Lineage"</th><th>"By"</th><th>"Registered (UTC)"</th>
                            </tr>
                        </thead>
                        <tbody>{rows}</tbody>
                    </table>
                </div>
            </section>
            <div class="cols">
                <section class="card">
                    <h2>"Promote"</h2>
                    <form method="post" action=promote_action class="params" data-confirm=confirm>{csrf_field()}
                        <label><span>"Version"</span><select name="version">{version_options}</select></label>
                        <label><span>"Alias"</span><input name="alias" value="production"/></label>
                        <label><span>"Reason"</span><input name="reason" placeholder="why (kept in the history)"/></label>
                        <label class="check"><input type="checkbox" name="confirm" value="yes" required=true/><span>"I want to move this alias now"</span></label>
                        <button type="submit" class="primary">"Promote"</button>
                    </form>
                </section>
                <section class="card">
                    <h2>"Try it"</h2>
                    <form method="post" action=try_action class="try" data-try=try_api>{csrf_field()}
                        <label><span>"Alias"</span><input name="alias" value=text(&d["try_alias"])/></label>
                        <textarea name="input" rows="6" spellcheck="false">{text(&d["try_input"])}</textarea>
                        <button type="submit" class="primary">"Predict"</button>
                    </form>
                    <pre class="code try-output">{try_output}</pre>
                </section>
            </div>
            <section class="card">
                <h2>"Alias history"</h2>
                <table class="grid-table">
                    <thead><tr><th>"When (UTC)"</th><th>"Alias"</th><th>"Move"</th><th>"By"</th><th>"Reason"</th></tr></thead>
                    <tbody>{history}</tbody>
                </table>
            </section>
        }
    })
}

/// `/search?q=`: results grouped by kind, with highlighted snippets.
pub fn search(frame: Frame, d: &Value) -> String {
    let d = d.clone();
    document(frame, move || {
        let error = text(&d["error"]);
        let hits = arr(&d["results"]["hits"]);
        let total = text(&d["results"]["total"]);
        let groups = ["pipeline", "run", "log", "model", "version", "dataset"]
            .into_iter()
            .filter_map(|kind| {
                let group: Vec<&Value> = hits.iter().filter(|h| h["kind"] == kind).collect();
                if group.is_empty() {
                    return None;
                }
                let items = group
                    .into_iter()
                    .map(|h| {
                        let href = text(&h["url"]);
                        let title = text(&h["title"]);
                        let snippet = text(&h["snippet"]);
                        let line = h["line"].as_u64().map(|l| format!("line {l}"));
                        view! {
                            <li>
                                <a href=href inner_html=title></a>
                                {line.map(|l| view! { <span class="muted small">{format!(" · {l}")}</span> })}
                                <div class="snippet" inner_html=snippet></div>
                            </li>
                        }
                    })
                    .collect_view();
                Some(view! {
                    <section class="card">
                        <h2>{format!("{kind}s")}</h2>
                        <ul class="hits">{items}</ul>
                    </section>
                })
            })
            .collect_view();
        let q = text(&d["query"]);
        let summary = if !error.is_empty() {
            Either::Left(view! { <p class="error-box">{error}</p> })
        } else {
            let msg = if q.is_empty() {
                "Type words in the search box: all must match; \"a phrase\", OR, -word, title:word work too."
                    .to_string()
            } else {
                format!("{total} matches for {q}")
            };
            Either::Right(view! { <p class="muted">{msg}</p> })
        };
        let offset = d["offset"].as_u64().unwrap_or(0);
        let total_n = d["results"]["total"].as_u64().unwrap_or(0);
        let next = (offset + 50 < total_n).then(|| {
            let mut href = format!("/search?q={}&offset={}", enc(&q), offset + 50);
            if let Some(k) = d["kind"].as_str() {
                href.push_str(&format!("&kind={}", enc(k)));
            }
            view! { <p class="pager"><a class="button" href=href>"More results →"</a></p> }
        });
        view! {
            {heading("Search".into(), None)}
            {summary}
            {groups}
            {next}
        }
    })
}

/// A page for a missing thing or a bad request.
pub fn problem(frame: Frame, status: u16, message: &str) -> String {
    let message = message.to_string();
    document(frame, move || {
        view! {
            {heading(format!("{status}"), None)}
            <p class="error-box">{message}</p>
            <p><a href="/">"Back to the overview"</a></p>
        }
    })
}

/// `/login`: user name and password, with the reason after a failed attempt.
pub fn login(frame: Frame, next: &str, error: &str) -> String {
    let (next, error) = (next.to_string(), error.to_string());
    document(frame, move || {
        view! {
            <section class="card login">
                <h1>"Log in"</h1>
                {(!error.is_empty()).then(|| view! { <p class="error-box">{error}</p> })}
                <form method="post" action="/login" class="params">
                    <input type="hidden" name="next" value=next/>
                    <label><span>"User"</span><input name="name" autocomplete="username" required=true autofocus=true/></label>
                    <label><span>"Password"</span><input type="password" name="password" autocomplete="current-password" required=true/></label>
                    <button type="submit" class="primary">"Log in"</button>
                </form>
                <p class="sub">"No account yet? An admin creates one with " <code>"mlbox users add NAME --role viewer"</code> "."</p>
            </section>
        }
    })
}

/// `/admin/audit`: state changes, newest first (admins only).
pub fn audit(frame: Frame, d: &Value) -> String {
    let rows = arr(&d["entries"]);
    let next = d["next_before"].as_i64().map(|b| format!("/admin/audit?before={b}"));
    document(frame, move || {
        let body = rows
            .iter()
            .map(|e| {
                let status = text(&e["status"]);
                let class =
                    if e["status"].as_i64().unwrap_or(0) >= 400 { "st-failed badge" } else { "st-success badge" };
                view! {
                    <tr>
                        <td>{when(&e["at"])}</td>
                        <td>{text(&e["actor"])}</td>
                        <td><code>{text(&e["action"])}</code></td>
                        <td><code>{text(&e["target"])}</code></td>
                        <td><span class=class>{status}</span></td>
                        <td class="muted">{text(&e["request_id"])}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            {heading("Audit log".into(), Some("Every change made through the API, the UI or the CLI, with who made it".into()))}
            <section class="card">
                <table class="grid-table">
                    <thead><tr><th>"When (UTC)"</th><th>"Who"</th><th>"Action"</th><th>"Target"</th><th>"Status"</th><th>"Request id"</th></tr></thead>
                    <tbody>{body}</tbody>
                </table>
                {next.map(|href| view! { <p><a href=href>"Older entries"</a></p> })}
            </section>
        }
    })
}
