//! Schedules: 5-field cron (parsed by `croner`), the `@hourly`-style aliases, and `@once`.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;

#[derive(Debug, Clone)]
pub enum Schedule {
    Cron(Box<Cron>),
    Once,
}

impl Schedule {
    /// Parse a schedule; the error says what forms are accepted.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let t = text.trim();
        let expr = match t {
            "@once" => return Ok(Schedule::Once),
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(format!(
                    "unknown schedule alias `{other}`; use @hourly, @daily, @weekly, @monthly, @yearly or @once"
                ));
            }
            other => other,
        };
        let fields = expr.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "bad cron `{expr}`: expected 5 fields (minute hour day-of-month month day-of-week), got {fields}"
            ));
        }
        Cron::from_str(expr).map(|c| Schedule::Cron(Box::new(c))).map_err(|e| format!("bad cron `{expr}`: {e}"))
    }

    /// The first schedule tick strictly after `t`; `None` for `@once`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(c) => c.find_next_occurrence(&t, false).ok(),
            Schedule::Once => None,
        }
    }

    /// The first tick at or after `t`.
    pub fn first_at_or_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(c) => c.find_next_occurrence(&t, true).ok(),
            Schedule::Once => Some(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn aliases_and_cron_give_the_next_tick() {
        let t = Utc.with_ymd_and_hms(2024, 3, 1, 10, 30, 0).unwrap();
        let daily = Schedule::parse("@daily").unwrap();
        assert_eq!(daily.next_after(t).unwrap(), Utc.with_ymd_and_hms(2024, 3, 2, 0, 0, 0).unwrap());
        let every15 = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(every15.next_after(t).unwrap(), Utc.with_ymd_and_hms(2024, 3, 1, 10, 45, 0).unwrap());
        let hourly = Schedule::parse("@hourly").unwrap();
        assert_eq!(
            hourly
                .first_at_or_after(Utc.with_ymd_and_hms(2024, 3, 1, 11, 0, 0).unwrap())
                .unwrap()
                .format("%H")
                .to_string(),
            "11"
        );
        assert!(matches!(Schedule::parse("@once").unwrap(), Schedule::Once));
    }

    #[test]
    fn bad_cron_is_explained() {
        assert!(Schedule::parse("* * *").unwrap_err().contains("expected 5 fields"));
        assert!(Schedule::parse("0 0 * * * *").unwrap_err().contains("got 6"));
        assert!(Schedule::parse("61 * * * *").unwrap_err().starts_with("bad cron"));
        assert!(Schedule::parse("@sometimes").unwrap_err().contains("unknown schedule alias"));
    }
}
