//! Logging set-up: where the binary's `tracing` output goes and how it looks.
//!
//! Logs go to stderr. `SLUICE_LOG` is an `EnvFilter` directive (`info` by default).
//! `SLUICE_LOG_FORMAT` picks the format: `text` (the default, one human-readable
//! line per event) or `json` (one JSON object per line: `timestamp`, `level`,
//! `target`, `fields` with `message`, and the spans — for a log shipper).
//! Text is coloured only when stderr is a terminal and `NO_COLOR` is unset or
//! empty (<https://no-color.org>), so a log file or a pipe never holds escape codes.

mod limit;

pub use limit::{BurstLimit, KeyedRateLimit, RateLimit};

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The environment variable selecting the level filter.
pub const LOG_ENV: &str = "SLUICE_LOG";
/// The environment variable selecting the format.
pub const FORMAT_ENV: &str = "SLUICE_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// Parse a `SLUICE_LOG_FORMAT` value; `None` (unset) and empty mean text.
    pub fn parse(value: Option<&str>) -> Result<Format, String> {
        match value {
            None | Some("" | "text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(format!(
                "{FORMAT_ENV} must be `text` or `json`, not `{other}`"
            )),
        }
    }
}

/// Whether text logs are coloured: stderr is a terminal and `no_color` (the value
/// of `NO_COLOR`) is unset or empty.
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Install the global subscriber from the environment. An invalid
/// `SLUICE_LOG_FORMAT` is returned as an error (a usage error: exit 2).
pub fn init() -> Result<(), String> {
    let format = Format::parse(std::env::var(FORMAT_ENV).ok().as_deref())?;
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Json => builder.json().init(),
        Format::Text => {
            let colour = use_colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            );
            builder.with_ansi(colour).init();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn format_values() {
        assert_eq!(Format::parse(None), Ok(Format::Text));
        assert_eq!(Format::parse(Some("")), Ok(Format::Text));
        assert_eq!(Format::parse(Some("text")), Ok(Format::Text));
        assert_eq!(Format::parse(Some("json")), Ok(Format::Json));
        let err = Format::parse(Some("JSON")).unwrap_err();
        assert!(
            err.contains("SLUICE_LOG_FORMAT") && err.contains("`JSON`"),
            "{err}"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
