//! `${{ ... }}` references in pipeline values: parsing (checked at load time) and rendering
//! (at run time, against params, the run, upstream outputs and the foreach item).

use std::collections::BTreeMap;

use serde_json::Value;

/// What a `${{ }}` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Param(String),
    Run(String),
    /// `tasks.T.outputs[.path]`
    Output {
        task: String,
        path: Vec<String>,
    },
    /// `item[.path]`, only inside `foreach`.
    Item(Vec<String>),
}

pub const RUN_FIELDS: &[&str] = &["id", "pipeline", "logical_date", "ds"];

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Ref(Ref),
}

fn parse_ref(expr: &str) -> Result<Ref, String> {
    let parts: Vec<&str> = expr.split('.').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{expr}` is not a valid reference"));
    }
    match parts.as_slice() {
        ["params", name] => Ok(Ref::Param(name.to_string())),
        ["params", ..] => Err(format!("`{expr}`: write params.NAME")),
        ["run", field] if RUN_FIELDS.contains(field) => Ok(Ref::Run(field.to_string())),
        ["run", ..] => Err(format!("`{expr}`: run has {}", RUN_FIELDS.join(", "))),
        ["tasks", task, "outputs", rest @ ..] => {
            Ok(Ref::Output { task: task.to_string(), path: rest.iter().map(|s| s.to_string()).collect() })
        }
        ["tasks", ..] => Err(format!("`{expr}`: write tasks.TASK_ID.outputs.KEY")),
        ["item", rest @ ..] => Ok(Ref::Item(rest.iter().map(|s| s.to_string()).collect())),
        _ => {
            Err(format!("`{expr}` is not a known reference; use params.X, run.logical_date, tasks.T.outputs.K or item"))
        }
    }
}

fn parse(s: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            pieces.push(Piece::Lit(rest[..start].to_string()));
        }
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed `${{{{` in {s:?}: close it with `}}}}`"))?;
        pieces.push(Piece::Ref(parse_ref(after[..end].trim())?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Lit(rest.to_string()));
    }
    Ok(pieces)
}

/// Every reference in every string inside `v`, or the first malformed one.
pub fn refs(v: &Value) -> Result<Vec<Ref>, String> {
    let mut out = Vec::new();
    walk_strings(v, &mut |s| {
        for p in parse(s)? {
            if let Piece::Ref(r) = p {
                out.push(r);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Refs in one string.
pub fn refs_in(s: &str) -> Result<Vec<Ref>, String> {
    refs(&Value::String(s.to_string()))
}

fn walk_strings(v: &Value, f: &mut impl FnMut(&str) -> Result<(), String>) -> Result<(), String> {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().try_for_each(|x| walk_strings(x, f)),
        Value::Object(o) => o.values().try_for_each(|x| walk_strings(x, f)),
        _ => Ok(()),
    }
}

/// Values a template can see at run time.
#[derive(Debug, Default, Clone)]
pub struct Context {
    pub params: BTreeMap<String, Value>,
    pub run: BTreeMap<String, Value>,
    pub outputs: BTreeMap<String, Value>,
    pub item: Option<Value>,
}

fn lookup<'a>(mut v: &'a Value, path: &[String], what: &str) -> Result<&'a Value, String> {
    for key in path {
        v = match v {
            Value::Object(o) => o.get(key),
            Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("{what} has no `{key}` (it is {})", short(v)))?;
    }
    Ok(v)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 { format!("{}…", &s[..s.char_indices().nth(120).map(|(i, _)| i).unwrap_or(s.len())]) } else { s }
}

impl Context {
    fn resolve(&self, r: &Ref) -> Result<Value, String> {
        match r {
            Ref::Param(p) => self.params.get(p).cloned().ok_or_else(|| format!("param `{p}` is not set")),
            Ref::Run(f) => self.run.get(f).cloned().ok_or_else(|| format!("run.{f} is not set")),
            Ref::Output { task, path } => {
                let outputs =
                    self.outputs.get(task).ok_or_else(|| format!("task `{task}` has no outputs in this run"))?;
                lookup(outputs, path, &format!("tasks.{task}.outputs")).cloned()
            }
            Ref::Item(path) => {
                let item = self.item.as_ref().ok_or("`item` is only defined inside foreach")?;
                lookup(item, path, "item").cloned()
            }
        }
    }

    /// Render every string in `v`. A string that is exactly one reference keeps the referenced
    /// value's JSON type; references inside longer strings are interpolated as text.
    pub fn render(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => self.render_str(s)?,
            Value::Array(a) => Value::Array(a.iter().map(|x| self.render(x)).collect::<Result<_, _>>()?),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, x)| Ok((k.clone(), self.render(x)?))).collect::<Result<_, String>>()?)
            }
            other => other.clone(),
        })
    }

    fn render_str(&self, s: &str) -> Result<Value, String> {
        let pieces = parse(s)?;
        if let [Piece::Ref(r)] = pieces.as_slice() {
            return self.resolve(r);
        }
        let mut out = String::new();
        for p in pieces {
            match p {
                Piece::Lit(l) => out.push_str(&l),
                Piece::Ref(r) => match self.resolve(&r)? {
                    Value::String(s) => out.push_str(&s),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(Value::String(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_kind_of_reference() {
        let v = json!({"a": "${{ params.n }}", "b": ["x ${{run.logical_date}} y", "${{ tasks.t1.outputs.rows }}"], "c": "${{ item.name }}"});
        let r = refs(&v).unwrap();
        assert!(r.contains(&Ref::Param("n".into())));
        assert!(r.contains(&Ref::Run("logical_date".into())));
        assert!(r.contains(&Ref::Output { task: "t1".into(), path: vec!["rows".into()] }));
        assert!(r.contains(&Ref::Item(vec!["name".into()])));
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(refs_in("${{ params.n").unwrap_err().contains("unclosed"));
        assert!(refs_in("${{ foo.bar }}").unwrap_err().contains("not a known reference"));
        assert!(refs_in("${{ run.nope }}").unwrap_err().contains("run has"));
        assert!(refs_in("${{ tasks.t.rows }}").unwrap_err().contains("tasks.TASK_ID.outputs"));
    }

    #[test]
    fn renders_typed_whole_values_and_interpolated_text() {
        let mut ctx = Context::default();
        ctx.params.insert("n".into(), json!(5));
        ctx.outputs.insert("t".into(), json!({"files": ["a", "b"], "meta": {"k": true}}));
        ctx.item = Some(json!({"name": "btc"}));
        let out = ctx
            .render(&json!({"n": "${{ params.n }}", "s": "n=${{ params.n }} ${{ item.name }}", "f": "${{ tasks.t.outputs.files.1 }}", "k": "${{tasks.t.outputs.meta.k}}"}))
            .unwrap();
        assert_eq!(out, json!({"n": 5, "s": "n=5 btc", "f": "b", "k": true}));
        assert!(ctx.render(&json!("${{ tasks.t.outputs.missing }}")).unwrap_err().contains("has no `missing`"));
    }
}
