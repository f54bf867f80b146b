//! The per-tenant sync schedule: `sync_time`, a 5-field cron expression as PortSIP writes it
//! (`minute hour day-of-month month day-of-week`, default `0 0 * * *`), evaluated on the wall
//! clock of the tenant's IANA `time_zone`.
//!
//! Daylight-saving changes (the rules of `croner`, which follow the Open Cron Pattern
//! Specification):
//! - Spring forward: a fixed time that does not exist that day (02:30 in Europe/Berlin on the
//!   last Sunday of March) runs once, at the first real instant after the gap (03:00 local).
//! - Fall back: a fixed time that exists twice (01:30 in America/New_York on the first Sunday
//!   of November) runs once, at its first occurrence (the daylight-time one); the repeat
//!   is not a second run.
//! - Jobs with a wildcard or stepped hour (`*/15 * * * *`) follow the real clock: they run
//!   every matching instant, so the repeated hour is seen twice.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn parse(cron: &str) -> Result<Cron, String> {
    let fields = cron.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "sync_time `{cron}` must have 5 fields (minute hour day-of-month month day-of-week), found {fields}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(cron)
        .map_err(|e| format!("sync_time `{cron}` is not a valid cron expression: {e}"))
}

/// A `sync_time` value: the text as the administrator wrote it, parsed once when the
/// settings document is read, so nothing downstream parses it again or meets a bad one.
#[derive(Clone, Debug)]
pub struct SyncTime {
    text: String,
    /// Shared by clones: croner's tables take some 5 KB per parsed expression.
    cron: Arc<Cron>,
}

impl SyncTime {
    /// Five fields, each valid; otherwise why not, naming `sync_time`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(SyncTime {
            cron: Arc::new(parse(text)?),
            text: text.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first scheduled instant strictly after `after`, read on the wall clock of `tz`;
    /// an error only for an expression that never fires again (`0 0 31 2 *`).
    pub fn next_run(&self, tz: TimeZone, after: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        let local = after.with_timezone(&tz.0);
        (self.cron.find_next_occurrence(&local, false))
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("no next run for `{}`: {e}", self.text))
    }
}

impl Default for SyncTime {
    /// PortSIP's default: midnight. Parsed once: serde starts every settings document it
    /// reads from the defaults, and the session lookups read one per cache miss.
    fn default() -> Self {
        static MIDNIGHT: LazyLock<SyncTime> =
            LazyLock::new(|| SyncTime::parse("0 0 * * *").expect("the default schedule parses"));
        MIDNIGHT.clone()
    }
}

impl PartialEq for SyncTime {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for SyncTime {}

impl Serialize for SyncTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for SyncTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SyncTime::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A tenant's IANA time zone (`time_zone`; empty means UTC), parsed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeZone(Tz);

impl TimeZone {
    pub const UTC: TimeZone = TimeZone(Tz::UTC);

    /// The zone named `name`, or why it is not one.
    pub fn parse(name: &str) -> Result<Self, String> {
        let trimmed = name.trim();
        let trimmed = if trimmed.is_empty() { "UTC" } else { trimmed };
        (trimmed.parse::<Tz>())
            .map(TimeZone)
            .map_err(|_| format!("time_zone `{name}` is not an IANA time zone name"))
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone::UTC
    }
}

impl Serialize for TimeZone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TimeZone::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    /// [`SyncTime::next_run`] from the two texts of a settings document.
    fn next_run(cron: &str, tz: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        SyncTime::parse(cron)?.next_run(super::TimeZone::parse(tz)?, after)
    }

    fn validate_cron(cron: &str) -> Result<SyncTime, String> {
        SyncTime::parse(cron)
    }

    /// The default is parsed once and shared, since every settings document read starts
    /// from it; it still fires at midnight.
    #[test]
    fn the_default_schedule_is_parsed_once_and_runs_at_midnight() {
        let (a, b) = (SyncTime::default(), SyncTime::default());
        assert!(Arc::ptr_eq(&a.cron, &b.cron));
        assert_eq!(a.as_str(), "0 0 * * *");
        let after = Utc.with_ymd_and_hms(2026, 12, 6, 13, 5, 0).unwrap();
        let next = a.next_run(super::TimeZone::UTC, after).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 0).unwrap());
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    /// Every run in `[from, to)`.
    fn runs(cron: &str, tz: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        loop {
            t = next_run(cron, tz, t).unwrap();
            if t >= to {
                return out;
            }
            out.push(t);
        }
    }

    #[test]
    fn midnight_default_in_utc_and_in_a_zone() {
        let after = utc(2026, 1, 10, 12, 0);
        assert_eq!(
            next_run("0 0 * * *", "UTC", after).unwrap(),
            utc(2026, 1, 11, 0, 0)
        );
        // Berlin is UTC+1 in winter: local midnight is 23:00 UTC the day before.
        assert_eq!(
            next_run("0 0 * * *", "Europe/Berlin", after).unwrap(),
            utc(2026, 1, 10, 23, 0)
        );
        // Strictly after: exactly at the run time gives the next day's.
        assert_eq!(
            next_run("0 0 * * *", "UTC", utc(2026, 1, 11, 0, 0)).unwrap(),
            utc(2026, 1, 12, 0, 0)
        );
        // An empty time zone is UTC.
        assert_eq!(
            next_run("0 0 * * *", "", after).unwrap(),
            utc(2026, 1, 11, 0, 0)
        );
    }

    #[test]
    fn custom_time_and_weekday() {
        // 2026-07-01 is a Wednesday; New York is UTC-4 in summer.
        let after = utc(2026, 7, 1, 0, 0);
        assert_eq!(
            next_run("15 6 * * *", "America/New_York", after).unwrap(),
            utc(2026, 7, 1, 10, 15)
        );
        // Mondays at 22:45 Berlin (UTC+2): 2026-07-06 20:45 UTC.
        assert_eq!(
            next_run("45 22 * * 1", "Europe/Berlin", after).unwrap(),
            utc(2026, 7, 6, 20, 45)
        );
    }

    #[test]
    fn spring_forward_runs_once_after_the_gap() {
        // Berlin 2026-03-29: 02:00 → 03:00 CEST. 02:30 does not exist: one run at 03:00 CEST
        // (01:00 UTC); the days around run at 02:30 local as usual.
        let got = runs(
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 3, 28, 0, 0),
            utc(2026, 3, 31, 0, 0),
        );
        assert_eq!(
            got,
            vec![
                utc(2026, 3, 28, 1, 30),
                utc(2026, 3, 29, 1, 0),
                utc(2026, 3, 30, 0, 30)
            ]
        );
        // New York 2026-03-08: 02:00 EST → 03:00 EDT; one run at 03:00 EDT (07:00 UTC).
        let got = runs(
            "30 2 * * *",
            "America/New_York",
            utc(2026, 3, 7, 12, 0),
            utc(2026, 3, 9, 12, 0),
        );
        assert_eq!(got, vec![utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]);
    }

    #[test]
    fn fall_back_runs_once_not_twice() {
        // Berlin 2026-10-25: 03:00 CEST → 02:00 CET; 02:30 happens twice, runs once (the
        // first, 00:30 UTC).
        let got = runs(
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 10, 24, 12, 0),
            utc(2026, 10, 26, 12, 0),
        );
        assert_eq!(
            got,
            vec![utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
        );
        // New York 2026-11-01: 02:00 EDT → 01:00 EST; 01:30 happens twice, runs once.
        let got = runs(
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 31, 12, 0),
            utc(2026, 11, 2, 12, 0),
        );
        assert_eq!(got, vec![utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]);
    }

    /// Whether a run came due in `(since, now]`, as the worker decides it: the next instant
    /// after `since` is not later than `now`.
    fn is_due(
        cron: &str,
        tz: &str,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, String> {
        Ok(next_run(cron, tz, since)? <= now)
    }

    #[test]
    fn due_decision_with_an_injected_clock() {
        let cron = "0 0 * * *";
        let tz = "Europe/Berlin";
        // Local midnight 2026-01-11 = 2026-01-10 23:00 UTC.
        let before = utc(2026, 1, 10, 22, 59);
        let at = utc(2026, 1, 10, 23, 0);
        let after = utc(2026, 1, 10, 23, 0) + chrono::Duration::seconds(30);
        assert!(!is_due(cron, tz, before - chrono::Duration::seconds(30), before).unwrap());
        assert!(is_due(cron, tz, before, at).unwrap());
        assert!(is_due(cron, tz, before, after).unwrap());
        // The next window, after the run time, is not due again.
        assert!(!is_due(cron, tz, after, after + chrono::Duration::seconds(30)).unwrap());
    }

    #[test]
    fn invalid_expressions_are_explained() {
        assert!(validate_cron("0 0 * * *").is_ok());
        assert!(validate_cron("*/15 8-18 * * MON-FRI").is_ok());
        let e = validate_cron("0 0 * *").unwrap_err();
        assert!(e.contains("5 fields"), "{e}");
        let e = validate_cron("0 0 0 * * *").unwrap_err();
        assert!(e.contains("5 fields"), "{e}");
        let e = validate_cron("61 0 * * *").unwrap_err();
        assert!(e.contains("not a valid cron"), "{e}");
        let e = next_run("0 0 * * *", "Mars/Olympus", utc(2026, 1, 1, 0, 0)).unwrap_err();
        assert!(e.contains("IANA"), "{e}");
    }
}
