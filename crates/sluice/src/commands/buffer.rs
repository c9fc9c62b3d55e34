//! `sluice buffer inspect DIR` and `sluice buffer replay DIR --to-config FILE`.
//!
//! `inspect` is read-only and safe on a buffer a running sluice has open: it
//! lists the segments with their records, bytes, seqs and append times, the
//! checkpoint, the oldest unacknowledged record's age, and verifies every
//! record's CRC (exit 1 when damage is found, which on a live buffer can also
//! be a write in progress at the very end).
//!
//! `replay` delivers every unacknowledged record through the sinks of another
//! config (all of them, or those named with `--sink`), with end-to-end
//! acknowledgements (the pipeline is `crate::buffer::replay`). Progress goes to
//! stderr. Exit 0 when everything was delivered, 1 otherwise, 2 on a bad config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Subcommand;

use super::progress::{ProgressLine, failed_suffix};
use crate::buffer::disk::chain;
use crate::buffer::replay::{self, Report, Tally};

/// `sluice buffer ...`.
#[derive(Debug, Subcommand)]
pub enum BufferCommand {
    /// Show what a disk buffer directory holds and verify every record's CRC.
    Inspect {
        /// The buffer directory (`<data_dir>/buffers/<sink>`).
        dir: PathBuf,
    },
    /// Deliver a buffer's unacknowledged records through the sinks of a config.
    Replay {
        /// The buffer directory (not in use by a running sluice).
        dir: PathBuf,
        /// Config whose sinks receive the records.
        #[arg(long)]
        to_config: PathBuf,
        /// Only these sinks of that config (repeatable; default: all).
        #[arg(long = "sink")]
        sinks: Vec<String>,
    },
}

/// Run a `buffer` subcommand.
pub fn main(cmd: BufferCommand) -> ExitCode {
    match cmd {
        BufferCommand::Inspect { dir } => inspect(&dir),
        BufferCommand::Replay {
            dir,
            to_config,
            sinks,
        } => replay(&dir, &to_config, &sinks),
    }
}

fn age(t: Option<SystemTime>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let secs = SystemTime::now()
                .duration_since(t)
                .unwrap_or_default()
                .as_secs_f64();
            let when = chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%dT%H:%M:%S%.3fZ");
            format!("{when} ({})", human_secs(secs))
        }
    }
}

fn human_secs(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.1}s ago"),
        s if s < 7200.0 => format!("{:.1}m ago", s / 60.0),
        s if s < 172_800.0 => format!("{:.1}h ago", s / 3600.0),
        s => format!("{:.1}d ago", s / 86400.0),
    }
}

fn inspect(dir: &Path) -> ExitCode {
    if !dir.is_dir() {
        eprintln!("sluice: {} is not a directory", dir.display());
        return ExitCode::from(2);
    }
    let insp = match ::wal::inspect(dir) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("sluice: cannot inspect {}: {}", dir.display(), chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(out, "buffer:           {}", dir.display());
    let _ = writeln!(
        out,
        "checkpoint:       {}",
        insp.checkpoint.map_or(
            "none (replay starts at the oldest segment)".into(),
            |c| format!("seq {c}")
        )
    );
    let _ = writeln!(out, "segments:         {}", insp.segments.len());
    let _ = writeln!(out, "bytes:            {}", insp.total_bytes);
    let _ = writeln!(out, "records:          {}", insp.total_records);
    let _ = writeln!(out, "unacked records:  {}", insp.unacked_records);
    let _ = writeln!(out, "oldest record:    {}", age(insp.oldest_record_time));
    let _ = writeln!(out, "oldest unacked:   {}", age(insp.oldest_unacked_time));
    let _ = writeln!(
        out,
        "{:<26} {:>12} {:>9} {:>23}  {:<24} status",
        "segment", "bytes", "records", "seqs", "last append"
    );
    let mut damaged = 0;
    for s in &insp.segments {
        let name = s
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let seqs = match (s.first_seq, s.last_seq) {
            (Some(a), Some(b)) => format!("{a}..={b}"),
            _ => "-".into(),
        };
        let last = s
            .last_time
            .map(|t| {
                chrono::DateTime::<chrono::Utc>::from(t)
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string()
            })
            .unwrap_or_else(|| "-".into());
        let status = match &s.damage {
            None => "ok".to_string(),
            Some(d) => {
                damaged += 1;
                format!(
                    "DAMAGED at offset {}: {} ({} bytes unreadable)",
                    d.offset, d.corruption, d.bytes
                )
            }
        };
        let _ = writeln!(
            out,
            "{name:<26} {:>12} {:>9} {seqs:>23}  {last:<24} {status}",
            s.bytes, s.records
        );
    }
    if damaged == 0 {
        let _ = writeln!(
            out,
            "crc:              ok ({} records verified)",
            insp.total_records
        );
    } else {
        let _ = writeln!(out, "crc:              {damaged} damaged segment(s)");
    }
    print!("{out}");
    if damaged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn replay(dir: &Path, config: &Path, only: &[String]) -> ExitCode {
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(crate::cli::EXIT_CONFIG);
        }
    };
    if let Some(missing) = only
        .iter()
        .find(|n| !cfg.sinks.iter().any(|s| &s.name == *n))
    {
        eprintln!("sluice: {} has no sink named `{missing}`", config.display());
        return ExitCode::from(crate::cli::EXIT_CONFIG);
    }
    let sinks: Vec<_> = cfg
        .sinks
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .cloned()
        .collect();
    if sinks.is_empty() {
        eprintln!("sluice: {} has no sink", config.display());
        return ExitCode::from(crate::cli::EXIT_CONFIG);
    }
    if !dir.is_dir() {
        eprintln!("sluice: {} is not a directory", dir.display());
        return ExitCode::from(2);
    }
    let wal = match replay::open(dir) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut bar = Progress::new();
    let result = runtime.block_on(replay::run(wal, cfg, sinks, |r| bar.report(r)));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(t) => {
            bar.draw(&t, true);
            eprintln!(
                "Replayed {} records ({} events); {} failed, {} undecodable; {} records left in the buffer.",
                t.records, t.events, t.failed, t.undecodable, t.left
            );
            if t.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sluice: replay failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The progress line on stderr (see [`ProgressLine`]).
struct Progress(ProgressLine);

impl Progress {
    fn new() -> Self {
        Progress(ProgressLine::new())
    }

    fn report(&mut self, r: Report<'_>) {
        match r {
            Report::Started { total, sinks } => eprintln!(
                "Replaying {total} unacknowledged records to {} sink(s): {}.",
                sinks.len(),
                sinks.join(", ")
            ),
            Report::Progress(t) => self.draw(t, false),
            Report::Problem(p) => eprintln!("\nsluice: {p}"),
        }
    }

    fn draw(&mut self, t: &Tally, last: bool) {
        let Some(secs) = self.0.due(last) else {
            return;
        };
        let frac = if t.total == 0 {
            1.0
        } else {
            (t.records as f64 / t.total as f64).min(1.0)
        };
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let line = format!(
            "[{}{}] {:>3.0}% {}/{} records, {} events, {:.1} MB/s, {:.0} events/s{}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            frac * 100.0,
            t.records,
            t.total,
            t.events,
            t.bytes as f64 / secs / 1e6,
            t.events as f64 / secs,
            failed_suffix(t.failed),
        );
        self.0.write(&line, last);
    }
}
