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

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    const SPEC: &str = include_str!("../../pipelines/hello.yaml");

    /// One edit of the text: insert, delete or replace a character at a position.
    fn edit() -> impl Strategy<Value = (usize, u8, char)> {
        let chars = prop_oneof![
            Just(':'),
            Just('-'),
            Just(' '),
            Just('\n'),
            Just('\t'),
            Just('{'),
            Just('}'),
            Just('['),
            Just(']'),
            Just('"'),
            Just('\''),
            Just('$'),
            Just('#'),
            Just('&'),
            Just('*'),
            Just('!'),
            Just('|'),
            Just('>'),
            any::<char>()
        ];
        (0..SPEC.len() + 1, 0u8..3, chars)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Mangled specs never panic the parser, and every error points inside the text.
        #[test]
        fn mangled_specs_get_errors_with_positions_never_a_panic(edits in prop::collection::vec(edit(), 1..12)) {
            let mut text: Vec<char> = SPEC.chars().collect();
            for (at, kind, c) in edits {
                let at = at.min(text.len());
                match kind {
                    0 => text.insert(at, c),
                    1 if at < text.len() => { text.remove(at); }
                    _ if at < text.len() => text[at] = c,
                    _ => text.push(c),
                }
            }
            let text: String = text.into_iter().collect();
            let lines = text.lines().count() + 1;
            if let Err(e) = super::load("fuzz.yaml", &text, &crate::ops::Registry::builtin()) {
                prop_assert!(!e.errors.is_empty(), "an error with no detail for {text:?}");
                for err in &e.errors {
                    prop_assert!(err.line <= lines, "line {} of {lines}: {}", err.line, err.message);
                    prop_assert!(!err.message.is_empty());
                }
            }
        }

        /// Arbitrary text is an error (or, rarely, a valid spec), never a panic.
        #[test]
        fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,400}") {
            let _ = super::load("fuzz.yaml", &text, &crate::ops::Registry::builtin());
        }
    }
}
