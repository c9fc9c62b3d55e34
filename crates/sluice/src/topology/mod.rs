//! The running graph: build every component from the config, wire sources to the
//! buffers of the sinks that name them, run, and stop in order.
//!
//! Start-up builds all sinks, then all sources, collecting every build error
//! (address in use, missing directory...) before giving up, so one run shows them
//! all. Shutdown order: cancel sources → they finish the read in hand and drop
//! their outputs → each sink's buffer ends once drained → sinks flush and fsync →
//! exit. A hard deadline (`shutdown_timeout_secs`) cancels what is left and reports
//! the undelivered counts.

mod graph;
mod listeners;
pub mod output;
mod reload;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span};

use graph::Graph;
pub use listeners::{Listen, ListenerPool};
pub use output::Output;

use crate::buffer;
use crate::config::Config;
use crate::metrics::{Counters, Registry};

/// Why a component stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// An I/O operation failed.
    #[error("{context}: {}", crate::error_text(source))]
    Io {
        /// What was being done (with the path or peer).
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// Anything else, already described.
    #[error("{0}")]
    Other(String),
}

impl ComponentError {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ComponentError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A component's running task.
pub type Task = Pin<Box<dyn Future<Output = Result<(), ComponentError>> + Send>>;

/// What a source gets to run.
#[derive(Clone)]
pub struct SourceContext {
    /// Component name.
    pub name: Arc<str>,
    /// Tag for its events.
    pub tag: Arc<str>,
    /// Where its batches go.
    pub out: Output,
    /// Cancelled when the source must stop reading.
    pub shutdown: CancellationToken,
    /// Its counters.
    pub counters: Arc<Counters>,
    /// Global data directory.
    pub data_dir: PathBuf,
    /// Latest config, updated on reload.
    pub reload: watch::Receiver<Arc<Config>>,
    /// Forward sources with `dedupe_window`: client chunks found complete in
    /// every disk buffer the source feeds when they opened (id → Unix time
    /// stored); empty for other sources.
    pub durable_chunks: std::collections::HashMap<bytes::Bytes, u64>,
}

/// What a sink gets to run.
pub struct SinkContext {
    /// Component name.
    pub name: Arc<str>,
    /// Its buffer's receiving end.
    pub input: buffer::BufferReceiver,
    /// Cancelled only at the shutdown deadline: stop now, even with data queued.
    pub abort: CancellationToken,
    /// Its counters.
    pub counters: Arc<Counters>,
    /// Latest config, updated on reload.
    pub reload: watch::Receiver<Arc<Config>>,
}

/// How a run ended.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Components that stopped with an error.
    pub failed: usize,
    /// Events lost at the stop: undelivered at the deadline by memory-buffered
    /// sinks, and events a disk buffer could not store before it closed.
    pub undelivered: u64,
    /// Records left unacknowledged in disk buffers: kept on disk, delivered
    /// after the next start (not lost).
    pub kept_records: u64,
}

/// What the shutdown report needs of a sink.
struct SinkWatch {
    id: String,
    counters: Arc<Counters>,
    /// Memory buffers: their depth; `None` for a disk buffer.
    depth: Option<buffer::DepthProbe>,
}

impl SinkWatch {
    /// Events this sink holds undelivered in memory now: queued in its buffer
    /// plus taken by the sink and not yet resolved. Each sink separately, so a
    /// fan-out's copies are all counted.
    fn undelivered_in_memory(&self) -> u64 {
        let Some(depth) = &self.depth else {
            return 0;
        };
        let c = &self.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let taken = load(&c.events_in);
        let settled = load(&c.events_out) + load(&c.dropped) + load(&c.errors);
        depth.events() as u64 + taken.saturating_sub(settled)
    }
}

/// Control messages for a running topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop gracefully.
    Stop,
    /// Re-read the config file.
    Reload,
}

/// Build and run `config` until all sources end or a `Stop` arrives.
pub async fn run(
    config: Config,
    mut control: tokio::sync::mpsc::Receiver<Control>,
) -> Result<RunReport, BuildErrors> {
    let registry = Registry::default();
    let health = crate::api::Health::default();
    let mut errors = Vec::new();
    // The API first, so /health answers (503) while the components build.
    let mut api = match config.global.api.address {
        Some(addr) => match crate::api::bind(addr, health.clone(), registry.clone()).await {
            Ok(server) => Some(server),
            Err(e) => {
                errors.push(format!(
                    "api: cannot listen on {addr}: {}",
                    crate::error_text(&e)
                ));
                None
            }
        },
        None => None,
    };
    let config = Arc::new(config);
    let (reload_tx, reload_rx) = watch::channel(config.clone());
    let shared = graph::Shared {
        registry: registry.clone(),
        abort: CancellationToken::new(),
        stop_sources: CancellationToken::new(),
        reload_rx,
        shutdown_timeout_secs: config.global.shutdown_timeout_secs.into(),
        disks: graph::DiskBuffers::default(),
    };
    let mut graph = Graph::empty(config.clone());
    // Sinks first (their buffers are the sources' outputs), then routes and sources.
    let mut built = graph.build(&config, &shared).await;
    errors.append(&mut built.errors);
    if !errors.is_empty() {
        return Err(BuildErrors(errors));
    }
    let mut watches = std::mem::take(&mut built.watches);

    let trackers = Trackers {
        sinks: TaskTracker::new(),
        sources: TaskTracker::new(),
        failed: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    };
    trackers.spawn(&mut built);
    graph.commit(config.clone(), &mut built, &shared);
    for (generation, handle) in built.disk_buffers.drain(..) {
        shared.disks.add(generation, handle);
    }
    trackers.sinks.close();
    trackers.sources.close();
    info!(
        sources = config.sources.len(),
        routes = config.routes.len(),
        sinks = config.sinks.len(),
        "Sluice started."
    );
    health.set(crate::api::Phase::Running);
    // Every source is bound by now (build binds): the service manager may order
    // dependants after us.
    crate::systemd::notify(crate::systemd::State::Ready, "Running.");

    // Run until stopped or every source has ended by itself.
    loop {
        tokio::select! {
            _ = trackers.sources.wait() => {
                info!("All sources ended; draining sinks.");
                break;
            }
            msg = control.recv() => match msg {
                Some(Control::Reload) => {
                    crate::systemd::notify(crate::systemd::State::Reloading, "Reloading.");
                    if let Some(mut b) = reload::reload(&mut graph, &shared, &trackers, &mut api, &health).await {
                        watches.append(&mut b.watches);
                        let _ = reload_tx.send(graph.config.clone());
                    }
                    crate::systemd::notify(crate::systemd::State::Ready, "Running.");
                }
                Some(Control::Stop) | None => {
                    info!("Stopping: sources stop, sinks drain.");
                    break;
                }
            },
        }
    }
    // The graph holds senders and outputs: without it, each sink's buffer ends
    // once its sources have stopped.
    let config = graph.config.clone();
    drop(graph);
    let (abort, stop_sources) = (shared.abort.clone(), shared.stop_sources.clone());
    let disks = shared.disks.clone();
    drop(shared);
    let (sinks_tracker, sources_tracker) = (trackers.sinks.clone(), trackers.sources.clone());
    let failed = trackers.failed.clone();

    health.set(crate::api::Phase::Stopping);
    crate::systemd::notify(crate::systemd::State::Stopping, "Stopping: sinks drain.");
    let deadline = Instant::now() + Duration::from_secs(config.global.shutdown_timeout_secs);
    stop_sources.cancel();
    let graceful = tokio::time::timeout_at(deadline.into(), async {
        sources_tracker.wait().await;
        sinks_tracker.wait().await;
    })
    .await
    .is_ok();
    let mut report = RunReport::default();
    if !graceful {
        // Per sink: with fan-out every sink holds its own copy. What a disk
        // buffer holds is not lost (reported as kept once it closed).
        for w in &watches {
            let n = w.undelivered_in_memory();
            if n > 0 {
                error!(
                    sink = %w.id,
                    timeout_secs = config.global.shutdown_timeout_secs,
                    undelivered_events = n,
                    "Shutdown deadline reached; abandoning undelivered events."
                );
                report.undelivered += n;
            }
        }
        if report.undelivered == 0 {
            info!(
                timeout_secs = config.global.shutdown_timeout_secs,
                "Shutdown deadline reached; what is not delivered stays in disk buffers."
            );
        }
        abort.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), sinks_tracker.wait()).await;
    }
    // Disk buffers: sync, checkpoint and report once their sinks are done.
    let disk_buffers = disks.take_all();
    let reports: Vec<_> = disk_buffers.iter().map(|h| h.report()).collect();
    for handle in disk_buffers {
        handle.close(Duration::from_secs(5)).await;
    }
    for r in &reports {
        use std::sync::atomic::Ordering::Relaxed;
        let s = r.stats();
        let kept = s.kept_records.load(Relaxed);
        let unstored = s.unstored_events.load(Relaxed);
        if kept > 0 {
            info!(
                sink = %r.sink(),
                kept_records = kept,
                kept_bytes = s.kept_bytes.load(Relaxed),
                dir = %r.dir().display(),
                "Undelivered events kept in the disk buffer; they are delivered after the next start."
            );
            report.kept_records += kept;
        }
        if unstored > 0 {
            error!(
                sink = %r.sink(),
                undelivered_events = unstored,
                "Events failed before they reached the disk buffer (full at the stop, or a fatal buffer error); they are lost."
            );
            report.undelivered += unstored;
        }
    }
    for line in registry.report() {
        info!("Counters {line}.");
    }
    report.failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    ListenerPool::clear();
    Ok(report)
}

/// Where components run: sinks and routes' helpers apart from sources, so
/// the stop can wait for each group.
struct Trackers {
    sinks: TaskTracker,
    sources: TaskTracker,
    failed: Arc<std::sync::atomic::AtomicUsize>,
}

impl Trackers {
    /// Spawn what `built` holds: sinks, then route helpers, then sources.
    fn spawn(&self, built: &mut graph::Built) {
        for (name, task) in built.sink_tasks.drain(..) {
            spawn(&self.sinks, "sink", name, task, self.failed.clone());
        }
        // Route helpers (list watchers) stop when their route's last sender is gone.
        for (name, task) in built.route_tasks.drain(..) {
            spawn(&self.sinks, "route", name, task, self.failed.clone());
        }
        for (name, task) in built.source_tasks.drain(..) {
            spawn(&self.sources, "source", name, task, self.failed.clone());
        }
    }
}

/// The metrics endpoint's view of a sink's buffer, probed at scrape time.
fn buffer_gauge(
    id: &str,
    sink: &crate::config::SinkConfig,
    buf: &buffer::SinkBuffer,
) -> crate::metrics::BufferGauge {
    use crate::metrics::{BufferGauge, BufferLevel};
    match (&buf.handle, buf.rx.depth_probe()) {
        (Some(disk), _) => {
            let dir = disk.report().dir().to_owned();
            BufferGauge {
                id: id.to_owned(),
                buffer_type: "disk",
                probe: Box::new(move || BufferLevel {
                    events: 0,
                    bytes: dir_bytes(&dir),
                }),
                max_events: None,
                max_bytes: Some(sink.buffer.max_bytes()),
            }
        }
        (None, depth) => BufferGauge {
            id: id.to_owned(),
            buffer_type: "memory",
            probe: Box::new(move || BufferLevel {
                events: depth.as_ref().map_or(0, |d| d.events() as u64),
                bytes: depth.as_ref().map_or(0, |d| d.bytes() as u64),
            }),
            max_events: Some(sink.buffer.max_events as u64),
            max_bytes: Some(sink.buffer.max_bytes()),
        },
    }
}

/// Bytes of the files directly in `dir` (a disk buffer's segments and checkpoint).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn spawn(
    tracker: &TaskTracker,
    kind: &'static str,
    name: String,
    task: Task,
    failed: Arc<std::sync::atomic::AtomicUsize>,
) {
    let span = info_span!("component", component_kind = kind, component_id = %name);
    tracker.spawn(
        async move {
            if let Err(e) = task.await {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                error!(error = %e, "Component failed.");
            }
        }
        .instrument(span),
    );
}

/// Every component that failed to build.
#[derive(Debug)]
pub struct BuildErrors(pub Vec<String>);

impl std::fmt::Display for BuildErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for BuildErrors {}
