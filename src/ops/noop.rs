//! `noop`: does nothing and succeeds; useful for joins and for measuring orchestration overhead.

use serde_json::{Value, json};

use super::{Op, Outcome, Param, TaskContext};

pub struct Noop;

impl Op for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
    fn uses_files(&self) -> bool {
        false
    }
    fn params(&self) -> &'static [Param] {
        &[]
    }
    fn run(&self, _ctx: &TaskContext, _with: &Value) -> Result<Outcome, String> {
        Ok(Outcome::Done(json!({})))
    }
}
