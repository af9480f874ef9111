//! Pipelines, pure: YAML text → [`spec::Pipeline`] → validated [`Plan`]. No I/O happens here.

pub mod params;
pub mod schedule;
pub mod spec;
pub mod template;
pub mod validate;

use std::collections::HashMap;

pub use spec::{Pipeline, Task, TriggerRule};
pub use validate::{SpecError, SpecErrors};

/// A validated pipeline, ready to run: the spec plus its DAG in index form.
#[derive(Debug, Clone)]
pub struct Plan {
    pub spec: Pipeline,
    pub index: HashMap<String, usize>,
    /// `upstream[i]`: the tasks task `i` depends on directly.
    pub upstream: Vec<Vec<usize>>,
    /// `downstream[i]`: the tasks that depend on task `i` directly.
    pub downstream: Vec<Vec<usize>>,
    /// A topological order of all tasks.
    pub topo: Vec<usize>,
}

/// Parse and validate a pipeline file's text; `file` names it in error messages.
pub fn load(file: &str, yaml: &str, ops: &crate::ops::Registry) -> Result<Plan, SpecErrors> {
    let (spec, mut errors) = spec::parse(yaml);
    let result = match spec {
        Some(spec) => validate::validate(spec, ops),
        None => Err(Vec::new()),
    };
    match result {
        Ok(plan) if errors.is_empty() => Ok(plan),
        Ok(_) => Err(SpecErrors { file: file.to_string(), errors }),
        Err(more) => {
            errors.extend(more);
            errors.sort_by_key(|e| (e.line, e.col));
            errors.dedup();
            Err(SpecErrors { file: file.to_string(), errors })
        }
    }
}
