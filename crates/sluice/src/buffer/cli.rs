//! `sluice buffer inspect DIR` and `sluice buffer replay DIR --to-config FILE`.
//!
//! `inspect` is read-only and safe on a buffer a running sluice has open: it
//! lists the segments with their records, bytes, seqs and append times, the
//! checkpoint, the oldest unacknowledged record's age, and verifies every
//! record's CRC (exit 1 when damage is found, which on a live buffer can also
//! be a write in progress at the very end).
//!
//! `replay` takes the directory's lock (sluice must not be running on it),
//! reads every unacknowledged record and delivers it through the sinks of
//! another config (all of them, or those named with `--sink`), with
//! end-to-end acknowledgements: a record is acknowledged in the buffer once
//! every sink delivered it, so an interrupted replay resumes where it stopped
//! (records after a failed one may be delivered again). Progress goes to
//! stderr. Exit 0 when everything was delivered, 1 otherwise, 2 on a bad config.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ::wal::{Fsync, Options, Wal};
use bytes::Bytes;
use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use super::disk::{chain, decode};
use crate::ack::{AckStatus, AckToken};
use crate::event::EventBatch;
use crate::metrics::Counters;
use crate::topology::SinkContext;

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

/// Records in flight to the sinks at most during a replay.
const REPLAY_WINDOW: usize = 256;

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
    let opts = Options {
        fsync: Fsync::Interval(Duration::from_secs(1)),
        segment_bytes: 64 << 20,
        max_bytes: u64::MAX / 2,
        max_record_bytes: 16 << 20,
    };
    let wal = match Wal::open(dir, opts) {
        Ok(w) => w,
        Err(e) => {
            eprintln!(
                "sluice: cannot open buffer {}: {}",
                dir.display(),
                chain(&e)
            );
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
    let result = runtime.block_on(replay_async(wal, cfg, sinks));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sluice: replay failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn replay_async(
    mut wal: Wal,
    cfg: crate::config::Config,
    sinks: Vec<crate::config::SinkConfig>,
) -> anyhow::Result<bool> {
    let total = wal.recovery().unacked_records;
    let cfg = Arc::new(cfg);
    let (_reload_tx, reload) = tokio::sync::watch::channel(cfg.clone());
    let abort = CancellationToken::new();
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    let mut names = Vec::new();
    for s in &sinks {
        let counters = Arc::new(Counters::default());
        let (tx, rx) = super::memory(
            super::DEFAULT_MAX_EVENTS,
            super::WhenFull::Block,
            counters.clone(),
        );
        let cx = SinkContext {
            name: s.name.as_str().into(),
            input: rx,
            abort: abort.clone(),
            counters,
            reload: reload.clone(),
        };
        let task = crate::sinks::build(s, cx)
            .await
            .map_err(|e| anyhow::anyhow!("sinks.{}: {e}", s.name))?;
        tasks.push(tokio::spawn(task));
        senders.push(tx);
        names.push(s.name.clone());
    }
    eprintln!(
        "Replaying {total} unacknowledged records to {} sink(s): {}.",
        names.len(),
        names.join(", ")
    );
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, AckStatus, usize)>();
    let mut progress = Progress::new(total);
    let (mut inflight, mut failed, mut undecodable) = (0usize, 0u64, 0u64);
    let mut reading = true;
    while reading || inflight > 0 {
        while reading && inflight < REPLAY_WINDOW {
            let record = match wal.read_next() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    reading = false;
                    break;
                }
                Err(e) => {
                    eprintln!("\nsluice: {}", chain(&e));
                    failed += 1;
                    continue;
                }
            };
            let bytes = record.payload.len();
            let events = match decode(Bytes::from(record.payload)) {
                Ok(ev) => Arc::new(ev),
                Err(e) => {
                    eprintln!(
                        "\nsluice: record {} does not decode ({e}); left in the buffer",
                        record.seq
                    );
                    undecodable += 1;
                    continue;
                }
            };
            let n = events.len();
            let seq = record.seq;
            let tx = ack_tx.clone();
            let token = AckToken::with_callback(move |st| {
                let _ = tx.send((seq, st, n));
            });
            let batch = EventBatch { events, ack: token };
            for s in &senders {
                s.send(batch.share(), true).await;
            }
            batch.ack.resolve(AckStatus::Delivered);
            inflight += 1;
            progress.bytes += bytes as u64;
        }
        if inflight == 0 {
            break;
        }
        let Some((seq, status, n)) = ack_rx.recv().await else {
            break;
        };
        inflight -= 1;
        if status == AckStatus::Delivered {
            if let Err(e) = wal.ack(seq) {
                eprintln!("\nsluice: acknowledging record {seq}: {e}");
            }
            progress.done(n);
        } else {
            failed += 1;
            progress.failed += 1;
        }
        progress.draw(false);
    }
    drop(senders);
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("\nsluice: sink failed: {e}"),
            Err(e) => eprintln!("\nsluice: sink task failed: {e}"),
        }
    }
    progress.draw(true);
    let left = wal.unacked_records();
    if let Err(e) = wal.close() {
        eprintln!("sluice: closing the buffer: {}", chain(&e));
    }
    eprintln!(
        "Replayed {} records ({} events); {failed} failed, {undecodable} undecodable; {left} records left in the buffer.",
        progress.records, progress.events
    );
    Ok(failed == 0 && undecodable == 0 && left == 0)
}

struct Progress {
    total: u64,
    records: u64,
    events: u64,
    bytes: u64,
    failed: u64,
    start: Instant,
    last: Instant,
    tty: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        let now = Instant::now();
        Progress {
            total,
            records: 0,
            events: 0,
            bytes: 0,
            failed: 0,
            start: now,
            last: now,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn done(&mut self, events: usize) {
        self.records += 1;
        self.events += events as u64;
    }

    fn draw(&mut self, last: bool) {
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        if !last && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let frac = if self.total == 0 {
            1.0
        } else {
            (self.records as f64 / self.total as f64).min(1.0)
        };
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "[{}{}] {:>3.0}% {}/{} records, {} events, {:.1} MB/s, {:.0} events/s{}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            frac * 100.0,
            self.records,
            self.total,
            self.events,
            self.bytes as f64 / secs / 1e6,
            self.events as f64 / secs,
            if self.failed > 0 {
                format!(", {} failed", self.failed)
            } else {
                String::new()
            },
        );
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
