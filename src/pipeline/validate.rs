//! Spec → Plan: every semantic check (ops and their params, dependencies, cycles, schedule,
//! templates, param types), all errors collected with their positions.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde_json::Value;

use super::Plan;
use super::schedule::Schedule;
use super::spec::{Foreach, Pipeline, Pos};
use super::template::{self, Ref};
use crate::ops::Registry;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpecError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl SpecError {
    pub fn at(line: usize, col: usize, message: impl Into<String>) -> Self {
        SpecError { line, col, message: message.into() }
    }
    fn pos(pos: Pos, message: impl Into<String>) -> Self {
        SpecError::at(pos.line, pos.col, message)
    }
}

/// All errors of one file; displays as `file:line:col: message`, one per line.
#[derive(Debug, Clone)]
pub struct SpecErrors {
    pub file: String,
    pub errors: Vec<SpecError>,
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, e.line, e.col, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parse a `start_date`: `YYYY-MM-DD` or RFC 3339.
pub fn parse_date(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc())
}

pub fn validate(spec: Pipeline, ops: &Registry) -> Result<Plan, Vec<SpecError>> {
    let mut errors = Vec::new();
    if !valid_id(&spec.name) {
        errors.push(SpecError::pos(
            spec.name_pos,
            format!("pipeline name `{}` must be 1-128 letters, digits, `_` or `-`", spec.name),
        ));
    }
    if let Some((s, pos)) = &spec.schedule
        && let Err(e) = Schedule::parse(s)
    {
        errors.push(SpecError::pos(*pos, e));
    }
    if let Some((s, pos)) = &spec.start_date
        && parse_date(s).is_none()
    {
        errors.push(SpecError::pos(*pos, format!("start_date `{s}` must be YYYY-MM-DD or an RFC 3339 time")));
    }
    for (name, def) in &spec.params {
        if !valid_id(name) {
            errors.push(SpecError::pos(def.pos, format!("param name `{name}` must be letters, digits, `_` or `-`")));
        }
        if let Some(d) = &def.default
            && let Err(e) = def.ty.coerce(d)
        {
            errors.push(SpecError::pos(def.pos, format!("type mismatch in param `{name}` default: {e}")));
        }
        if def.default.is_none() && spec.schedule.is_some() {
            errors.push(SpecError::pos(
                def.pos,
                format!("param `{name}` needs a default: scheduled runs have nobody to give it a value"),
            ));
        }
    }

    let mut index = HashMap::new();
    for (i, t) in spec.tasks.iter().enumerate() {
        if !valid_id(&t.id) {
            errors.push(SpecError::pos(t.pos, format!("task id `{}` must be 1-128 letters, digits, `_` or `-`", t.id)));
        }
        if index.insert(t.id.clone(), i).is_some() {
            errors.push(SpecError::pos(t.pos, format!("duplicate task id `{}`", t.id)));
        }
    }

    let n = spec.tasks.len();
    let mut upstream = vec![Vec::new(); n];
    let mut downstream = vec![Vec::new(); n];
    for (i, t) in spec.tasks.iter().enumerate() {
        for (dep, pos) in &t.depends_on {
            match index.get(dep) {
                Some(&j) if j == i => errors.push(SpecError::pos(*pos, format!("task `{}` depends on itself", t.id))),
                Some(&j) => {
                    if !upstream[i].contains(&j) {
                        upstream[i].push(j);
                        downstream[j].push(i);
                    }
                }
                None => errors.push(SpecError::pos(
                    *pos,
                    format!("unknown dependency `{dep}` of task `{}`; tasks are: {}", t.id, task_list(&spec)),
                )),
            }
        }
    }

    let topo = match topo_order(&upstream) {
        Ok(order) => order,
        Err(cycle) => {
            let path: Vec<&str> = cycle.iter().map(|&i| spec.tasks[i].id.as_str()).collect();
            let first = &spec.tasks[cycle[0]];
            errors.push(SpecError::pos(first.pos, format!("dependency cycle: {}", path.join(" → "))));
            Vec::new()
        }
    };
    let ancestors = if topo.is_empty() { vec![BTreeSet::new(); n] } else { ancestors(&topo, &upstream) };

    for (i, t) in spec.tasks.iter().enumerate() {
        let Some(op) = ops.get(&t.op) else {
            errors.push(SpecError::pos(
                t.op_pos,
                format!("unknown op `{}` in task `{}`; available ops: {}", t.op, t.id, ops.names().join(", ")),
            ));
            continue;
        };
        for e in ops.check_params(op, &t.with) {
            errors.push(SpecError::pos(t.with_pos, format!("task `{}` ({}): {e}", t.id, t.op)));
        }
        for target in op.branch_targets(&t.with) {
            let ok = index.get(&target).is_some_and(|j| downstream[i].contains(j));
            if !ok {
                errors.push(SpecError::pos(
                    t.with_pos,
                    format!("branch `{}` picks `{target}`, which is not a task that depends on `{}`", t.id, t.id),
                ));
            }
        }
        let in_foreach = t.foreach.is_some();
        let mut check = |refs: Result<Vec<Ref>, String>, pos: Pos, item_ok: bool| match refs {
            Err(e) => errors.push(SpecError::pos(pos, format!("bad template reference in task `{}`: {e}", t.id))),
            Ok(refs) => {
                for r in refs {
                    match r {
                        Ref::Param(p) if !spec.params.contains_key(&p) => errors.push(SpecError::pos(
                            pos,
                            format!("bad template reference in task `{}`: params.{p} is not declared under `params`", t.id),
                        )),
                        Ref::Output { task, .. } => match index.get(&task) {
                            None => errors.push(SpecError::pos(pos, format!("bad template reference in task `{}`: no task `{task}`", t.id))),
                            Some(j) if !ancestors[i].contains(j) => errors.push(SpecError::pos(
                                pos,
                                format!("task `{}` reads tasks.{task}.outputs but does not depend on `{task}`: add it to depends_on", t.id),
                            )),
                            Some(_) => {}
                        },
                        Ref::Item(_) if !item_ok => errors.push(SpecError::pos(
                            pos,
                            format!("task `{}` uses `item`, which exists only in a task with `foreach`", t.id),
                        )),
                        _ => {}
                    }
                }
            }
        };
        check(template::refs(&t.with), t.with_pos, in_foreach);
        if let Some((f, pos)) = &t.foreach {
            match f {
                Foreach::List(items) => check(template::refs(&Value::Array(items.clone())), *pos, false),
                Foreach::Template(s) if s.contains("${{") => check(template::refs_in(s), *pos, false),
                Foreach::Template(s) => errors.push(SpecError::pos(
                    *pos,
                    format!("`foreach` of task `{}` must be a list or a ${{{{ }}}} reference, got `{s}`", t.id),
                )),
            }
        }
    }

    if errors.is_empty() {
        Ok(Plan { spec, index, upstream, downstream, topo })
    } else {
        errors.sort_by_key(|e| (e.line, e.col));
        Err(errors)
    }
}

fn task_list(spec: &Pipeline) -> String {
    spec.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", ")
}

/// Kahn's algorithm; on a cycle, returns the cycle's path (first node repeated at the end).
pub fn topo_order(upstream: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = upstream.len();
    let mut indegree: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut down = vec![Vec::new(); n];
    for (i, ups) in upstream.iter().enumerate() {
        for &u in ups {
            down[u].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).rev().collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &d in &down[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(d);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk upstream edges among the leftover nodes until one repeats: that loop is a cycle.
    let mut seen = HashMap::new();
    let mut cur = (0..n).find(|&i| indegree[i] > 0).unwrap_or(0);
    let mut path = Vec::new();
    while !seen.contains_key(&cur) {
        seen.insert(cur, path.len());
        path.push(cur);
        cur = upstream[cur].iter().copied().find(|&u| indegree[u] > 0).unwrap_or(cur);
    }
    let mut cycle: Vec<usize> = path[seen[&cur]..].to_vec();
    cycle.reverse();
    cycle.push(cycle[0]);
    Err(cycle)
}

fn ancestors(topo: &[usize], upstream: &[Vec<usize>]) -> Vec<BTreeSet<usize>> {
    let mut out = vec![BTreeSet::new(); upstream.len()];
    for &i in topo {
        let mut set = BTreeSet::new();
        for &u in &upstream[i] {
            set.insert(u);
            set.extend(out[u].iter().copied());
        }
        out[i] = set;
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::ops::Registry;
    use crate::pipeline::load;

    fn errors(yaml: &str) -> Vec<String> {
        match load("p.yaml", yaml, &Registry::builtin()) {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn a_valid_spec_gives_a_plan_in_dependency_order() {
        let plan = load(
            "p.yaml",
            "name: ok\ntasks:\n  - id: c\n    op: noop\n    depends_on: [a, b]\n  - id: a\n    op: noop\n  - id: b\n    op: noop\n    depends_on: a\n",
            &Registry::builtin(),
        )
        .unwrap();
        let order: Vec<&str> = plan.topo.iter().map(|&i| plan.spec.tasks[i].id.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(plan.upstream[plan.index["c"]].len(), 2);
        assert_eq!(plan.spec.max_active_runs, 1);
        assert!(!plan.spec.catchup);
    }

    #[test]
    fn every_error_is_reported_with_file_line_and_column() {
        let e = errors(
            "name: p\nschedule: '*/5 * * *'\ntasks:\n  - id: a\n    op: nope\n  - id: b\n    op: noop\n    depends_on: [x]\n  - id: c\n    op: shell\n    with: {command: 'echo ${{ params.missing }}'}\n",
        );
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].starts_with("p.yaml:2:11: bad cron"), "{}", e[0]);
        assert!(e[1].starts_with("p.yaml:5:9: unknown op `nope`"), "{}", e[1]);
        assert!(e[2].starts_with("p.yaml:8:18: unknown dependency `x`"), "{}", e[2]);
        assert!(e[3].contains("params.missing is not declared"), "{}", e[3]);
    }

    #[test]
    fn cycles_print_their_path() {
        let e = errors(
            "name: p\ntasks:\n  - id: a\n    op: noop\n    depends_on: [c]\n  - id: b\n    op: noop\n    depends_on: [a]\n  - id: c\n    op: noop\n    depends_on: [b]\n",
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("dependency cycle:"), "{}", e[0]);
        for t in ["a", "b", "c"] {
            assert!(e[0].contains(t), "{}", e[0]);
        }
        let path: Vec<&str> = e[0].split("cycle: ").nth(1).unwrap().split(" → ").collect();
        assert_eq!(path.first(), path.last(), "the path closes on itself: {path:?}");
    }

    #[test]
    fn templates_types_and_structure_are_checked() {
        let e = errors(
            "name: p\nparams:\n  n: {type: int, default: x}\ntasks:\n  - id: a\n    op: shell\n    with: {command: 'echo ${{ item }}', cwd: 3}\n  - id: b\n    op: noop\n    retries: many\n    colour: red\n  - id: c\n    op: shell\n    with: {command: 'echo ${{ tasks.b.outputs.x }}'}\n",
        );
        let all = e.join("\n");
        assert!(all.contains("type mismatch in param `n`"), "{all}");
        assert!(all.contains("`cwd` must be a string"), "{all}");
        assert!(all.contains("uses `item`, which exists only in a task with `foreach`"), "{all}");
        assert!(all.contains("`retries` must be a whole number"), "{all}");
        assert!(all.contains("unknown field `colour`"), "{all}");
        assert!(all.contains("does not depend on `b`"), "{all}");
    }

    #[test]
    fn yaml_syntax_errors_and_duplicates_have_positions() {
        let e = errors("name: p\ntasks:\n  - id: a\n    op: noop\n   bad: [\n");
        assert!(e[0].starts_with("p.yaml:") && e[0].contains("YAML syntax error"), "{e:?}");
        let e = errors("name: p\nname: q\ntasks:\n  - id: a\n    op: noop\n");
        assert!(e[0].starts_with("p.yaml:2:1: duplicate key `name`"), "{e:?}");
        let e = errors("- just\n- a list\n");
        assert!(e[0].contains("must be a YAML mapping"), "{e:?}");
    }

    #[test]
    fn branch_targets_must_be_direct_downstream_tasks() {
        let e = errors(
            "name: p\ntasks:\n  - id: pick\n    op: branch\n    with:\n      cases: [{when: 'true', run: [x]}]\n      otherwise: y\n  - id: x\n    op: noop\n    depends_on: [pick]\n  - id: y\n    op: noop\n",
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("branch `pick` picks `y`, which is not a task that depends on `pick`"), "{}", e[0]);
    }
}
