//! `branch`: evaluates conditions (after templates are rendered) and picks which direct
//! downstream tasks run; the others are skipped.
//!
//! ```yaml
//! with:
//!   cases:
//!     - when: "${{ tasks.check.outputs.rows }} > 1000"
//!       run: [train_full]
//!   otherwise: [train_small]
//! ```

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Kind, Op, Outcome, Param, TaskContext, opt, req};

pub struct Branch;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    when: Value,
    run: OneOrMany,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    cases: Vec<Case>,
    #[serde(default)]
    otherwise: Option<OneOrMany>,
}

/// Evaluate a condition: booleans as-is, strings as evalexpr expressions (`3 > 2 && "a" == "a"`).
pub fn truthy(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
        Value::String(s) => {
            evalexpr::eval_boolean(s).map_err(|e| format!("condition {s:?} is not a true/false expression: {e}"))
        }
        Value::Null => Ok(false),
        other => Err(format!("condition must be true/false or an expression, got {other}")),
    }
}

fn targets(with: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let push = |v: &Value, out: &mut Vec<String>| match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => out.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string))),
        _ => {}
    };
    if let Some(cases) = with.get("cases").and_then(Value::as_array) {
        for c in cases {
            if let Some(r) = c.get("run") {
                push(r, &mut out);
            }
        }
    }
    if let Some(o) = with.get("otherwise") {
        push(o, &mut out);
    }
    out
}

impl Op for Branch {
    fn name(&self) -> &'static str {
        "branch"
    }
    fn uses_files(&self) -> bool {
        false
    }
    fn params(&self) -> &'static [Param] {
        const P: &[Param] = &[
            req("cases", Kind::List, "a list of {when: CONDITION, run: [task ids]}; the first true case wins"),
            opt("otherwise", Kind::Any, "task ids to run when no case is true (default: none)"),
        ];
        P
    }
    fn check(&self, with: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        for (i, c) in with.get("cases").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if c.get("when").is_none() || c.get("run").is_none() {
                errors.push(format!("case {} needs both `when` and `run`", i + 1));
            }
        }
        errors
    }
    fn branch_targets(&self, with: &Value) -> Vec<String> {
        targets(with)
    }
    fn run(&self, ctx: &TaskContext, with: &Value) -> Result<Outcome, String> {
        let p: Params = super::decode("branch", with)?;
        for (i, case) in p.cases.into_iter().enumerate() {
            if truthy(&case.when)? {
                let follow = case.run.into_vec();
                ctx.log.line(&format!("case {} is true: following {}", i + 1, follow.join(", ")));
                return Ok(Outcome::Branch { outputs: json!({"case": i + 1, "follow": follow}), follow });
            }
        }
        let follow = p.otherwise.map(OneOrMany::into_vec).unwrap_or_default();
        ctx.log.line(&format!(
            "no case is true: following {}",
            if follow.is_empty() { "nothing".into() } else { follow.join(", ") }
        ));
        Ok(Outcome::Branch { outputs: json!({"case": null, "follow": follow}), follow })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_evaluate_as_expressions() {
        assert!(truthy(&json!("1200 > 1000")).unwrap());
        assert!(!truthy(&json!("\"a\" == \"b\"")).unwrap());
        assert!(truthy(&json!(true)).unwrap());
        assert!(truthy(&json!("1 +")).is_err());
    }

    #[test]
    fn targets_cover_cases_and_otherwise() {
        let w =
            json!({"cases": [{"when": "true", "run": ["a", "b"]}, {"when": "false", "run": "c"}], "otherwise": "d"});
        assert_eq!(targets(&w), vec!["a", "b", "c", "d"]);
    }
}
