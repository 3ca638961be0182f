//! Time phrases in a query ("last night", "since 14:00 yesterday", "in the last 2 hours")
//! become a time window; the phrase is taken out of the text that is searched and shown back
//! in the answer. Times of day are the host's local time.

use serde::Serialize;

const MINUTE: i64 = 60 * 1_000_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// A window read from the query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeWindow {
    /// Unix nanoseconds, inclusive.
    pub since_ns: i64,
    pub until_ns: i64,
    /// The words it was read from.
    pub phrase: String,
}

/// What the query said about time.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The query without the time phrase.
    pub rest: String,
    pub window: Option<TimeWindow>,
    /// A phrase that looked like a time but named none (said back to the caller).
    pub unreadable: Option<String>,
}

/// The local clock at `now_ns`: the start of today (local midnight) in Unix nanoseconds.
struct Clock {
    now: i64,
    midnight: i64,
}

impl Clock {
    fn new(now_ns: i64, utc_offset_s: i64) -> Self {
        let local = now_ns + utc_offset_s * 1_000_000_000;
        let midnight = local - local.rem_euclid(DAY) - utc_offset_s * 1_000_000_000;
        Self { now: now_ns, midnight }
    }

    /// `hour:minute` on the day `days` from today (negative: past).
    fn at(&self, days: i64, hour: i64, minute: i64) -> i64 {
        self.midnight + days * DAY + hour * HOUR + minute * MINUTE
    }
}

/// The host's offset from UTC now, in seconds (its time zone, daylight saving included).
pub fn local_utc_offset() -> i64 {
    // SAFETY: localtime_r fills a zeroed tm for a valid time_t.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() { 0 } else { tm.tm_gmtoff }
    }
}

/// Finds a time phrase in `query` (lower-cased words), relative to `now_ns`.
pub fn extract(query: &str, now_ns: i64, utc_offset_s: i64) -> Extracted {
    let clock = Clock::new(now_ns, utc_offset_s);
    let tokens: Vec<String> =
        query.split_whitespace().map(|w| w.trim_matches(|c: char| matches!(c, ',' | '?' | '!' | ';')).to_lowercase()).collect();
    for start in 0..tokens.len() {
        if let Some((len, found)) = phrase_at(&tokens[start..], &clock) {
            // A leading "in", "during", "from", "over" belongs to the phrase.
            let from = if start > 0 && matches!(tokens[start - 1].as_str(), "in" | "during" | "from" | "over" | "within") {
                start - 1
            } else {
                start
            };
            let phrase = tokens[from..start + len].join(" ");
            let rest: Vec<&str> =
                query.split_whitespace().enumerate().filter(|(i, _)| *i < from || *i >= start + len).map(|(_, w)| w).collect();
            let rest = rest.join(" ");
            return match found {
                Found::Window(since, until) => {
                    Extracted { rest, window: Some(TimeWindow { since_ns: since, until_ns: until, phrase }), unreadable: None }
                }
                Found::Unreadable => Extracted { rest, window: None, unreadable: Some(phrase) },
            };
        }
    }
    Extracted { rest: query.to_owned(), window: None, unreadable: None }
}

enum Found {
    Window(i64, i64),
    Unreadable,
}

/// A time phrase starting at `w[0]`: how many words it takes and what it means.
fn phrase_at(w: &[String], c: &Clock) -> Option<(usize, Found)> {
    let word = |i: usize| w.get(i).map(String::as_str).unwrap_or("");
    let part_of_day = |days: i64, part: &str| -> Option<(i64, i64)> {
        Some(match part {
            "morning" => (c.at(days, 0, 0), c.at(days, 12, 0)),
            "afternoon" => (c.at(days, 12, 0), c.at(days, 18, 0)),
            "evening" | "night" => (c.at(days, 18, 0), c.at(days + 1, 0, 0)),
            _ => return None,
        })
    };
    let window = |since: i64, until: i64| Found::Window(since, until.min(c.now));
    match word(0) {
        "last" | "past" if word(1) == "night" => return Some((2, window(c.at(-1, 18, 0), c.at(0, 6, 0)))),
        "overnight" => return Some((1, window(c.at(-1, 18, 0), c.at(0, 6, 0)))),
        "yesterday" => {
            if let Some((since, until)) = part_of_day(-1, word(1)) {
                return Some((2, window(since, until)));
            }
            return Some((1, window(c.at(-1, 0, 0), c.at(0, 0, 0))));
        }
        "today" => return Some((1, window(c.at(0, 0, 0), c.now))),
        "tonight" => return Some((1, window(c.at(0, 18, 0), c.now))),
        "this" => {
            if let Some((since, until)) = part_of_day(0, word(1)) {
                return Some((2, window(since, until)));
            }
            if word(1) == "week" {
                return Some((2, window(c.now - 7 * DAY, c.now)));
            }
        }
        "the" if word(1) == "day" && word(2) == "before" && word(3) == "yesterday" => {
            return Some((4, window(c.at(-2, 0, 0), c.at(-1, 0, 0))));
        }
        "day" if word(1) == "before" && word(2) == "yesterday" => return Some((3, window(c.at(-2, 0, 0), c.at(-1, 0, 0)))),
        "last" | "past" | "the" => {
            // "last 2 hours", "past hour", "the last 30 minutes", "the past day", "last week"
            let skip = usize::from(word(0) == "the" && matches!(word(1), "last" | "past"));
            if word(0) == "the" && skip == 0 {
                return None;
            }
            let (n, unit_at) = match word(1 + skip).parse::<i64>() {
                Ok(n) => (n, 2 + skip),
                Err(_) if matches!(word(1 + skip), "a" | "an" | "one") => (1, 2 + skip),
                Err(_) => (1, 1 + skip),
            };
            if let Some(unit) = unit(word(unit_at)) {
                return Some((unit_at + 1, window(c.now - n.saturating_mul(unit), c.now)));
            }
        }
        "since" => {
            let (len, since) = since_at(&w[1..], c)?;
            return Some((1 + len, since.map_or(Found::Unreadable, |s| window(s, c.now))));
        }
        _ => {}
    }
    // "2 hours ago"-style windows are not read: the words stay in the query.
    None
}

/// What follows "since": its length, and the moment (None: looks like a time but is not one).
fn since_at(w: &[String], c: &Clock) -> Option<(usize, Option<i64>)> {
    let word = |i: usize| w.get(i).map(String::as_str).unwrap_or("");
    match word(0) {
        "yesterday" => match word(1) {
            "morning" => Some((2, Some(c.at(-1, 0, 0)))),
            "afternoon" => Some((2, Some(c.at(-1, 12, 0)))),
            "evening" => Some((2, Some(c.at(-1, 18, 0)))),
            _ => Some((1, Some(c.at(-1, 0, 0)))),
        },
        "midnight" | "today" => Some((1, Some(c.at(0, 0, 0)))),
        "this" if word(1) == "morning" => Some((2, Some(c.at(0, 0, 0)))),
        "last" if word(1) == "night" => Some((2, Some(c.at(-1, 18, 0)))),
        "monday" | "tuesday" | "wednesday" | "thursday" | "friday" | "saturday" | "sunday" => {
            let target =
                ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"].iter().position(|d| *d == word(0))? as i64;
            // 1970-01-01 was a Thursday (3 with Monday as 0).
            let today = ((c.midnight / DAY) + 3).rem_euclid(7);
            let back = (today - target).rem_euclid(7);
            Some((1, Some(c.at(-back, 0, 0))))
        }
        text => {
            let (clock, used) = clock_time(text, word(1))?;
            let day = match word(used) {
                "yesterday" => Some(-1),
                "today" => Some(0),
                _ => None,
            };
            let used = used + usize::from(day.is_some());
            match clock {
                Some((h, m)) => {
                    let days = day.unwrap_or(if c.at(0, h, m) > c.now { -1 } else { 0 });
                    Some((used, Some(c.at(days, h, m))))
                }
                None => Some((used, None)),
            }
        }
    }
}

/// `14:00`, `14h`, `2pm`, `2 pm`, `9am`: ((hour, minute) or None when out of range, words used).
/// `None` when the word does not look like a time of day at all.
fn clock_time(text: &str, next: &str) -> Option<(Option<(i64, i64)>, usize)> {
    let (body, pm, used) = if let Some(b) = text.strip_suffix("pm") {
        (b, Some(true), 1)
    } else if let Some(b) = text.strip_suffix("am") {
        (b, Some(false), 1)
    } else if matches!(next, "pm" | "am") && text.chars().all(|c| c.is_ascii_digit() || c == ':') {
        (text, Some(next == "pm"), 2)
    } else {
        (text.strip_suffix('h').unwrap_or(text), None, 1)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_ascii_digit() || c == ':') || !body.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match body.split_once(':') {
        Some((h, m)) => (h.parse::<i64>().ok(), m.parse::<i64>().ok()),
        None => (body.parse::<i64>().ok(), Some(0)),
    };
    let valid = |h: i64, m: i64| (0..24).contains(&h) && (0..60).contains(&m);
    let time = match (h, m, pm) {
        (Some(h), Some(m), Some(pm)) if (1..=12).contains(&h) && (0..60).contains(&m) => Some(((h % 12) + if pm { 12 } else { 0 }, m)),
        (Some(h), Some(m), None) if valid(h, m) => Some((h, m)),
        _ => None,
    };
    Some((time, used))
}

fn unit(word: &str) -> Option<i64> {
    Some(match word {
        "minute" | "minutes" | "min" | "mins" => MINUTE,
        "hour" | "hours" | "h" | "hr" | "hrs" => HOUR,
        "day" | "days" | "24h" => DAY,
        "week" | "weeks" => 7 * DAY,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-20T09:30:00Z, a Friday.
    const NOW: i64 = 1_795_167_000 * 1_000_000_000;

    fn at(text: &str) -> i64 {
        let t = humantime::parse_rfc3339(text).unwrap();
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
    }

    fn window(q: &str) -> (String, i64, i64, String) {
        let e = extract(q, NOW, 0);
        let w = e.window.unwrap_or_else(|| panic!("no window in {q:?}"));
        (e.rest, w.since_ns, w.until_ns, w.phrase)
    }

    #[test]
    fn phrases_become_windows() {
        assert_eq!(NOW, at("2026-11-20T09:30:00Z"));
        assert_eq!(
            window("what failed last night"),
            ("what failed".into(), at("2026-11-19T18:00:00Z"), at("2026-11-20T06:00:00Z"), "last night".into())
        );
        assert_eq!(window("link problems yesterday").1, at("2026-11-19T00:00:00Z"));
        assert_eq!(
            window("errors in the last 12 hours"),
            ("errors".into(), at("2026-11-19T21:30:00Z"), NOW, "in the last 12 hours".into())
        );
        assert_eq!(window("what broke in the last 2 hours").1, at("2026-11-20T07:30:00Z"));
        assert_eq!(window("outages since yesterday morning").1, at("2026-11-19T00:00:00Z"));
        assert_eq!(window("changes since 14:00 yesterday").1, at("2026-11-19T14:00:00Z"));
        assert_eq!(window("changes since 2pm").1, at("2026-11-19T14:00:00Z"), "2 pm has not come yet today");
        assert_eq!(window("changes since 8am").1, at("2026-11-20T08:00:00Z"));
        assert_eq!(window("port changes on br-int yesterday afternoon").0, "port changes on br-int");
        assert_eq!(window("what happened the day before yesterday").1, at("2026-11-18T00:00:00Z"));
        assert_eq!(window("failures past hour").1, at("2026-11-20T08:30:00Z"));
        assert_eq!(window("since monday").1, at("2026-11-16T00:00:00Z"));
        assert_eq!(extract("link down on eth0", NOW, 0).window, None);
    }

    #[test]
    fn local_time_of_day_follows_the_offset() {
        // At UTC+2 it is 11:30; last night ended at 06:00 local, 04:00 UTC.
        let e = extract("last night", NOW, 7200);
        assert_eq!(e.window.unwrap().until_ns, at("2026-11-20T04:00:00Z"));
    }

    #[test]
    fn a_phrase_that_names_no_time_is_said_back() {
        let e = extract("errors since 25:99", NOW, 0);
        assert_eq!(e.window, None);
        assert_eq!(e.unreadable.as_deref(), Some("since 25:99"));
        assert_eq!(e.rest, "errors");
        assert_eq!(extract("since the reboot", NOW, 0).window, None, "not a time: the words stay");
    }
}
