//! The running graph, and how a config becomes one — at start, and beside the
//! running one at a reload.
//!
//! Each source's [`Output`] is kept by the graph, so a reload can re-point it
//! (see [`Output::repoint`]) without touching the source. Building against a
//! running graph compares each component's config with the running one:
//!
//! - a sink whose config is equal keeps running with its buffer; its sender is
//!   reused by the new outputs;
//! - a sink added or changed is built anew, with a new buffer; a changed or
//!   removed sink's old buffer closes once the last send holding it ends, and the
//!   old sink delivers what it holds, then stops. A disk buffer is closed then
//!   (synced, checkpointed, its directory released); what the old sink could not
//!   deliver within half of `shutdown_timeout_secs` stays on disk;
//! - a sink changed that has a disk buffer before and after shares the
//!   buffer's directory with its old version: the new sink's outputs get a
//!   [`buffer::deferred`] sender at once (sends wait), and the new buffer opens
//!   (replaying what the old sink left) and the new sink starts once the old
//!   one has ended and its buffer closed. A build error then is a failure of
//!   that sink (logged, counted; sends to it resolve `Errored`);
//! - a source whose config is equal keeps running, connections and listeners
//!   intact; only its output is re-pointed;
//! - a source added is built and started;
//! - a `forward` source changed is built anew beside the old one, taking over
//!   its listening socket on the same address (see [`super::listeners`]); the
//!   old one is cancelled once the new one runs and finishes the frame in hand.
//!   Two accept loops on one socket never receive the same bytes;
//! - any other source changed reads state the old one is still using (a FIFO, a
//!   file's checkpoints, a mount): the old one is cancelled first, and the new
//!   one is built and started once the old one has ended, so no line is read
//!   twice or split between two readers. A build error then is a failure of that
//!   component (logged and counted), as the reload was already applied;
//! - routes are stateless steps run inside the senders: all are rebuilt from the
//!   new config (a `rate_limit` route's windows, a `tenant` route's accounting
//!   start over).
//!
//! Nothing of the new graph runs until every component built; on any error the
//! new parts are dropped unspawned and the running graph is untouched.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{ComponentError, Output, SinkContext, SinkWatch, SourceContext, Task, buffer_gauge};
use crate::buffer::disk::DiskBufferHandle;
use crate::buffer::{self, BufferSender};
use crate::config::{BufferKind, Config, SinkConfig, SourceConfig, SourceKind};
use crate::metrics::Registry;
use crate::{sinks, sources};

/// What every build shares.
pub(super) struct Shared {
    pub registry: Registry,
    /// Cancelled at the shutdown deadline.
    pub abort: CancellationToken,
    /// Parent of every source's stop token.
    pub stop_sources: CancellationToken,
    pub reload_rx: watch::Receiver<Arc<Config>>,
    /// `shutdown_timeout_secs` of the config being built or run (a reload may
    /// change it).
    pub shutdown_timeout_secs: AtomicU64,
    /// Every disk buffer open now.
    pub disks: DiskBuffers,
}

impl Shared {
    /// How long a graceful stop may take (`shutdown_timeout_secs`).
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs.load(Relaxed))
    }
}

/// The disk buffers open now, each by the generation of the sink that owns
/// it: closed when that sink is removed or replaced (once it has ended), and at
/// the stop.
#[derive(Clone, Default)]
pub(super) struct DiskBuffers(Arc<Mutex<Vec<(u64, DiskBufferHandle)>>>);

impl DiskBuffers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, DiskBufferHandle)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register the buffer of the sink of generation `generation`.
    pub fn add(&self, generation: u64, handle: DiskBufferHandle) {
        self.lock().push((generation, handle));
    }

    fn take(&self, generation: u64) -> Option<DiskBufferHandle> {
        let mut all = self.lock();
        let i = all.iter().position(|(g, _)| *g == generation)?;
        Some(all.swap_remove(i).1)
    }

    /// Every buffer still open, for the stop.
    pub fn take_all(&self) -> Vec<DiskBufferHandle> {
        self.lock().drain(..).map(|(_, h)| h).collect()
    }
}

/// Each sink built gets a new generation (its disk buffer's key).
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Relaxed)
}

/// A sink of the running graph.
struct RunningSink {
    config: SinkConfig,
    tx: BufferSender,
    generation: u64,
    /// Its `abort` (a child of the shutdown deadline's): cancelled when it
    /// left the config and did not end in time.
    abort: CancellationToken,
    /// Cancelled when its task has ended.
    done: CancellationToken,
    /// Cancelled once it ended and its disk buffer (if any) closed: a new
    /// version of it may open the directory.
    released: CancellationToken,
}

/// A source of the running graph.
struct RunningSource {
    config: SourceConfig,
    /// Shared with the source: re-pointed at a reload.
    out: Output,
    /// Cancels this source alone.
    stop: CancellationToken,
    /// Cancelled when its task has ended.
    done: CancellationToken,
}

/// The running graph: what a reload compares against and re-points.
pub(super) struct Graph {
    pub config: Arc<Config>,
    sinks: Vec<RunningSink>,
    sources: Vec<RunningSource>,
}

/// Components built and not yet running.
#[derive(Default)]
pub(super) struct Built {
    pub sink_tasks: Vec<(String, Task)>,
    pub route_tasks: Vec<(String, Task)>,
    pub source_tasks: Vec<(String, Task)>,
    pub watches: Vec<SinkWatch>,
    /// New sinks' disk buffers, by sink generation: registered in
    /// [`DiskBuffers`] once the build is applied.
    pub disk_buffers: Vec<(u64, DiskBufferHandle)>,
    /// New sinks' buffer gauges, registered at commit.
    gauges: Vec<crate::metrics::BufferGauge>,
    pub errors: Vec<String>,
    sinks: Vec<RunningSink>,
    sources: Vec<RunningSource>,
    /// Running sources' outputs and what they are re-pointed to.
    repoint: Vec<(Output, Output)>,
    /// Summary for the log: added, changed, removed, kept components.
    pub changes: Changes,
}

/// What a reload changes, by component id.
#[derive(Debug, Default)]
pub(super) struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub kept: usize,
}

impl Graph {
    /// No components: what the first build compares against.
    pub fn empty(config: Arc<Config>) -> Self {
        Graph {
            config,
            sinks: Vec::new(),
            sources: Vec::new(),
        }
    }

    fn sink(&self, name: &str) -> Option<&RunningSink> {
        self.sinks.iter().find(|s| s.config.name == name)
    }

    fn source(&self, name: &str) -> Option<&RunningSource> {
        self.sources.iter().find(|s| s.config.name == name)
    }

    /// Why `next` cannot be applied to this graph without a restart, if it cannot.
    pub fn refuse(&self, next: &Config) -> Option<String> {
        let (now, then) = (&self.config.global, &next.global);
        let mut why = Vec::new();
        if now.data_dir != then.data_dir {
            why.push("data_dir (disk buffers, checkpoints and journals live there)");
        }
        if now.api.address.is_some() != then.api.address.is_some() {
            why.push("[api] turned on or off (per-tenant accounting runs only with it)");
        }
        if now.api.max_tenant_series != then.api.max_tenant_series {
            why.push("[api] max_tenant_series");
        }
        // Only the two keys a reload applies may differ beyond this point (a
        // global key added later is refused until it is made reloadable).
        let mut rest = then.clone();
        rest.shutdown_timeout_secs = now.shutdown_timeout_secs;
        rest.api.address = now.api.address;
        if why.is_empty() && rest != *now {
            why.push("global settings");
        }
        (!why.is_empty()).then(|| format!("{} changed; applied at a restart", why.join(", ")))
    }

    /// Build `config`'s components that this graph does not already run.
    pub async fn build(&self, config: &Config, cx: &Shared) -> Built {
        let mut b = Built::default();
        let mut senders: Vec<(String, BufferSender)> = Vec::new();
        for sink in &config.sinks {
            let id = format!("sinks.{}", sink.name);
            match self.sink(&sink.name) {
                Some(running) if running.config == *sink => {
                    b.changes.kept += 1;
                    senders.push((sink.name.clone(), running.tx.clone()));
                    continue;
                }
                Some(old) => {
                    b.changes.changed.push(id.clone());
                    if old.config.buffer.kind == BufferKind::Disk
                        && sink.buffer.kind == BufferKind::Disk
                    {
                        let released = old.released.clone();
                        let data_dir = &config.global.data_dir;
                        let tx = build_deferred_sink(sink, &id, data_dir, cx, &mut b, released);
                        senders.push((sink.name.clone(), tx));
                        continue;
                    }
                }
                None => b.changes.added.push(id.clone()),
            }
            if let Some(tx) = build_sink(sink, &id, &config.global.data_dir, cx, &mut b).await {
                senders.push((sink.name.clone(), tx));
            }
        }
        b.changes.removed.extend(
            self.sinks
                .iter()
                .filter(|s| !config.sinks.iter().any(|n| n.name == s.config.name))
                .map(|s| format!("sinks.{}", s.config.name)),
        );

        // Routes are built as the sources' outputs need them (see route::Wiring).
        for route in &config.routes {
            cx.registry
                .describe(&format!("routes.{}", route.name), route.kind.type_name());
        }
        let mut wiring =
            crate::route::Wiring::new(config, &senders, &cx.registry, cx.reload_rx.clone());
        for source in &config.sources {
            let id = format!("sources.{}", source.name);
            // Ack latency and taps are read only through the API: without it, no cost.
            let out = match config.global.api.address {
                Some(_) => wiring
                    .output(&source.name)
                    .of_component(cx.registry.component(&id), true),
                None => wiring.output(&source.name),
            };
            match self.source(&source.name) {
                Some(running) if running.config == *source => {
                    b.changes.kept += 1;
                    b.repoint.push((running.out.clone(), out));
                    continue;
                }
                Some(_) => b.changes.changed.push(id.clone()),
                None => b.changes.added.push(id.clone()),
            }
            cx.registry.describe(&id, source.kind.type_name());
            // After a failed sink build every source looks unconnected: not worth a warning.
            if !out.is_connected() && b.errors.is_empty() {
                warn!(component_id = %id, "Source feeds no sink; its events are discarded.");
            }
            let stop = cx.stop_sources.child_token();
            let scx = SourceContext {
                name: source.name.as_str().into(),
                tag: source.tag.as_str().into(),
                out: out.clone(),
                shutdown: stop.clone(),
                counters: cx.registry.component(&id),
                data_dir: config.global.data_dir.clone(),
                reload: cx.reload_rx.clone(),
                durable_chunks: match &source.kind {
                    SourceKind::Forward(f) if f.dedupe_window.enabled() => {
                        crate::sources::forward::durable_chunks(config, &source.name, &senders)
                    }
                    _ => Default::default(),
                },
            };
            let done = CancellationToken::new();
            let running = RunningSource {
                config: source.clone(),
                out,
                stop,
                done: done.clone(),
            };
            let old_done = self.source(&source.name).map(|s| s.done.clone());
            let task: Task = match old_done {
                // Changed, not forward: built once the old one ended (module doc).
                Some(old_done) if !matches!(source.kind, SourceKind::Forward(_)) => {
                    let config = source.clone();
                    Box::pin(async move {
                        old_done.cancelled().await;
                        sources::build(&config, scx).await?.await
                    })
                }
                _ => match sources::build(source, scx).await {
                    Ok(task) => task,
                    Err(e) => {
                        b.errors.push(format!("{id}: {e:#}"));
                        continue;
                    }
                },
            };
            let task: Task = Box::pin(async move {
                let end = task.await;
                done.cancel();
                end
            });
            b.source_tasks.push((source.name.clone(), task));
            b.sources.push(running);
        }
        b.changes.removed.extend(
            self.sources
                .iter()
                .filter(|s| !config.sources.iter().any(|n| n.name == s.config.name))
                .map(|s| format!("sources.{}", s.config.name)),
        );
        b.route_tasks = std::mem::take(&mut wiring.tasks);
        b.errors.append(&mut wiring.errors);
        b
    }

    /// Switch to `built` (which built without errors) for `config`: re-point the
    /// kept sources, stop the sources not kept, forget the sinks not kept (their
    /// buffers end once drained of senders). The caller spawns the tasks first,
    /// and then what this returns: for each sink not kept, a task that waits for
    /// it to end and closes its disk buffer.
    pub fn commit(
        &mut self,
        config: Arc<Config>,
        built: &mut Built,
        cx: &Shared,
    ) -> Vec<(String, Task)> {
        let registry = &cx.registry;
        for gauge in built.gauges.drain(..) {
            registry.add_buffer(gauge);
        }
        for (old, new) in built.repoint.drain(..) {
            old.repoint(&new);
        }
        let new_sources = std::mem::take(&mut built.sources);
        let new_sinks = std::mem::take(&mut built.sinks);
        // Sources not kept: replaced or removed. Their new versions already run.
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sources)
            .into_iter()
            .partition(|s| config.sources.contains(&s.config));
        for s in gone {
            s.stop.cancel();
        }
        self.sources = kept.into_iter().chain(new_sources).collect();
        // Sinks not kept close once drained of senders; removed components'
        // series leave the exposition.
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sinks)
            .into_iter()
            .partition(|s| config.sinks.contains(&s.config));
        let closers = gone.into_iter().map(|s| release(s, cx)).collect();
        self.sinks = kept.into_iter().chain(new_sinks).collect();
        registry.retain(|id| match id.split_once('.') {
            Some(("sources", n)) => config.sources.iter().any(|s| s.name == n),
            Some(("routes", n)) => config.routes.iter().any(|r| r.name == n),
            Some(("sinks", n)) => config.sinks.iter().any(|s| s.name == n),
            _ => true,
        });
        self.config = config;
        closers
    }
}

/// A task that waits for a sink no longer in the graph to end, then closes its
/// disk buffer and says so to a new version of it. A sink with a disk buffer
/// gets half of `shutdown_timeout_secs` (and a second) to deliver, as at a
/// stop; then it is aborted, and what it holds stays in the buffer. One with a
/// memory buffer delivers everything it holds.
fn release(sink: RunningSink, cx: &Shared) -> (String, Task) {
    let RunningSink {
        config,
        tx,
        generation,
        abort,
        done,
        released,
    } = sink;
    // The graph's sender: once the old outputs' are gone too, the buffer ends.
    drop(tx);
    let disks = cx.disks.clone();
    let id = format!("sinks.{}", config.name);
    let drain = (config.buffer.kind == BufferKind::Disk)
        .then_some(cx.shutdown_timeout() / 2 + Duration::from_secs(1));
    let task: Task = Box::pin(async move {
        if let Some(drain) = drain
            && tokio::time::timeout(drain, done.cancelled()).await.is_err()
        {
            warn!(
                component_id = %id,
                "The sink left the config and did not end within half of shutdown_timeout_secs; stopping it (what it holds stays in its disk buffer)."
            );
            abort.cancel();
        }
        done.cancelled().await;
        if let Some(handle) = disks.take(generation) {
            handle.close(Duration::from_secs(5)).await;
            info!(
                component_id = %id,
                "The sink left the config and ended; its disk buffer is closed (what it did not deliver stays there)."
            );
        }
        released.cancel();
        Ok(())
    });
    (format!("{}.release", config.name), task)
}

/// Add a built sink's task to `b`, tracked so that a later reload knows when it ended.
fn track_sink(
    b: &mut Built,
    sink: &SinkConfig,
    tx: BufferSender,
    (generation, abort): (u64, CancellationToken),
    task: Task,
) {
    let done = CancellationToken::new();
    let end = done.clone();
    let task: Task = Box::pin(async move {
        let r = task.await;
        end.cancel();
        r
    });
    b.sink_tasks.push((sink.name.clone(), task));
    b.sinks.push(RunningSink {
        config: sink.clone(),
        tx,
        generation,
        abort,
        done,
        released: CancellationToken::new(),
    });
}

/// Build a changed sink whose disk buffer directory its old version still
/// holds: its sender now, its buffer and task once `old_released` (module doc).
fn build_deferred_sink(
    sink: &SinkConfig,
    id: &str,
    data_dir: &std::path::Path,
    cx: &Shared,
    b: &mut Built,
    old_released: CancellationToken,
) -> BufferSender {
    cx.registry.describe(id, sink.kind.type_name());
    let counters = cx.registry.component(id);
    let (tx, open) = buffer::deferred::deferred(counters.clone());
    let generation = next_generation();
    let (config, id, data_dir) = (sink.clone(), id.to_owned(), data_dir.to_owned());
    let (registry, disks) = (cx.registry.clone(), cx.disks.clone());
    let abort = cx.abort.child_token();
    let sink_abort = abort.clone();
    let (reload, timeout) = (cx.reload_rx.clone(), cx.shutdown_timeout());
    let task: Task = Box::pin(async move {
        old_released.cancelled().await;
        if open.unused() {
            return Ok(());
        }
        let buf = buffer::for_sink(&config, &data_dir, timeout, counters.clone())
            .map_err(|e| ComponentError::Other(format!("{id}: {e}")))?;
        registry.add_buffer(buffer_gauge(&id, &config, &buf));
        if let Some(handle) = buf.handle {
            disks.add(generation, handle);
        }
        let scx = SinkContext {
            name: config.name.as_str().into(),
            input: buf.rx,
            abort,
            counters,
            reload,
        };
        let run = sinks::build(&config, scx)
            .await
            .map_err(|e| ComponentError::Other(format!("{id}: {e:#}")))?;
        open.open(buf.tx);
        info!(component_id = %id, "The old sink ended and its disk buffer closed; the new one runs.");
        run.await
    });
    track_sink(b, sink, tx.clone(), (generation, sink_abort), task);
    tx
}

/// Build one sink with its buffer into `b`; its sender when it built.
async fn build_sink(
    sink: &SinkConfig,
    id: &str,
    data_dir: &std::path::Path,
    cx: &Shared,
    b: &mut Built,
) -> Option<BufferSender> {
    cx.registry.describe(id, sink.kind.type_name());
    let counters = cx.registry.component(id);
    let buf = match buffer::for_sink(sink, data_dir, cx.shutdown_timeout(), counters.clone()) {
        Ok(buf) => buf,
        Err(e) => {
            b.errors.push(format!("{id}: {e}"));
            return None;
        }
    };
    b.gauges.push(buffer_gauge(id, sink, &buf));
    let generation = next_generation();
    b.disk_buffers
        .extend(buf.handle.map(|handle| (generation, handle)));
    let (tx, rx) = (buf.tx, buf.rx);
    b.watches.push(SinkWatch {
        id: id.to_owned(),
        counters: counters.clone(),
        depth: rx.depth_probe(),
    });
    let abort = cx.abort.child_token();
    let scx = SinkContext {
        name: sink.name.as_str().into(),
        input: rx,
        abort: abort.clone(),
        counters,
        reload: cx.reload_rx.clone(),
    };
    match sinks::build(sink, scx).await {
        Ok(task) => {
            track_sink(b, sink, tx.clone(), (generation, abort), task);
            Some(tx)
        }
        Err(e) => {
            b.errors.push(format!("{id}: {e:#}"));
            None
        }
    }
}
