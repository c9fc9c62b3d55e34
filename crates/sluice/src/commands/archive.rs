//! `sluice archive verify URL` and `sluice archive restore URL --to-config
//! FILE`: argument handling, the progress line and the summary. The work is in
//! `crate::sinks::archive::{verify, restore}`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::progress::{ProgressLine, failed_suffix};
use crate::cli::{ArchiveCommand, EXIT_CONFIG};
use crate::sinks::archive::restore::{self, Filter, Report, Tally};
use crate::sinks::archive::store::Store;

/// Run an `archive` subcommand.
pub fn main(cmd: ArchiveCommand) -> ExitCode {
    match cmd {
        ArchiveCommand::Verify { url, options } => {
            crate::sinks::archive::verify::main(&url, &pairs(&options))
        }
        ArchiveCommand::Restore {
            url,
            to_config,
            sinks,
            topic,
            from,
            to,
            options,
        } => {
            let mut filter = Filter {
                topic,
                ..Filter::default()
            };
            for (arg, value, slot) in [
                ("--from", from, &mut filter.from_ns),
                ("--to", to, &mut filter.to_ns),
            ] {
                if let Some(v) = value {
                    match chrono::DateTime::parse_from_rfc3339(&v)
                        .ok()
                        .and_then(|t| t.timestamp_nanos_opt())
                    {
                        Some(ns) => *slot = Some(ns),
                        None => {
                            eprintln!(
                                "sluice: {arg} `{v}` is not an RFC 3339 time (2026-12-07T00:00:00Z)"
                            );
                            return ExitCode::from(EXIT_CONFIG);
                        }
                    }
                }
            }
            restore_main(&url, &to_config, &sinks, &filter, &pairs(&options))
        }
    }
}

/// `KEY=VALUE` options as pairs.
fn pairs(options: &[String]) -> Vec<(String, String)> {
    options
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

fn restore_main(
    url: &str,
    config: &Path,
    only: &[String],
    filter: &Filter,
    options: &[(String, String)],
) -> ExitCode {
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(missing) = only
        .iter()
        .find(|n| !cfg.sinks.iter().any(|s| &s.name == *n))
    {
        eprintln!("sluice: {} has no sink named `{missing}`", config.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    let sinks: Vec<_> = cfg
        .sinks
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .cloned()
        .collect();
    if sinks.is_empty() {
        eprintln!("sluice: {} has no sink", config.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    // Worker threads drive the sinks and the object store's I/O while this
    // thread reads files and waits for acknowledgements.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let staging = std::env::temp_dir().join(format!("sluice-restore-{}", std::process::id()));
    let store = match Store::open(url, options, staging.clone(), rt.handle().clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut progress = Progress::new();
    let result = restore::run(&store, &rt, cfg, sinks, filter, |r| progress.report(r));
    let _ = std::fs::remove_dir_all(&staging);
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(t) => {
            progress.draw(&t, true);
            eprintln!(
                "Restored {} events from {} files; {} failed, {} overlapping records skipped, {} outside the time range.",
                t.delivered, t.files_done, t.failed, t.overlaps, t.filtered
            );
            if t.failed == 0 && t.files_done == t.files {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sluice: restore failed: {e:#}");
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
            Report::Started {
                partitions,
                files,
                sinks,
            } => eprintln!(
                "Restoring {partitions} partition(s), {files} file(s) to {} sink(s): {}.",
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
        let line = format!(
            "{}/{} files, {} events delivered, {:.1} MB/s, {:.0} events/s{}",
            t.files_done,
            t.files,
            t.delivered,
            t.bytes as f64 / secs / 1e6,
            t.delivered as f64 / secs,
            failed_suffix(t.failed),
        );
        self.0.write(&line, last);
    }
}
