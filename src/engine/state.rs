//! Task instance states and the trigger rules that move a pending task on.

use crate::pipeline::TriggerRule;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for its upstream tasks.
    Pending,
    Queued,
    Running,
    Success,
    Failed,
    UpForRetry,
    Skipped,
    UpstreamFailed,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Queued => "queued",
            State::Running => "running",
            State::Success => "success",
            State::Failed => "failed",
            State::UpForRetry => "up_for_retry",
            State::Skipped => "skipped",
            State::UpstreamFailed => "upstream_failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> State {
        match s {
            "queued" => State::Queued,
            "running" => State::Running,
            "success" => State::Success,
            "failed" => State::Failed,
            "up_for_retry" => State::UpForRetry,
            "skipped" => State::Skipped,
            "upstream_failed" => State::UpstreamFailed,
            "cancelled" => State::Cancelled,
            _ => State::Pending,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Success | State::Failed | State::Skipped | State::UpstreamFailed | State::Cancelled)
    }

    fn is_failure(self) -> bool {
        matches!(self, State::Failed | State::UpstreamFailed | State::Cancelled)
    }
}

/// What to do with a pending task given its direct upstream states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Wait,
    Run,
    Skip,
    UpstreamFailed,
}

pub fn decide(rule: TriggerRule, upstream: &[State]) -> Decision {
    let done = upstream.iter().all(|s| s.is_terminal());
    let any_failed = upstream.iter().any(|s| s.is_failure());
    let any_success = upstream.contains(&State::Success);
    let any_skipped = upstream.contains(&State::Skipped);
    match rule {
        TriggerRule::AllSuccess if any_failed => Decision::UpstreamFailed,
        TriggerRule::AllSuccess if any_skipped => Decision::Skip,
        TriggerRule::AllSuccess if done => Decision::Run,
        TriggerRule::AllDone if done => Decision::Run,
        TriggerRule::OneFailed if any_failed => Decision::Run,
        TriggerRule::OneFailed if done => Decision::Skip,
        TriggerRule::OneSuccess if any_success => Decision::Run,
        TriggerRule::OneSuccess if done && upstream.iter().all(|s| *s == State::Skipped) => Decision::Skip,
        TriggerRule::OneSuccess if done => Decision::UpstreamFailed,
        TriggerRule::NoneFailed if any_failed => Decision::UpstreamFailed,
        TriggerRule::NoneFailed if done => Decision::Run,
        _ => Decision::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{Run, Skip, Wait};
    use State::*;
    const UF: Decision = Decision::UpstreamFailed;
    use TriggerRule as R;

    #[test]
    fn trigger_rules_follow_airflow() {
        let cases: &[(R, &[State], Decision)] = &[
            (R::AllSuccess, &[], Run),
            (R::AllSuccess, &[Success, Running], Wait),
            (R::AllSuccess, &[Success, Success], Run),
            (R::AllSuccess, &[Success, Failed], UF),
            (R::AllSuccess, &[Success, Skipped], Skip),
            (R::AllDone, &[Failed, Running], Wait),
            (R::AllDone, &[Failed, Skipped], Run),
            (R::OneFailed, &[Failed, Running], Run),
            (R::OneFailed, &[Success, Success], Skip),
            (R::OneSuccess, &[Success, Running], Run),
            (R::OneSuccess, &[Failed, Failed], UF),
            (R::OneSuccess, &[Skipped, Skipped], Skip),
            (R::NoneFailed, &[Success, Skipped], Run),
            (R::NoneFailed, &[UpstreamFailed, Success], UF),
            (R::NoneFailed, &[Success, Queued], Wait),
        ];
        for (rule, ups, want) in cases {
            assert_eq!(decide(*rule, ups), *want, "{rule:?} {ups:?}");
        }
    }
}
