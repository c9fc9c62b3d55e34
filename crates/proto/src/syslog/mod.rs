//! Syslog messages: RFC 5424, RFC 3164 (BSD) and the deviations seen in the wild,
//! plus the TCP framings of RFC 6587 ([`framing`]).
//!
//! [`parse`] reads one message (a datagram, or one frame of a stream) and returns a
//! [`Message`] whose text fields are slices of the input: nothing is copied, and
//! structured-data values are unescaped only when asked ([`SdValue::unescaped`]).
//! It never panics and never allocates; what it cannot read is a [`ParseError`]
//! (the caller keeps the raw bytes, see the syslog source).
//!
//! # Grammar accepted
//! Before parsing, trailing `\n`, `\r` and NUL bytes are removed (senders terminate
//! datagrams with them; the last real character is never touched).
//!
//! ```text
//! MESSAGE   = [PRI] (RFC5424 / RFC3164)
//! PRI       = "<" 1*3DIGIT ">"            ; 0..=191; facility = PRI / 8, severity = PRI % 8
//!                                          ; absent: facility user (1), severity notice (5)
//! RFC5424   = VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
//!             SP SD [SP MSG]              ; only with a PRI; VERSION = 1*2DIGIT not "0"
//!   TIMESTAMP = "-" / ISO                 ; each header field may be "-" (nil)
//!   HOSTNAME, APP-NAME, PROCID, MSGID = 1*non-space bytes (no RFC length caps)
//!   SD        = "-" / 1*("[" SD-ID *(SP NAME "=" DQUOTE VALUE DQUOTE) "]")
//!   VALUE     = any bytes; "\" escapes `"`, `\` and `]` (any other "\" is literal);
//!               an unescaped "]" inside quotes is accepted
//!   MSG       = bytes; a leading UTF-8 BOM (EF BB BF) is removed
//! RFC3164   = [SEQ ":" SP] [TIMESTAMP [":"] SP [HOSTNAME SP]] [TAG ["[" PID "]"] ":" [SP]] MSG
//!   SEQ       = 1*DIGIT                   ; Cisco sequence numbers, skipped
//!   TIMESTAMP = ["*" / "."] BSD / ISO     ; "*"/"." are Cisco's clock-not-synced marks
//!   BSD       = MMM SP (DD / SP D / D) SP [YYYY SP] hh:mm:ss ["." 1*9DIGIT]
//!   ISO       = YYYY-MM-DD ("T" / "t" / SP) hh:mm:ss ["." 1*9DIGIT] [("Z" / "z") / ("+"/"-") hh[:]mm]
//!   HOSTNAME  = the next word, unless it is the tag (ends in ":" or "]:" / "]")
//!   TAG       = 1*48 bytes other than SP "[" ":"
//! ```
//! A line without a PRI must start with a timestamp, else it is an error ("neither
//! format"). After a PRI, a 3164 line may lack any part: `<13>hello` is the message
//! `hello` (RFC 3164 4.3.3). A line that claims RFC 5424 (a version after the PRI)
//! and breaks its grammar is an error, with the offset where it broke.
//!
//! # Time
//! A timestamp without a zone (BSD, or ISO without offset) is read in
//! [`Options::utc_offset_secs`]. A BSD timestamp has no year: the latest year that
//! does not put the message more than two days after [`Options::now_secs`] is
//! taken, so a message stamped `Dec 31 23:59:59` and read on January 1st lands in
//! the old year, `Mar 1` read in December is this March, and a sender whose clock
//! runs a little ahead still gets next year on New Year's Eve. Timestamps outside what
//! nanoseconds in an `i64` hold (years 1678..2261) are errors.
//!
//! Non-goals: RFC 5424 length caps, UTF-8 validation and SD-ID registry checks
//! (accepted as bytes: the data is kept, never judged), multi-line messages.

pub mod framing;
mod rfc3164;
mod rfc5424;
mod sd;
mod time;

#[cfg(test)]
mod tests;

pub use sd::{SdElement, SdElements, SdParam, SdParams, SdValue, StructuredData};

/// Which grammar a message was read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424.
    Rfc5424,
    /// RFC 3164 / BSD, including its deviations.
    Rfc3164,
}

/// Facility and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// 0..=23 (kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv,
    /// ftp, ntp, security, console, solaris-cron, local0..local7).
    pub facility: u8,
    /// 0 (emerg) ..= 7 (debug).
    pub severity: u8,
}

impl Priority {
    /// The priority RFC 3164 assigns to a message without one: user.notice.
    pub const DEFAULT: Priority = Priority {
        facility: 1,
        severity: 5,
    };

    /// The facility's keyword (`kern`, `user`, ..., `local7`).
    pub fn facility_name(&self) -> &'static str {
        FACILITIES
            .get(usize::from(self.facility))
            .copied()
            .unwrap_or("unknown")
    }

    /// The severity's keyword (`emerg`, `alert`, `crit`, `err`, `warning`, `notice`,
    /// `info`, `debug`).
    pub fn severity_name(&self) -> &'static str {
        SEVERITIES
            .get(usize::from(self.severity))
            .copied()
            .unwrap_or("unknown")
    }

    /// The PRI value, `facility * 8 + severity`.
    pub fn value(&self) -> u8 {
        self.facility * 8 + self.severity
    }
}

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// A parsed message; every slice borrows the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The grammar that read it.
    pub format: Format,
    /// The PRI, `None` when the line had none (see [`Priority::DEFAULT`]).
    pub priority: Option<Priority>,
    /// Nanoseconds since the Unix epoch, `None` when absent or nil.
    pub timestamp: Option<i64>,
    /// The sender's host name.
    pub hostname: Option<&'a [u8]>,
    /// RFC 5424 APP-NAME, or the RFC 3164 tag.
    pub appname: Option<&'a [u8]>,
    /// RFC 5424 PROCID, or the RFC 3164 `[pid]`.
    pub procid: Option<&'a [u8]>,
    /// RFC 5424 MSGID.
    pub msgid: Option<&'a [u8]>,
    /// RFC 5424 structured data (validated, read lazily).
    pub structured_data: StructuredData<'a>,
    /// The MSG part (without BOM and trailing line terminators).
    pub msg: &'a [u8],
}

/// How the time of zone-less timestamps is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The current time (Unix seconds): picks the year of BSD timestamps.
    pub now_secs: i64,
    /// Offset from UTC of the senders' zone, for timestamps without one.
    pub utc_offset_secs: i32,
}

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {offset}")]
pub struct ParseError {
    /// What was wrong.
    pub reason: &'static str,
    /// Where in the input (after trailing terminators were removed).
    pub offset: usize,
}

pub(crate) fn err<T>(reason: &'static str, offset: usize) -> Result<T, ParseError> {
    Err(ParseError { reason, offset })
}

/// Reads one syslog message.
pub fn parse<'a>(input: &'a [u8], options: &Options) -> Result<Message<'a>, ParseError> {
    let input = trim_end(input);
    if input.is_empty() {
        return err("empty message", 0);
    }
    let (priority, rest) = match parse_pri(input)? {
        Some((p, used)) => (Some(p), used),
        None => (None, 0),
    };
    if priority.is_some()
        && let Some(used) = rfc5424::version(&input[rest..])
    {
        return rfc5424::parse(input, rest + used, priority, options);
    }
    rfc3164::parse(input, rest, priority, options)
}

/// Removes trailing `\n`, `\r` and NUL bytes.
pub fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [head @ .., b'\n' | b'\r' | 0] = s {
        s = head;
    }
    s
}

/// `<PRI>` at the start: `Ok(None)` when the input does not start with `<`.
fn parse_pri(s: &[u8]) -> Result<Option<(Priority, usize)>, ParseError> {
    if s.first() != Some(&b'<') {
        return Ok(None);
    }
    let mut value: u32 = 0;
    let mut i = 1;
    while let Some(&d) = s.get(i) {
        match d {
            b'0'..=b'9' if i <= 3 => value = value * 10 + u32::from(d - b'0'),
            b'>' if i > 1 => {
                if value > 191 {
                    return err("PRI above 191", 1);
                }
                let v = value as u8;
                let p = Priority {
                    facility: v / 8,
                    severity: v % 8,
                };
                return Ok(Some((p, i + 1)));
            }
            _ => return err("invalid PRI", i),
        }
        i += 1;
    }
    err("invalid PRI", i)
}

/// Removes a leading UTF-8 byte order mark.
fn strip_bom(s: &[u8]) -> &[u8] {
    s.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(s)
}

/// The bytes from `at` up to the next space (or the end), and the index after it.
fn word(s: &[u8], at: usize) -> (&[u8], usize) {
    let rest = s.get(at..).unwrap_or_default();
    match rest.iter().position(|&b| b == b' ') {
        Some(n) => (&rest[..n], at + n),
        None => (rest, s.len()),
    }
}
