//! `type = "filter"`: keep events at or above `min_level`.
//!
//! The level is read from the structured field `field` (default `level`): a name
//! (`warn`, `WARNING`, `E`...) or a syslog severity number (0 emergency .. 7
//! debug). Events without that field are, with `parse_body = true` (default),
//! looked at once more: a syslog `<PRI>` at the start of the body, else the first
//! level word among the first 64 bytes (`2024-01-01 12:00:00 ERROR disk full`,
//! `[warn] ...`). Events whose level cannot be found (absent, or a value that is
//! not a level) follow `missing` (`pass` by default). Discarding is intentional, so a filtered batch resolves Delivered.

use serde::Deserialize;

use crate::config::{Check, Validate};
use crate::event::Event;

/// Severity, lowest first. Names follow log4j/slf4j and syslog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `trace`.
    Trace,
    /// `debug`, syslog 7.
    Debug,
    /// `info`, syslog 6.
    Info,
    /// `notice`, syslog 5.
    Notice,
    /// `warn`/`warning`, syslog 4.
    Warn,
    /// `error`/`err`, syslog 3.
    Error,
    /// `critical`/`crit`/`fatal`, syslog 2.
    Critical,
    /// `alert`, syslog 1.
    Alert,
    /// `emergency`/`emerg`/`panic`, syslog 0.
    Emergency,
}

impl Level {
    /// Parse a level name, case-insensitively.
    pub fn from_name(s: &[u8]) -> Option<Level> {
        if s.len() > 13 {
            return None;
        }
        let mut buf = [0u8; 13];
        let lower = &mut buf[..s.len()];
        lower.copy_from_slice(s);
        lower.make_ascii_lowercase();
        Some(match &*lower {
            b"trace" | b"trc" => Level::Trace,
            b"debug" | b"dbg" => Level::Debug,
            b"info" | b"information" | b"informational" | b"inf" => Level::Info,
            b"notice" => Level::Notice,
            b"warn" | b"warning" | b"wrn" => Level::Warn,
            b"error" | b"err" => Level::Error,
            b"crit" | b"critical" | b"fatal" | b"ftl" => Level::Critical,
            b"alert" => Level::Alert,
            b"emerg" | b"emergency" | b"panic" => Level::Emergency,
            _ => return None,
        })
    }

    /// The level of a syslog severity (0..=7).
    pub fn from_syslog(sev: u64) -> Option<Level> {
        Some(match sev {
            0 => Level::Emergency,
            1 => Level::Alert,
            2 => Level::Critical,
            3 => Level::Error,
            4 => Level::Warn,
            5 => Level::Notice,
            6 => Level::Info,
            7 => Level::Debug,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Level::from_name(s.as_bytes()).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown level `{s}` (trace, debug, info, notice, warn, error, critical, alert, emergency)"
            ))
        })
    }
}

/// What to do with events whose level is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// Keep them.
    #[default]
    Pass,
    /// Discard them.
    Drop,
}

/// `[routes.NAME] type = "filter"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FilterRouteConfig {
    /// Lowest level kept.
    pub min_level: Level,
    /// Field holding the level.
    #[serde(default = "default_field")]
    pub field: String,
    /// Look for the level in the body when the field is absent.
    #[serde(default = "default_true")]
    pub parse_body: bool,
    /// Events without a level: `pass` or `drop`.
    #[serde(default)]
    pub missing: Missing,
}

fn default_field() -> String {
    "level".to_owned()
}

fn default_true() -> bool {
    true
}

impl Validate for FilterRouteConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.field.is_empty() {
            v.error("field", "must not be empty");
        }
    }
}

/// How far into the body a level word is looked for.
const BODY_SCAN_BYTES: usize = 64;

impl FilterRouteConfig {
    /// The level of an event, if it can be found.
    pub fn level_of(&self, e: &Event) -> Option<Level> {
        if let Some(v) = e.field(&self.field) {
            return match v.as_bytes() {
                Some(name) => Level::from_name(name),
                None => v.as_u64().and_then(Level::from_syslog),
            };
        }
        if self.parse_body {
            level_in_body(&e.body)
        } else {
            None
        }
    }

    /// Whether an event is kept.
    pub fn keep(&self, e: &Event) -> bool {
        match self.level_of(e) {
            Some(l) => l >= self.min_level,
            None => self.missing == Missing::Pass,
        }
    }
}

/// A syslog `<PRI>` prefix, else the first level word in the first bytes.
pub fn level_in_body(body: &[u8]) -> Option<Level> {
    if let Some(rest) = body.strip_prefix(b"<") {
        let digits = rest
            .iter()
            .take(4)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if (1..=3).contains(&digits) && rest.get(digits) == Some(&b'>') {
            let pri: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
            return Level::from_syslog(pri % 8);
        }
    }
    let head = &body[..body.len().min(BODY_SCAN_BYTES)];
    head.split(|b| !b.is_ascii_alphabetic())
        .filter(|w| w.len() >= 3)
        .find_map(Level::from_name)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::event::Value;

    fn cfg(min: Level) -> FilterRouteConfig {
        FilterRouteConfig {
            min_level: min,
            field: "level".into(),
            parse_body: true,
            missing: Missing::Pass,
        }
    }

    fn ev(body: &'static str) -> Event {
        Event::new(
            Bytes::from_static(body.as_bytes()),
            0,
            "t".into(),
            "s".into(),
        )
    }

    fn with_level(v: Value) -> Event {
        let mut e = ev("x");
        e.fields = Some(Arc::new(vec![(Value::from("level"), v)]).into());
        e
    }

    #[test]
    fn field_names_and_syslog_numbers() {
        let c = cfg(Level::Warn);
        assert!(c.keep(&with_level(Value::from("ERROR"))));
        assert!(c.keep(&with_level(Value::from("warning"))));
        assert!(!c.keep(&with_level(Value::from("info"))));
        assert!(c.keep(&with_level(Value::from(3))), "syslog 3 = err");
        assert!(!c.keep(&with_level(Value::from(6))), "syslog 6 = info");
        assert!(
            c.keep(&with_level(Value::from("bogus"))),
            "an unreadable level counts as missing"
        );
    }

    #[test]
    fn body_pri_and_level_words() {
        assert_eq!(
            level_in_body(b"<34>1 2003-10-11T22:14:15Z host su - - msg"),
            Some(Level::Critical)
        );
        assert_eq!(
            level_in_body(b"2024-01-01 12:00:00 ERROR disk full"),
            Some(Level::Error)
        );
        assert_eq!(level_in_body(b"[warn] low disk"), Some(Level::Warn));
        assert_eq!(level_in_body(b"plain text"), None);
        let c = cfg(Level::Warn);
        assert!(!c.keep(&ev("12:00 DEBUG x")));
        assert!(c.keep(&ev("no level here")), "missing passes by default");
        let c = FilterRouteConfig {
            missing: Missing::Drop,
            ..cfg(Level::Warn)
        };
        assert!(!c.keep(&ev("no level here")));
    }
}
