//! Timestamps: RFC 3339 / ISO 8601 (`2026-02-28T12:00:00.009+01:00`) and BSD
//! (`Feb 28 12:00:00`, no year, no zone), to nanoseconds since the Unix epoch.
//!
//! Every reader returns `None` on anything it does not recognise, including dates
//! that do not exist (`Feb 30`) and instants outside an `i64` of nanoseconds.

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian), H. Hinnant's
/// `days_from_civil`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil year of a day count since 1970-01-01.
pub(super) fn year_of_days(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let y = yoe + era * 400;
    if mp >= 10 { y + 1 } else { y }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// A wall-clock date and time, not yet placed in a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

impl Civil {
    /// Nanoseconds since the epoch of this wall time at `offset_secs` east of UTC.
    pub fn to_unix_ns(self, offset_secs: i64) -> Option<i64> {
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days
            .checked_mul(86_400)?
            .checked_add(i64::from(self.hour * 3600 + self.minute * 60 + self.second))?
            .checked_sub(offset_secs)?;
        secs.checked_mul(1_000_000_000)?
            .checked_add(i64::from(self.nanos))
    }
}

/// `n` ASCII digits at `at` as a number.
fn digits(s: &[u8], at: usize, n: usize) -> Option<u32> {
    let d = s.get(at..at + n)?;
    d.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// `.` followed by 1..=9 digits at `at`: (nanoseconds, bytes used). More than nine
/// digits are read and ignored past the ninth.
fn fraction(s: &[u8], at: usize) -> (u32, usize) {
    if s.get(at) != Some(&b'.') {
        return (0, 0);
    }
    let mut nanos = 0u32;
    let mut n = 0;
    while let Some(&b) = s.get(at + 1 + n) {
        if !b.is_ascii_digit() {
            break;
        }
        if n < 9 {
            nanos = nanos * 10 + u32::from(b - b'0');
        }
        n += 1;
    }
    if n == 0 {
        return (0, 0);
    }
    for _ in n..9 {
        nanos *= 10;
    }
    (nanos, n + 1)
}

/// `hh:mm:ss[.frac]` at `at`: fills the time of `c`, returns bytes used.
fn clock(s: &[u8], at: usize, c: &mut Civil) -> Option<usize> {
    c.hour = digits(s, at, 2)?;
    (s.get(at + 2) == Some(&b':')).then_some(())?;
    c.minute = digits(s, at + 3, 2)?;
    (s.get(at + 5) == Some(&b':')).then_some(())?;
    c.second = digits(s, at + 6, 2)?;
    let (nanos, used) = fraction(s, at + 8);
    c.nanos = nanos;
    Some(8 + used)
}

/// An ISO timestamp at `at`: (wall time, offset east of UTC if given, bytes used).
/// The date/time separator may be `T`, `t` or a space; the offset `Z`, `z`,
/// `+hh:mm`, `+hhmm` or absent.
pub(super) fn iso(s: &[u8], at: usize) -> Option<(Civil, Option<i64>, usize)> {
    let year = digits(s, at, 4)?;
    (s.get(at + 4) == Some(&b'-') && s.get(at + 7) == Some(&b'-')).then_some(())?;
    let mut c = Civil {
        year: i64::from(year),
        month: digits(s, at + 5, 2)?,
        day: digits(s, at + 8, 2)?,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
    };
    matches!(s.get(at + 10), Some(b'T' | b't' | b' ')).then_some(())?;
    let mut i = at + 11 + clock(s, at + 11, &mut c)?;
    let offset = match s.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            Some(0)
        }
        Some(&sign @ (b'+' | b'-')) => {
            let h = digits(s, i + 1, 2)?;
            let (m, used) = if s.get(i + 3) == Some(&b':') {
                (digits(s, i + 4, 2)?, 6)
            } else {
                (digits(s, i + 3, 2)?, 5)
            };
            if h > 23 || m > 59 {
                return None;
            }
            i += used;
            let secs = i64::from(h * 3600 + m * 60);
            Some(if sign == b'-' { -secs } else { secs })
        }
        _ => None,
    };
    Some((c, offset, i - at))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// A BSD timestamp at `at`: `Mmm dd hh:mm:ss`, the day `dd`, ` d` or `d`, an
/// optional `yyyy ` before the clock and a fraction after it. Returns the wall time
/// (year 0 unless given), whether a year was given, and bytes used.
pub(super) fn bsd(s: &[u8], at: usize) -> Option<(Civil, bool, usize)> {
    let name = s.get(at..at + 3)?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name))? as u32 + 1;
    (s.get(at + 3) == Some(&b' ')).then_some(())?;
    let mut i = at + 4;
    if s.get(i) == Some(&b' ') {
        i += 1;
    }
    let day = if let Some(d) = digits(s, i, 2) {
        i += 2;
        d
    } else {
        i += 1;
        digits(s, i - 1, 1)?
    };
    (s.get(i) == Some(&b' ')).then_some(())?;
    i += 1;
    let mut c = Civil {
        year: 0,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
    };
    let mut has_year = false;
    if let Some(y) = digits(s, i, 4)
        && s.get(i + 4) == Some(&b' ')
    {
        c.year = i64::from(y);
        has_year = true;
        i += 5;
    }
    i += clock(s, i, &mut c)?;
    Some((c, has_year, i - at))
}

/// How far ahead of now a BSD timestamp may be and still be taken as this year's
/// (clocks running fast, senders a few zones east).
const FUTURE_SLACK_NS: i64 = 2 * 86_400 * 1_000_000_000;

/// Places a BSD wall time without a year: the latest of the years around now that
/// does not put it more than [`FUTURE_SLACK_NS`] ahead of `now_secs` (messages are
/// about the past: `Mar 1` read in December is this March, `Dec 31` read on January
/// 1st last year's, `Jan 1 00:00:03` read on Dec 31 23:59:58 next year's).
pub(super) fn infer_year(c: Civil, now_secs: i64, offset_secs: i64) -> Option<i64> {
    let now_ns = now_secs.checked_mul(1_000_000_000)?;
    let this_year = year_of_days((now_secs + offset_secs).div_euclid(86_400));
    [this_year + 1, this_year, this_year - 1]
        .into_iter()
        .filter_map(|year| Civil { year, ..c }.to_unix_ns(offset_secs))
        .find(|&t| t <= now_ns.saturating_add(FUTURE_SLACK_NS))
}
