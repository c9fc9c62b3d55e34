//! The progress line of the long-running commands (`buffer replay`, `archive
//! restore`) on stderr: redrawn in place on a terminal every 100 ms, a line a
//! second otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// When to draw, and how.
pub(crate) struct ProgressLine {
    start: Instant,
    last: Instant,
    tty: bool,
}

impl ProgressLine {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        ProgressLine {
            start: now,
            last: now,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Whether a line is due now (always for the `last` one); if so, the
    /// seconds since the start (never 0), and the next line is timed from now.
    pub(crate) fn due(&mut self, last: bool) -> Option<f64> {
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        if !last && self.last.elapsed() < every {
            return None;
        }
        self.last = Instant::now();
        Some(self.start.elapsed().as_secs_f64().max(1e-3))
    }

    /// Write `line` (in place on a terminal; the `last` one ends the line).
    pub(crate) fn write(&self, line: &str, last: bool) {
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{line}")
        } else {
            writeln!(err, "{line}")
        };
        if last && self.tty {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

/// `", N failed"` when some failed, else nothing.
pub(crate) fn failed_suffix(failed: u64) -> String {
    if failed > 0 {
        format!(", {failed} failed")
    } else {
        String::new()
    }
}
