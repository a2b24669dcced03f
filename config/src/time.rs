//! Dates as text: RFC 3339 and HAProxy's log date, in UTC, without a calendar crate.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A time's UTC fields: year, month, day, hour, minute, second, millisecond.
struct Fields {
    y: i64,
    mo: u32,
    d: u32,
    h: i64,
    mi: i64,
    s: i64,
    ms: u32,
}

fn fields(t: SystemTime) -> Fields {
    let dur = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = dur.as_secs() as i64;
    let (y, mo, d) = civil(secs.div_euclid(86400));
    let s = secs.rem_euclid(86400);
    Fields {
        y,
        mo,
        d,
        h: s / 3600,
        mi: (s / 60) % 60,
        s: s % 60,
        ms: dur.subsec_millis(),
    }
}

/// `22/Nov/2026:10:00:00.123` (UTC), as HAProxy's accept date.
pub fn haproxy_date(t: SystemTime, out: &mut String) {
    let f = fields(t);
    let month = MONTHS[(f.mo - 1) as usize];
    let _ = write!(
        out,
        "{:02}/{month}/{}:{:02}:{:02}:{:02}.{:03}",
        f.d, f.y, f.h, f.mi, f.s, f.ms
    );
}

/// `Dec  6 02:40:00` (UTC), the timestamp of an RFC 3164 (BSD) syslog message.
pub fn rfc3164(t: SystemTime, out: &mut String) {
    let f = fields(t);
    let month = MONTHS[(f.mo - 1) as usize];
    let _ = write!(out, "{month} {:>2} {:02}:{:02}:{:02}", f.d, f.h, f.mi, f.s);
}

/// RFC 3339 (UTC) with milliseconds.
pub fn rfc3339(t: SystemTime, out: &mut String) {
    let f = fields(t);
    let _ = write!(
        out,
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        f.y, f.mo, f.d, f.h, f.mi, f.s, f.ms
    );
}
