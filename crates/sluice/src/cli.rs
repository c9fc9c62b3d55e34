//! Command line: `sluice run`, `sluice validate`, `sluice buffer ...`,
//! `sluice tenant ...`, `sluice completions SHELL`, `sluice man`, `sluice --version`. Logging is installed before this runs
//! (`crate::logging`).
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::topology::{self, Control};

/// sluice: capture, route and deliver logs with end-to-end acknowledgements.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline described by a config file.
    Run {
        /// TOML config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Reload when the config file changes, as on SIGHUP.
        #[arg(long)]
        watch_config: bool,
    },
    /// Check a config file and report every error found; exit 0 when valid, 2 when not.
    Validate {
        /// TOML config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Print the graph the config builds: sources → routes → sinks, with buffers.
        #[arg(long)]
        graph: bool,
        /// Print the graph in Graphviz DOT (`| dot -Tsvg > graph.svg`).
        #[arg(long, conflicts_with = "graph")]
        dot: bool,
    },
    /// Inspect a disk buffer directory, or replay it through another config's sinks.
    Buffer {
        /// What to do.
        #[command(subcommand)]
        command: crate::commands::buffer::BufferCommand,
    },
    /// Check an archive written by an archive sink.
    Archive {
        /// What to do.
        #[command(subcommand)]
        command: ArchiveCommand,
    },
    /// Onboard tenants of a tenant route: topics, ACLs, active list, bundles.
    Tenant {
        /// What to do.
        #[command(subcommand)]
        command: crate::commands::tenant::TenantCommand,
    },
    /// A live view of a running daemon's components, from its API (`[api]`);
    /// `q` quits.
    Top {
        /// The daemon's API address (`[api] address`).
        #[arg(long, default_value = "127.0.0.1:9598")]
        api: std::net::SocketAddr,
    },
    /// Print the events leaving a source or route of a running daemon as JSON
    /// lines, from its API (a sample: what the tap cannot take is dropped).
    Tap {
        /// The source or route name (`sources.NAME`, `routes.NAME` when ambiguous).
        component: String,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// The daemon's API address (`[api] address`).
        #[arg(long, default_value = "127.0.0.1:9598")]
        api: std::net::SocketAddr,
    },
    /// Print a shell completion script (`sluice completions bash > /etc/bash_completion.d/sluice`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, roff (`sluice man > /usr/local/share/man/man1/sluice.1`).
    Man,
}

/// `sluice archive` subcommands.
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// List partitions, offset ranges, gaps, overlaps, file counts and bytes
    /// (exit 1 on a gap or an overlap).
    Verify {
        /// `file:///dir`, `s3://bucket/prefix` or `az://container/prefix`.
        url: String,
        /// Object store option (credentials, endpoint...), repeatable.
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
    /// Send an archive's records, per partition in offset order, through the
    /// sinks of a config (e.g. back into Kafka), with progress and a summary.
    Restore {
        /// `file:///dir`, `s3://bucket/prefix` or `az://container/prefix`.
        url: String,
        /// Config whose sinks receive the records.
        #[arg(long)]
        to_config: std::path::PathBuf,
        /// Only these sinks of that config (repeatable; default: all).
        #[arg(long = "sink")]
        sinks: Vec<String>,
        /// Only records of this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Only records whose time is at or after this (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only records whose time is before this (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Object store option (credentials, endpoint...), repeatable.
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
}

/// Exit code for a bad config.
pub const EXIT_CONFIG: u8 = 2;

/// Run the parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Tenant { command } => crate::commands::tenant::main(command),
        Command::Buffer { command } => crate::commands::buffer::main(command),
        Command::Archive { command } => crate::commands::archive::main(command),
        Command::Top { api } => crate::commands::top::main(api),
        Command::Tap {
            component,
            limit,
            api,
        } => crate::commands::tap::main(api, &component, limit),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut script);
            print_out(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => print_out(&page),
                Err(e) => {
                    eprintln!("sluice: cannot render the man page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { config, graph, dot } => match crate::config::load(&config) {
            Ok(c) if dot => print_out(crate::commands::graph::dot(&c).as_bytes()),
            Ok(c) if graph => print_out(crate::commands::graph::text(&c).as_bytes()),
            Ok(c) => {
                println!(
                    "{}: valid ({} sources, {} sinks)",
                    config.display(),
                    c.sources.len(),
                    c.sinks.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run {
            config,
            watch_config,
        } => {
            let cfg = match crate::config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("sluice")
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("sluice: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let code = runtime.block_on(run(cfg, watch_config));
            // A sink thread stuck in a blocking call (a FIFO nobody reads, a hung
            // NFS file) must not keep the process alive past the shutdown report.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            code
        }
    }
}

/// Write generated text to stdout; a closed pipe (`| head`) is not a panic.
fn print_out(bytes: &[u8]) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: crate::config::Config, watch_config: bool) -> ExitCode {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let _watch = if watch_config {
        let tx = tx.clone();
        let on_change = move || {
            // Full: reloads are already queued, and each reads the file afresh.
            let _ = tx.try_send(Control::Reload);
        };
        match crate::config::watch::watch(&cfg.path, on_change) {
            Ok(w) => {
                info!(path = %cfg.path.display(), "Watching the config file; a change reloads it.");
                Some(w)
            }
            Err(e) => {
                eprintln!("sluice: cannot watch {}: {e}", cfg.path.display());
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let signals = match forward_signals(tx) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("sluice: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = topology::run(cfg, rx).await;
    signals.abort();
    match result {
        Ok(report) if report.failed == 0 && report.undelivered == 0 => {
            info!(kept_records = report.kept_records, "Stopped.");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            error!(
                failed_components = report.failed,
                undelivered = report.undelivered,
                "Stopped with failures."
            );
            ExitCode::FAILURE
        }
        Err(errors) => {
            for e in &errors.0 {
                error!("Cannot start {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn forward_signals(
    tx: tokio::sync::mpsc::Sender<Control>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        let mut stops = 0;
        loop {
            let msg = tokio::select! {
                _ = term.recv() => Control::Stop,
                _ = int.recv() => Control::Stop,
                _ = hup.recv() => Control::Reload,
            };
            if msg == Control::Stop {
                stops += 1;
                if stops > 1 {
                    warn!("Second stop signal: exiting now.");
                    std::process::exit(1);
                }
            }
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }))
}
