//! Trading sessions in a named time zone: a rule's `[rule.session]` table.
//!
//! A session is a regular-hours window (`open` to `close`, local times in
//! `time_zone`) on the trading days of a calendar (`days` of the week, less
//! `holidays`, with `early_close` days). Local times are turned into
//! instants by [`jiff`] with its bundled time-zone database (the same
//! answers on every machine, with or without `/usr/share/zoneinfo`), so a
//! 09:30 New York open is 14:30 UTC in winter and 13:30 UTC in summer. A
//! `close` earlier than `open` is an overnight session (CME Globex: 17:00
//! to 16:00 Chicago time): it opens on the evening before its trading date.
//!
//! What a rule reads from it, at the event time being evaluated:
//! [`Calendar::in_session`], [`Calendar::since_open`],
//! [`Calendar::until_close`], [`Calendar::time_of_day`], and
//! [`Calendar::trading_date`], the key of once-per-session latches (which
//! therefore reset at the session boundary, not at UTC midnight).
//!
//! Nothing here allocates per call: a time-zone lookup is a search of the
//! zone's transitions.

use std::collections::BTreeMap;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Deserialize;
use toml::Spanned;

const NS_PER_DAY: i64 = 86_400_000_000_000;

/// A `[rule.session]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// An IANA name: `America/New_York`, `America/Chicago`, `UTC`.
    pub time_zone: Spanned<String>,
    /// Local time the session opens, `HH:MM` or `HH:MM:SS`.
    pub open: Spanned<String>,
    /// Local time it closes; earlier than `open` for an overnight session.
    pub close: Spanned<String>,
    /// Trading days of the week (of the trading date): `mon` ... `sun`;
    /// default Monday to Friday.
    pub days: Option<Vec<Spanned<String>>>,
    /// Dates without a session, `YYYY-MM-DD`.
    #[serde(default)]
    pub holidays: Vec<Spanned<String>>,
    /// Dates with an earlier close: `{ "2026-11-27" = "13:00" }`.
    #[serde(default)]
    pub early_close: BTreeMap<String, Spanned<String>>,
}

/// One trading date's session, as instants (ns since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub open_ns: i64,
    pub close_ns: i64,
}

/// A compiled session calendar.
#[derive(Clone, Debug)]
pub struct Calendar {
    pub time_zone: TimeZone,
    pub zone_name: String,
    open: Time,
    close: Time,
    /// Bit `n` set: weekday `n` (Monday 0) is a trading day.
    days: u8,
    holidays: Vec<Date>,
    early_close: Vec<(Date, Time)>,
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Self) -> bool {
        self.zone_name == other.zone_name
            && self.open == other.open
            && self.close == other.close
            && self.days == other.days
            && self.holidays == other.holidays
            && self.early_close == other.early_close
    }
}

fn local_time(s: &Spanned<String>, key: &str, errors: &mut Vec<(usize, String)>) -> Option<Time> {
    let text = s.get_ref();
    let ok = text.len() >= 5 && text.as_bytes()[2] == b':';
    match text.parse::<Time>() {
        Ok(t) if ok => Some(t),
        _ => {
            errors.push((
                s.span().start,
                format!("`{key}`: `{text}` is not a local time such as `09:30` or `16:00:00`"),
            ));
            None
        }
    }
}

fn date(s: &str, offset: usize, key: &str, errors: &mut Vec<(usize, String)>) -> Option<Date> {
    match s.parse::<Date>() {
        Ok(d) if s.len() == 10 => Some(d),
        _ => {
            errors.push((offset, format!("`{key}`: `{s}` is not a date such as `2026-11-26`")));
            None
        }
    }
}

impl SessionSpec {
    /// The calendar, or every problem with byte offsets into the file.
    ///
    /// # Errors
    /// An unknown time zone, a malformed time, day or date.
    pub fn compile(&self) -> Result<Calendar, Vec<(usize, String)>> {
        let mut errors = Vec::new();
        let zone_name = self.time_zone.get_ref().clone();
        let time_zone = match TimeZone::get(&zone_name) {
            Ok(tz) => Some(tz),
            Err(_) => {
                errors.push((
                    self.time_zone.span().start,
                    format!("unknown time zone `{zone_name}`: use an IANA name such as `America/New_York`"),
                ));
                None
            }
        };
        let open = local_time(&self.open, "open", &mut errors);
        let close = local_time(&self.close, "close", &mut errors);
        if let (Some(o), Some(c)) = (open, close) {
            if o == c {
                errors.push((self.close.span().start, "`close` must differ from `open`".into()));
            }
        }
        let mut days = 0u8;
        match &self.days {
            None => days = 0b0001_1111,
            Some(list) => {
                for d in list {
                    match weekday(d.get_ref()) {
                        Some(w) => days |= 1 << w.to_monday_zero_offset(),
                        None => errors.push((
                            d.span().start,
                            format!("unknown day `{}`: use mon, tue, wed, thu, fri, sat or sun", d.get_ref()),
                        )),
                    }
                }
                if list.is_empty() {
                    errors.push((self.open.span().start, "`days` names no trading day".into()));
                }
            }
        }
        let mut holidays: Vec<Date> = self
            .holidays
            .iter()
            .filter_map(|h| date(h.get_ref(), h.span().start, "holidays", &mut errors))
            .collect();
        holidays.sort();
        let mut early_close = Vec::new();
        for (day, time) in &self.early_close {
            let d = date(day, time.span().start, "early_close", &mut errors);
            let t = local_time(time, "early_close", &mut errors);
            if let (Some(d), Some(t), Some(o), Some(c)) = (d, t, open, close) {
                let inside = if o < c { o < t && t <= c } else { t <= c || t > o };
                if !inside {
                    errors.push((
                        time.span().start,
                        format!("`early_close`: {day} closes at {t}, outside the session's {o} to {c}"),
                    ));
                }
                early_close.push((d, t));
            }
        }
        match (time_zone, open, close) {
            (Some(time_zone), Some(open), Some(close)) if errors.is_empty() => Ok(Calendar {
                time_zone,
                zone_name,
                open,
                close,
                days,
                holidays,
                early_close,
            }),
            _ => Err(errors),
        }
    }
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

impl Calendar {
    fn overnight(&self) -> bool {
        self.close < self.open
    }

    fn local(&self, at_ns: i64) -> Option<DateTime> {
        let ts = Timestamp::from_nanosecond(i128::from(at_ns)).ok()?;
        Some(self.time_zone.to_offset(ts).to_datetime(ts))
    }

    fn instant(&self, date: Date, time: Time) -> Option<i64> {
        let ts = self
            .time_zone
            .to_ambiguous_timestamp(date.to_datetime(time))
            .compatible()
            .ok()?;
        i64::try_from(ts.as_nanosecond()).ok()
    }

    /// Whether `date` is a trading date.
    pub fn is_trading_date(&self, date: Date) -> bool {
        self.days & (1 << date.weekday().to_monday_zero_offset()) != 0 && self.holidays.binary_search(&date).is_err()
    }

    /// The trading date an instant belongs to: its local date, or for an
    /// overnight session from the open on, the next date.
    pub fn trading_date(&self, at_ns: i64) -> Option<Date> {
        let local = self.local(at_ns)?;
        if self.overnight() && local.time() >= self.open {
            local.date().tomorrow().ok()
        } else {
            Some(local.date())
        }
    }

    /// The trading date as a day number (days since 1970-01-01), the key
    /// of once-per-session latches.
    pub fn trading_day(&self, at_ns: i64) -> Option<i32> {
        let d = self.trading_date(at_ns)?;
        let epoch = Date::constant(1970, 1, 1);
        Some(epoch.until(d).ok()?.get_days())
    }

    /// The session of `date`, if it is a trading date.
    pub fn session(&self, date: Date) -> Option<Session> {
        if !self.is_trading_date(date) {
            return None;
        }
        let close = self
            .early_close
            .iter()
            .find(|(d, _)| *d == date)
            .map_or(self.close, |(_, t)| *t);
        let open_date = if self.overnight() { date.yesterday().ok()? } else { date };
        // An overnight session's early close may still fall on the
        // evening it opened (after `open`).
        let close_date = if self.overnight() && close > self.open {
            open_date
        } else {
            date
        };
        Some(Session {
            open_ns: self.instant(open_date, self.open)?,
            close_ns: self.instant(close_date, close)?,
        })
    }

    /// The session `at_ns` is in (open included, close excluded).
    pub fn current(&self, at_ns: i64) -> Option<Session> {
        let s = self.session(self.trading_date(at_ns)?)?;
        (s.open_ns <= at_ns && at_ns < s.close_ns).then_some(s)
    }

    /// Whether `at_ns` is within regular hours.
    pub fn in_session(&self, at_ns: i64) -> bool {
        self.current(at_ns).is_some()
    }

    /// Nanoseconds since the session opened; `None` outside a session.
    pub fn since_open(&self, at_ns: i64) -> Option<i64> {
        self.current(at_ns).map(|s| at_ns - s.open_ns)
    }

    /// Nanoseconds until the session closes; `None` outside a session.
    pub fn until_close(&self, at_ns: i64) -> Option<i64> {
        self.current(at_ns).map(|s| s.close_ns - at_ns)
    }

    /// Nanoseconds since local midnight.
    pub fn time_of_day(&self, at_ns: i64) -> Option<i64> {
        let t = self.local(at_ns)?.time();
        let secs = i64::from(t.hour()) * 3600 + i64::from(t.minute()) * 60 + i64::from(t.second());
        Some((secs * 1_000_000_000 + i64::from(t.subsec_nanosecond())).rem_euclid(NS_PER_DAY))
    }

    /// The close of the session `at_ns` is in.
    pub fn close_of(&self, at_ns: i64) -> Option<i64> {
        self.current(at_ns).map(|s| s.close_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(open: &str, close: &str, tz: &str) -> Calendar {
        let text = format!("time_zone = \"{tz}\"\nopen = \"{open}\"\nclose = \"{close}\"\nholidays = [\"2026-11-26\"]\nearly_close = {{ \"2026-11-27\" = \"13:00\" }}\n");
        toml::from_str::<SessionSpec>(&text).unwrap().compile().unwrap()
    }

    fn ns(rfc3339: &str) -> i64 {
        i64::try_from(rfc3339.parse::<Timestamp>().unwrap().as_nanosecond()).unwrap()
    }

    #[test]
    fn new_york_open_follows_daylight_saving() {
        let c = cal("09:30", "16:00", "America/New_York");
        // Friday before the March change: 14:30 UTC; the Monday after: 13:30 UTC.
        assert_eq!(c.since_open(ns("2026-03-06T14:30:00Z")), Some(0));
        assert_eq!(c.since_open(ns("2026-03-09T13:30:00Z")), Some(0));
        assert!(!c.in_session(ns("2026-03-09T13:29:59.999999999Z")));
        assert_eq!(c.until_close(ns("2026-03-09T19:25:00Z")), Some(35 * 60 * 1_000_000_000));
        assert!(!c.in_session(ns("2026-03-09T20:00:00Z")));
        // Weekend, holiday, early close.
        assert!(!c.in_session(ns("2026-03-07T15:00:00Z")));
        assert!(!c.in_session(ns("2026-11-26T15:00:00Z")));
        assert!(c.in_session(ns("2026-11-27T17:59:59Z")));
        assert!(!c.in_session(ns("2026-11-27T18:00:00Z")));
        assert_eq!(
            c.time_of_day(ns("2026-03-09T13:30:00Z")),
            Some((9 * 3600 + 1800) * 1_000_000_000)
        );
    }

    #[test]
    fn overnight_session_belongs_to_the_next_date() {
        let c = cal("17:00", "16:00", "America/Chicago");
        // Sunday 17:00 CDT (22:00 UTC) opens Monday's session.
        let sunday_open = ns("2026-03-08T22:00:00Z");
        assert_eq!(c.since_open(sunday_open), Some(0));
        assert_eq!(c.trading_date(sunday_open), Some(Date::constant(2026, 3, 9)));
        assert_eq!(c.until_close(ns("2026-03-09T20:55:00Z")), Some(5 * 60 * 1_000_000_000));
        assert!(!c.in_session(ns("2026-03-09T21:30:00Z")));
    }

    #[test]
    fn bad_values_are_reported_where_written() {
        let text = "time_zone = \"Mars/Olympus\"\nopen = \"9:30\"\nclose = \"16:00\"\ndays = [\"monday\"]\n";
        let errors = toml::from_str::<SessionSpec>(text).unwrap().compile().unwrap_err();
        let messages: Vec<_> = errors.iter().map(|e| e.1.as_str()).collect();
        assert!(messages[0].contains("unknown time zone `Mars/Olympus`"), "{messages:?}");
        assert!(messages[1].contains("`open`: `9:30`"), "{messages:?}");
        assert!(messages[2].contains("unknown day `monday`"), "{messages:?}");
    }
}
