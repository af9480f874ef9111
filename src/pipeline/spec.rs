//! The pipeline YAML format, read node by node so every error carries its line and column and
//! all structural errors are reported at once rather than the first one only.

use std::collections::BTreeMap;
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node, Span};
use serde_json::Value;

use super::params::{ParamDef, ParamType};
use super::validate::SpecError;

/// 1-based line and column of a node in the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        span.start().map(|m| Pos { line: m.line(), col: m.column() }).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    AllSuccess,
    AllDone,
    OneFailed,
    OneSuccess,
    NoneFailed,
}

impl TriggerRule {
    fn parse(s: &str) -> Option<TriggerRule> {
        Some(match s {
            "all_success" => TriggerRule::AllSuccess,
            "all_done" => TriggerRule::AllDone,
            "one_failed" => TriggerRule::OneFailed,
            "one_success" => TriggerRule::OneSuccess,
            "none_failed" => TriggerRule::NoneFailed,
            _ => return None,
        })
    }
}

/// What a `foreach` fans out over: a literal list, or a template that renders to a list.
#[derive(Debug, Clone)]
pub enum Foreach {
    List(Vec<Value>),
    Template(String),
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub pos: Pos,
    pub op: String,
    pub op_pos: Pos,
    pub with: Value,
    pub with_pos: Pos,
    pub depends_on: Vec<(String, Pos)>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    pub timeout: Option<Duration>,
    pub trigger_rule: TriggerRule,
    pub foreach: Option<(Foreach, Pos)>,
    pub threads: u32,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub name_pos: Pos,
    pub description: String,
    pub schedule: Option<(String, Pos)>,
    pub start_date: Option<(String, Pos)>,
    pub catchup: bool,
    pub max_active_runs: u32,
    pub params: BTreeMap<String, ParamDef>,
    pub tags: Vec<String>,
    pub tasks: Vec<Task>,
}

const PIPELINE_KEYS: &[&str] =
    &["name", "description", "schedule", "start_date", "catchup", "max_active_runs", "params", "tags", "tasks"];
const TASK_KEYS: &[&str] = &[
    "id",
    "op",
    "with",
    "depends_on",
    "retries",
    "retry_delay",
    "max_retry_delay",
    "timeout",
    "trigger_rule",
    "foreach",
    "threads",
];

/// Collects errors while reading nodes.
struct Reader {
    errors: Vec<SpecError>,
}

impl Reader {
    fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(SpecError { line: pos.line, col: pos.col, message: message.into() });
    }

    fn check_keys(&mut self, map: &MarkedMappingNode, allowed: &[&str], what: &str) {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let hint =
                    closest(key.as_str(), allowed).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                self.err(
                    Pos::of(key.span()),
                    format!("unknown field `{}` in {what}{hint}; allowed: {}", key.as_str(), allowed.join(", ")),
                );
            }
        }
    }

    fn scalar<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a MarkedScalarNode> {
        match node {
            Node::Scalar(s) => Some(s),
            _ => {
                self.err(Pos::of(node.span()), format!("{what} must be a single value, not a list or mapping"));
                None
            }
        }
    }

    fn string(&mut self, map: &MarkedMappingNode, key: &str) -> Option<(String, Pos)> {
        let node = map.get_node(key)?;
        let s = self.scalar(node, &format!("`{key}`"))?;
        Some((s.as_str().to_string(), Pos::of(s.span())))
    }

    fn uint(&mut self, map: &MarkedMappingNode, key: &str, default: u32) -> u32 {
        let Some((text, pos)) = self.string(map, key) else {
            return default;
        };
        match text.trim().parse::<u32>() {
            Ok(v) => v,
            Err(_) => {
                self.err(pos, format!("`{key}` must be a whole number ≥ 0, got `{text}`"));
                default
            }
        }
    }

    fn boolean(&mut self, map: &MarkedMappingNode, key: &str, default: bool) -> bool {
        let Some((text, pos)) = self.string(map, key) else {
            return default;
        };
        match text.as_str() {
            "true" | "True" | "yes" => true,
            "false" | "False" | "no" => false,
            _ => {
                self.err(pos, format!("`{key}` must be true or false, got `{text}`"));
                default
            }
        }
    }

    fn duration(&mut self, map: &MarkedMappingNode, key: &str) -> Option<Duration> {
        let (text, pos) = self.string(map, key)?;
        match parse_duration(&text) {
            Some(d) => Some(d),
            None => {
                self.err(pos, format!("`{key}` must be a duration like 30s, 5m, 2h or 500ms, got `{text}`"));
                None
            }
        }
    }
}

/// `500ms`, `30s`, `5m`, `2h`, `1d`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

fn closest<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    options.iter().copied().filter(|o| edit_distance(word, o) <= 2).min_by_key(|o| edit_distance(word, o))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A YAML node as JSON: unquoted scalars become booleans, numbers and null where they look like one.
pub fn to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => scalar_to_json(s),
        Node::Sequence(seq) => Value::Array(seq.iter().map(to_json).collect()),
        Node::Mapping(map) => Value::Object(map.iter().map(|(k, v)| (k.as_str().to_string(), to_json(v))).collect()),
    }
}

fn scalar_to_json(s: &MarkedScalarNode) -> Value {
    let text = s.as_str();
    if !s.may_coerce() {
        return Value::String(text.to_string());
    }
    match text {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        "null" | "Null" | "NULL" | "~" | "" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = text.parse::<f64>()
        && f.is_finite()
        && text.chars().any(|c| c.is_ascii_digit())
    {
        return Value::from(f);
    }
    Value::String(text.to_string())
}

/// Read a pipeline document. Returns what could be read plus every structural error found, so
/// semantic checks can still run and all problems are reported at once.
pub fn parse(yaml: &str) -> (Option<Pipeline>, Vec<SpecError>) {
    match parse_inner(yaml) {
        Ok((p, errors)) => (Some(p), errors),
        Err(errors) => (None, errors),
    }
}

/// Deeper than this, a spec is refused before it is parsed: the YAML loader recurses per level,
/// and real pipelines nest a dozen levels at most.
const MAX_NESTING: usize = 64;

/// How deep `yaml` nests, counting indentation levels, list markers and open brackets (outside
/// quotes), with the line where it is deepest. An estimate that never undercounts much.
fn nesting(yaml: &str) -> (usize, usize) {
    let (mut indents, mut flow, mut worst) = (Vec::<usize>::new(), 0usize, (0, 0));
    for (n, line) in yaml.lines().enumerate() {
        let body = line.trim_start_matches([' ', '-']);
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if flow == 0 {
            let indent = line.len() - body.len();
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let (mut quote, mut deepest) = (None, flow);
        for c in body.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    flow += 1;
                    deepest = deepest.max(flow);
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
        let depth = indents.len() + line[..line.len() - body.len()].matches('-').count() + deepest;
        if depth > worst.0 {
            worst = (depth, n + 1);
        }
    }
    worst
}

fn parse_inner(yaml: &str) -> Result<(Pipeline, Vec<SpecError>), Vec<SpecError>> {
    let (depth, line) = nesting(yaml);
    if depth > MAX_NESTING {
        return Err(vec![SpecError::at(
            line,
            1,
            format!("the spec nests {depth} levels deep here; pipelines are limited to {MAX_NESTING}"),
        )]);
    }
    let options = LoaderOptions::default().error_on_duplicate_keys(true).toplevel_mapping();
    let root = marked_yaml::parse_yaml_with_options(0, yaml, options).map_err(|e| vec![load_error(&e)])?;
    let Some(map) = root.as_mapping() else {
        return Err(vec![SpecError::at(1, 1, "a pipeline file must be a YAML mapping with `name` and `tasks`")]);
    };
    let mut r = Reader { errors: Vec::new() };
    r.check_keys(map, PIPELINE_KEYS, "the pipeline");

    let (name, name_pos) = r.string(map, "name").unwrap_or_else(|| {
        r.err(Pos::of(map.span()), "the pipeline needs a `name`");
        (String::new(), Pos::default())
    });
    let description = r.string(map, "description").map(|(d, _)| d).unwrap_or_default();
    let schedule = r.string(map, "schedule").filter(|(s, _)| !matches!(s.as_str(), "" | "~" | "null" | "none"));
    let start_date = r.string(map, "start_date");
    let catchup = r.boolean(map, "catchup", false);
    let max_active_runs = r.uint(map, "max_active_runs", 1);
    if max_active_runs == 0 {
        r.err(Pos::of(map.span()), "`max_active_runs` must be at least 1");
    }

    let mut params = BTreeMap::new();
    if let Some(node) = map.get_node("params") {
        match node.as_mapping() {
            Some(pm) => {
                for (key, value) in pm.iter() {
                    match read_param(&mut r, value) {
                        Some(def) => {
                            params.insert(key.as_str().to_string(), def);
                        }
                        None => continue,
                    }
                }
            }
            None => r.err(Pos::of(node.span()), "`params` must be a mapping of name → default or {type, default}"),
        }
    }

    let mut tags = Vec::new();
    if let Some(node) = map.get_node("tags") {
        match node.as_sequence() {
            Some(seq) => tags.extend(seq.iter().filter_map(|n| n.as_scalar().map(|s| s.as_str().to_string()))),
            None => r.err(Pos::of(node.span()), "`tags` must be a list of strings"),
        }
    }

    let mut tasks = Vec::new();
    match map.get_node("tasks") {
        None => r.err(Pos::of(map.span()), "the pipeline needs `tasks`: a list of tasks, each with `id` and `op`"),
        Some(node) => match node.as_sequence() {
            None => r.err(Pos::of(node.span()), "`tasks` must be a list"),
            Some(seq) => {
                if seq.is_empty() {
                    r.err(Pos::of(node.span()), "`tasks` is empty: a pipeline needs at least one task");
                }
                for t in seq.iter() {
                    if let Some(task) = read_task(&mut r, t) {
                        tasks.push(task);
                    }
                }
            }
        },
    }

    Ok((
        Pipeline { name, name_pos, description, schedule, start_date, catchup, max_active_runs, params, tags, tasks },
        r.errors,
    ))
}

fn read_param(r: &mut Reader, node: &Node) -> Option<ParamDef> {
    let pos = Pos::of(node.span());
    match node {
        Node::Mapping(m) if m.get_node("type").is_some() || m.get_node("default").is_some() => {
            r.check_keys(m, &["type", "default", "description"], "a param");
            let default = m.get_node("default").map(to_json);
            let description = m.get_scalar("description").map(|s| s.as_str().to_string()).unwrap_or_default();
            let ty = match m.get_scalar("type") {
                Some(t) => match ParamType::parse(t.as_str()) {
                    Some(ty) => ty,
                    None => {
                        r.err(
                            Pos::of(t.span()),
                            format!(
                                "unknown param type `{}`; use string, int, float, bool, date, list or object",
                                t.as_str()
                            ),
                        );
                        return None;
                    }
                },
                None => default.as_ref().map(ParamType::infer)?,
            };
            Some(ParamDef { ty, default, description, pos })
        }
        other => {
            let default = to_json(other);
            Some(ParamDef { ty: ParamType::infer(&default), default: Some(default), description: String::new(), pos })
        }
    }
}

fn read_task(r: &mut Reader, node: &Node) -> Option<Task> {
    let Some(m) = node.as_mapping() else {
        r.err(Pos::of(node.span()), "each task must be a mapping with at least `id` and `op`");
        return None;
    };
    r.check_keys(m, TASK_KEYS, "a task");
    let (id, pos) = match r.string(m, "id") {
        Some(v) => v,
        None => {
            r.err(Pos::of(m.span()), "this task has no `id`");
            return None;
        }
    };
    let (op, op_pos) = r.string(m, "op").unwrap_or_else(|| {
        r.err(pos, format!("task `{id}` has no `op`"));
        (String::new(), pos)
    });
    let (with, with_pos) = match m.get_node("with") {
        Some(n @ Node::Mapping(_)) => (to_json(n), Pos::of(n.span())),
        Some(n) => {
            r.err(Pos::of(n.span()), format!("`with` of task `{id}` must be a mapping of op parameters"));
            (Value::Object(Default::default()), Pos::of(n.span()))
        }
        None => (Value::Object(Default::default()), pos),
    };
    let mut depends_on = Vec::new();
    if let Some(n) = m.get_node("depends_on") {
        match n {
            Node::Scalar(s) => depends_on.push((s.as_str().to_string(), Pos::of(s.span()))),
            Node::Sequence(seq) => {
                for d in seq.iter() {
                    if let Some(s) = r.scalar(d, "an entry of `depends_on`") {
                        depends_on.push((s.as_str().to_string(), Pos::of(s.span())));
                    }
                }
            }
            Node::Mapping(_) => r.err(Pos::of(n.span()), "`depends_on` must be a task id or a list of task ids"),
        }
    }
    let trigger_rule = match r.string(m, "trigger_rule") {
        None => TriggerRule::AllSuccess,
        Some((s, p)) => TriggerRule::parse(&s).unwrap_or_else(|| {
            r.err(
                p,
                format!(
                    "unknown trigger_rule `{s}`; use all_success, all_done, one_failed, one_success or none_failed"
                ),
            );
            TriggerRule::AllSuccess
        }),
    };
    let foreach = m.get_node("foreach").map(|n| {
        let p = Pos::of(n.span());
        match n {
            Node::Sequence(_) => match to_json(n) {
                Value::Array(items) => (Foreach::List(items), p),
                _ => (Foreach::List(Vec::new()), p),
            },
            Node::Scalar(s) => (Foreach::Template(s.as_str().to_string()), p),
            Node::Mapping(_) => {
                r.err(p, "`foreach` must be a list or a template like ${{ tasks.t.outputs.items }}");
                (Foreach::List(Vec::new()), p)
            }
        }
    });
    let threads = r.uint(m, "threads", 1);
    if threads == 0 {
        r.err(pos, format!("task `{id}`: `threads` must be at least 1"));
    }
    Some(Task {
        retries: r.uint(m, "retries", 0),
        retry_delay: r.duration(m, "retry_delay").unwrap_or(Duration::from_secs(10)),
        max_retry_delay: r.duration(m, "max_retry_delay").unwrap_or(Duration::from_secs(3600)),
        timeout: r.duration(m, "timeout"),
        id,
        pos,
        op,
        op_pos,
        with,
        with_pos,
        depends_on,
        trigger_rule,
        foreach,
        threads,
    })
}

fn load_error(e: &marked_yaml::LoadError) -> SpecError {
    use marked_yaml::LoadError as L;
    let (marker, what) = match e {
        L::TopLevelMustBeMapping(m) => (Some(*m), "a pipeline file must be a YAML mapping".to_string()),
        L::TopLevelMustBeSequence(m) => (Some(*m), "the top level must be a sequence".to_string()),
        L::UnexpectedAnchor(m) => (Some(*m), "YAML anchors are not supported in pipeline files".to_string()),
        L::MappingKeyMustBeScalar(m) => (Some(*m), "mapping keys must be plain strings".to_string()),
        L::UnexpectedTag(m) => (Some(*m), "YAML tags are not supported in pipeline files".to_string()),
        L::ScanError(m, err) => (Some(*m), format!("YAML syntax error: {err}")),
        L::DuplicateKey(k) => (
            k.key.span().start().copied(),
            format!("duplicate key `{}`: each key may appear once per mapping", k.key.as_str()),
        ),
    };
    let (line, col) = marker.map(|m| (m.line(), m.column())).unwrap_or((1, 1));
    SpecError::at(line, col, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_blocks_lists_and_brackets_but_not_quoted_ones() {
        assert!(nesting("name: a\ntasks:\n  - id: t\n    with: {x: [1, 2]}\n").0 <= 6);
        let deep: String = (1..100).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
        let (depth, _) = nesting(&format!("a:\n{deep}"));
        assert!(depth > MAX_NESTING, "{depth}");
        assert_eq!(nesting("a: \"[[[[\"\n").0, 1);
        assert!(nesting(&format!("a: {}", "[".repeat(80))).0 > MAX_NESTING);
        let (_, errors) = parse(&format!("name: x\ndescription:\n{deep}"));
        assert!(errors[0].message.contains("nests"), "{:?}", errors[0]);
        for spec in ["hello", "crypto", "taxi"] {
            let text =
                std::fs::read_to_string(format!("{}/pipelines/{spec}.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
            assert!(nesting(&text).0 < 16, "{spec}: {:?}", nesting(&text));
        }
    }
}
