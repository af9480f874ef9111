//! Typed pipeline params: declared types, defaults, and values given with `--param k=v` or JSON.

use std::collections::BTreeMap;

use serde_json::Value;

use super::spec::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Int,
    Float,
    Bool,
    Date,
    List,
    Object,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ParamDef {
    #[serde(rename = "type")]
    pub ty: ParamType,
    pub default: Option<Value>,
    pub description: String,
    #[serde(skip)]
    pub pos: Pos,
}

impl ParamType {
    pub fn parse(s: &str) -> Option<ParamType> {
        Some(match s {
            "string" | "str" => ParamType::String,
            "int" | "integer" => ParamType::Int,
            "float" | "number" => ParamType::Float,
            "bool" | "boolean" => ParamType::Bool,
            "date" => ParamType::Date,
            "list" | "array" => ParamType::List,
            "object" | "map" => ParamType::Object,
            _ => return None,
        })
    }

    pub fn infer(v: &Value) -> ParamType {
        match v {
            Value::Bool(_) => ParamType::Bool,
            Value::Number(n) if n.is_i64() || n.is_u64() => ParamType::Int,
            Value::Number(_) => ParamType::Float,
            Value::Array(_) => ParamType::List,
            Value::Object(_) => ParamType::Object,
            Value::String(_) | Value::Null => ParamType::String,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::Date => "date",
            ParamType::List => "list",
            ParamType::Object => "object",
        }
    }

    /// Check a JSON value against the type, converting where the meaning is unambiguous
    /// (an int where a float is wanted, a YYYY-MM-DD string for a date).
    pub fn coerce(self, v: &Value) -> Result<Value, String> {
        let bad = || Err(format!("expected {}, got {}", self.name(), v));
        match (self, v) {
            (ParamType::String, Value::String(_)) => Ok(v.clone()),
            (ParamType::String, Value::Number(_) | Value::Bool(_)) => Ok(Value::String(v.to_string())),
            (ParamType::Int, Value::Number(n)) if n.is_i64() => Ok(v.clone()),
            (ParamType::Float, Value::Number(n)) => Ok(n.as_f64().map(Value::from).unwrap_or(Value::Null)),
            (ParamType::Bool, Value::Bool(_)) => Ok(v.clone()),
            (ParamType::Date, Value::String(s)) => match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                Ok(_) => Ok(v.clone()),
                Err(_) => Err(format!("expected a date as YYYY-MM-DD, got {s:?}")),
            },
            (ParamType::List, Value::Array(_)) => Ok(v.clone()),
            (ParamType::Object, Value::Object(_)) => Ok(v.clone()),
            _ => bad(),
        }
    }

    /// Parse a command-line value (`--param k=v`) as this type.
    pub fn parse_cli(self, text: &str) -> Result<Value, String> {
        let v = match self {
            ParamType::String | ParamType::Date => Value::String(text.to_string()),
            _ => serde_json::from_str(text).map_err(|_| format!("expected {}, got {text:?}", self.name()))?,
        };
        self.coerce(&v)
    }
}

/// Merge given values over the declared defaults. Unknown names and type mismatches are errors
/// that name the param and what was expected.
pub fn resolve(
    defs: &BTreeMap<String, ParamDef>,
    given: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, String> {
    let mut out = BTreeMap::new();
    for (name, v) in given {
        let def = defs.get(name).ok_or_else(|| {
            let known: Vec<&str> = defs.keys().map(String::as_str).collect();
            format!(
                "unknown param `{name}`; this pipeline takes: {}",
                if known.is_empty() { "no params".to_string() } else { known.join(", ") }
            )
        })?;
        let v = match v {
            Value::String(s) if !matches!(def.ty, ParamType::String | ParamType::Date) => def.ty.parse_cli(s),
            other => def.ty.coerce(other),
        }
        .map_err(|e| format!("param `{name}`: {e}"))?;
        out.insert(name.clone(), v);
    }
    for (name, def) in defs {
        if out.contains_key(name) {
            continue;
        }
        match &def.default {
            Some(d) => {
                out.insert(name.clone(), d.clone());
            }
            None => {
                return Err(format!(
                    "param `{name}` ({}) has no default: give it with --param {name}=...",
                    def.ty.name()
                ));
            }
        }
    }
    Ok(out)
}

/// Parse `k=v` pairs from the command line into raw string values (typed later by [`resolve`]).
pub fn parse_pairs(pairs: &[String]) -> Result<BTreeMap<String, Value>, String> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| format!("--param {p:?}: write it as name=value"))?;
        out.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> BTreeMap<String, ParamDef> {
        let mut d = BTreeMap::new();
        d.insert(
            "n".into(),
            ParamDef { ty: ParamType::Int, default: Some(json!(3)), description: String::new(), pos: Pos::default() },
        );
        d.insert(
            "day".into(),
            ParamDef { ty: ParamType::Date, default: None, description: String::new(), pos: Pos::default() },
        );
        d
    }

    #[test]
    fn cli_values_are_typed_and_defaults_fill_in() {
        let given = parse_pairs(&["day=2024-01-02".into()]).unwrap();
        let out = resolve(&defs(), &given).unwrap();
        assert_eq!(out["n"], json!(3));
        assert_eq!(out["day"], json!("2024-01-02"));
        let given = parse_pairs(&["day=2024-01-02".into(), "n=7".into()]).unwrap();
        assert_eq!(resolve(&defs(), &given).unwrap()["n"], json!(7));
    }

    #[test]
    fn mismatches_and_unknown_names_say_what_to_fix() {
        let e = resolve(&defs(), &parse_pairs(&["n=abc".into(), "day=2024-01-02".into()]).unwrap()).unwrap_err();
        assert!(e.contains("param `n`") && e.contains("expected int"), "{e}");
        let e = resolve(&defs(), &parse_pairs(&["zz=1".into()]).unwrap()).unwrap_err();
        assert!(e.contains("unknown param `zz`") && e.contains("day, n"), "{e}");
        let e = resolve(&defs(), &BTreeMap::new()).unwrap_err();
        assert!(e.contains("`day`") && e.contains("no default"), "{e}");
        let e = resolve(&defs(), &parse_pairs(&["day=yesterday".into()]).unwrap()).unwrap_err();
        assert!(e.contains("YYYY-MM-DD"), "{e}");
    }
}
