//! `type = "syslog"`: a syslog server over UDP, TCP (optionally TLS, RFC 5425) and
//! local Unix sockets (`/dev/log` style, datagram or stream).
//!
//! Parsing is `proto::syslog` (sans-IO, zero-copy); this module owns sockets,
//! framing limits and the mapping to events ([`message`]).
//!
//! # Data path
//! The socket is bound at build (so "address in use" fails at start). Datagram modes
//! ([`dgram`]) receive into one buffer, take every datagram already queued (up to
//! [`dgram::MAX_BATCH`]) and send them as one batch. Stream modes ([`stream`]) run a
//! read loop per connection that cuts frames with `proto::syslog::framing` (octet
//! counting or newline, `framing = "auto"` decides per connection from its first
//! byte) and sends one batch per read. Each message becomes one event whose body is
//! the MSG part, a slice of the read buffer (no copy); the parsed header goes into
//! msgpack fields written once per batch ([`message`]).
//!
//! # Acknowledgements
//! Syslog has no application-level acknowledgement: batches carry
//! [`AckToken::none`](crate::ack::AckToken::none), and what sinks deliver or drop is
//! counted there. On TCP and Unix streams a full buffer with `when_full = "block"`
//! stops the read loop, so the sender feels TCP backpressure; with a disk buffer,
//! a message is durable once appended. Datagrams cannot be held back: while the
//! source waits for room, the kernel drops what overflows the socket's receive
//! buffer (`receive_buffer_bytes`), and those drops are reported from the kernel's
//! own UDP counters when the source stops.
//!
//! # Limits
//! `max_message_bytes` caps a message (longer ones are cut and counted as
//! `truncated`; a counted frame's remainder is skipped exactly), and with it the
//! read buffer of a connection. `max_connections` caps stream connections (more are
//! closed at once), `idle_timeout_secs` closes connections that send nothing (also
//! slowloris senders of endless frames: the timer restarts only when a whole
//! message arrives). A broken octet count closes its connection with one
//! rate-limited WARN line; others are unaffected. A message that parses neither as
//! RFC 5424 nor RFC 3164 is kept: raw bytes as body, field `syslog.parse_error`.

mod dgram;
mod message;
mod stream;
mod udp;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::config::{Check, Validate};
use crate::logging::BurstLimit;
use crate::tls::ServerTlsConfig;
use crate::topology::{ComponentError, SourceContext, Task};

/// Transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyslogMode {
    /// UDP datagrams on `address`.
    Udp,
    /// TCP connections on `address`.
    Tcp,
    /// Datagrams on the Unix socket `path` (`/dev/log`).
    UnixDgram,
    /// Connections on the Unix socket `path`.
    UnixStream,
}

/// How TCP and Unix stream messages are delimited (RFC 6587).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyslogFraming {
    /// Octet counting when a connection's first byte is a digit, else newline.
    #[default]
    Auto,
    /// `LEN SP MSG`.
    OctetCounting,
    /// `MSG LF`.
    Newline,
}

/// `[sources.NAME] type = "syslog"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SyslogSourceConfig {
    /// Transport.
    pub mode: SyslogMode,
    /// `IP:port` for `udp` and `tcp`.
    #[serde(default)]
    pub address: Option<String>,
    /// Socket path for the unix modes (created mode 0666, removed at stop).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Stream framing.
    #[serde(default)]
    pub framing: SyslogFraming,
    /// Longest message; longer ones are cut (counted).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Most simultaneous stream connections; more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A stream connection without a complete message for this long is closed.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Zone of timestamps that carry none (RFC 3164): `local`, `UTC`, `+hh:mm`
    /// or an IANA name (`Europe/Paris`, from the system's tz database).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// SO_RCVBUF of datagram sockets (the kernel may cap it at `net.core.rmem_max`).
    #[serde(default)]
    pub receive_buffer_bytes: Option<usize>,
    /// UDP receive sockets on the address (`SO_REUSEPORT`), each with its loop.
    #[serde(default = "default_udp_threads")]
    pub udp_threads: usize,
    /// The common `tag` key, read again here: when it is absent the tag is
    /// `syslog.<facility>.<severity>`.
    #[serde(default)]
    pub tag: Option<String>,
    /// Serve TLS (`tcp` only).
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
}

fn default_max_message_bytes() -> usize {
    64 << 10
}
fn default_max_connections() -> usize {
    10_000
}
fn default_idle_timeout_secs() -> u64 {
    300
}
fn default_udp_threads() -> usize {
    1
}
fn default_timezone() -> String {
    "local".to_owned()
}

/// Largest `max_message_bytes` (the largest UDP payload is 65507; streams need a bound).
const MAX_MESSAGE_CEILING: usize = 16 << 20;

/// The zone for timestamps without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Zone {
    /// The machine's zone at the time of reading.
    Local,
    /// A fixed offset east of UTC, in seconds.
    Fixed(i32),
    /// A named zone of the tz database (its offset follows daylight saving).
    Named(jiff::tz::TimeZone),
}

impl Zone {
    fn parse(s: &str) -> Option<Zone> {
        if s.eq_ignore_ascii_case("local") {
            return Some(Zone::Local);
        }
        if s.eq_ignore_ascii_case("utc") || s == "Z" {
            return Some(Zone::Fixed(0));
        }
        let (sign, rest) = match s.as_bytes().first()? {
            b'+' => (1, &s[1..]),
            b'-' => (-1, &s[1..]),
            _ => return jiff::tz::TimeZone::get(s).ok().map(Zone::Named),
        };
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
        ((0..=23).contains(&h) && (0..=59).contains(&m))
            .then(|| Zone::Fixed(sign * (h * 3600 + m * 60)))
    }

    /// Offset east of UTC at `now_secs`.
    pub(crate) fn offset_at(&self, now_secs: i64) -> i32 {
        match self {
            Zone::Fixed(o) => *o,
            Zone::Named(tz) => {
                jiff::Timestamp::from_second(now_secs).map_or(0, |t| tz.to_offset(t).seconds())
            }
            Zone::Local => {
                let t = now_secs as libc::time_t;
                // SAFETY: `tm` is plain data written by localtime_r; `t` outlives the call.
                let mut tm: libc::tm = unsafe { std::mem::zeroed() };
                let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
                if ok { tm.tm_gmtoff as i32 } else { 0 }
            }
        }
    }
}

impl Validate for SyslogSourceConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        let network = matches!(self.mode, SyslogMode::Udp | SyslogMode::Tcp);
        if network {
            match &self.address {
                None => v.error("address", "udp and tcp modes need address = \"IP:port\""),
                Some(a) if a.parse::<std::net::SocketAddr>().is_err() => {
                    v.error("address", "expected IP:port, e.g. \"0.0.0.0:514\"")
                }
                Some(_) => {}
            }
            if self.path.is_some() {
                v.error(
                    "path",
                    "path is for the unix modes; udp and tcp use address",
                );
            }
        } else {
            match &self.path {
                None => v.error("path", "unix modes need path, e.g. \"/dev/log\""),
                Some(p) if p.as_os_str().is_empty() => v.error("path", "must not be empty"),
                Some(p) if p.as_os_str().len() > 107 => {
                    v.error("path", "a Unix socket path has at most 107 bytes")
                }
                Some(_) => {}
            }
            if self.address.is_some() {
                v.error("address", "address is for udp and tcp; unix modes use path");
            }
        }
        if self.tls.is_some() && self.mode != SyslogMode::Tcp {
            v.error("tls", "TLS needs mode = \"tcp\"");
        }
        if let Some(tls) = &self.tls
            && (tls.cert_file.is_empty() || tls.key_file.is_empty())
        {
            v.error("tls", "needs cert_file and key_file");
        }
        if self.framing != SyslogFraming::Auto
            && matches!(self.mode, SyslogMode::Udp | SyslogMode::UnixDgram)
        {
            v.error("framing", "framing applies to tcp and unix_stream only");
        }
        if self.max_message_bytes < 64 || self.max_message_bytes > MAX_MESSAGE_CEILING {
            v.error(
                "max_message_bytes",
                format!("must be between 64 and {MAX_MESSAGE_CEILING}"),
            );
        }
        if self.max_connections == 0 || self.max_connections > Semaphore::MAX_PERMITS {
            v.error("max_connections", "must be at least 1");
        }
        if self.idle_timeout_secs == 0 {
            v.error("idle_timeout_secs", "must be at least 1");
        }
        if Zone::parse(&self.timezone).is_none() {
            v.error(
                "timezone",
                "expected \"local\", \"UTC\", an offset like \"+01:00\" or a zone name of the tz database like \"Europe/Paris\"",
            );
        }
        if self.udp_threads == 0 || self.udp_threads > udp::MAX_UDP_THREADS {
            v.error(
                "udp_threads",
                format!("must be between 1 and {}", udp::MAX_UDP_THREADS),
            );
        } else if self.udp_threads > 1 && self.mode != SyslogMode::Udp {
            v.error("udp_threads", "applies to mode = \"udp\" only");
        }
        if self.receive_buffer_bytes == Some(0) {
            v.error(
                "receive_buffer_bytes",
                "must be at least 1 (omit it for the default)",
            );
        }
    }
}

impl SyslogSourceConfig {
    /// What the source occupies, for conflict checks: `udp:ADDR`, `tcp:ADDR` or the path.
    pub fn resource(&self) -> String {
        match (self.mode, &self.address, &self.path) {
            (SyslogMode::Udp, Some(a), _) => format!("udp:{a}"),
            (SyslogMode::Tcp, Some(a), _) => format!("tcp:{a}"),
            (_, _, Some(p)) => format!("unix:{}", p.display()),
            _ => String::new(),
        }
    }
}

/// What every connection or datagram loop of one source shares.
pub(crate) struct Shared {
    pub cx: SourceContext,
    pub mapper: message::Mapper,
    pub max_message_bytes: usize,
    pub log_limit: BurstLimit,
}

pub(super) async fn build(
    config: SyslogSourceConfig,
    cx: SourceContext,
) -> Result<Task, ComponentError> {
    let zone = Zone::parse(&config.timezone)
        .ok_or_else(|| ComponentError::Other(format!("invalid timezone {}", config.timezone)))?;
    let tag = config.tag.as_ref().map(|_| cx.tag.clone());
    let shared = Arc::new(Shared {
        mapper: message::Mapper::new(cx.name.clone(), tag, zone),
        max_message_bytes: config.max_message_bytes,
        log_limit: BurstLimit::new(),
        cx,
    });
    match config.mode {
        SyslogMode::Udp | SyslogMode::UnixDgram => dgram::build(&config, shared).await,
        SyslogMode::Tcp | SyslogMode::UnixStream => stream::build(&config, shared).await,
    }
}

/// Creates the parent-less socket path's place: a stale socket left by a crash is
/// removed, any other file is an error (never deleted).
pub(crate) fn clear_socket_path(path: &Path) -> Result<(), ComponentError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(|e| {
            ComponentError::io(format!("removing stale socket {}", path.display()), e)
        }),
        Ok(_) => Err(ComponentError::Other(format!(
            "{} exists and is not a socket",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ComponentError::io(
            format!("checking {}", path.display()),
            e,
        )),
    }
}

/// Makes a freshly bound socket writable by every local user (as `/dev/log` is).
pub(crate) fn open_socket_mode(path: &Path) -> Result<(), ComponentError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| ComponentError::io(format!("chmod 0666 {}", path.display()), e))
}

/// Removes the socket file when dropped (at stop, also on a failed run).
pub(crate) struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests;
