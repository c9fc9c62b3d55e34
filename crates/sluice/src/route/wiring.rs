//! Building routes and the outputs that lead to them, from the sinks up.
//!
//! The output of a producer (a source, a route, a route's port) has one edge per
//! consumer: a sink's buffer, or a route node. A route node is built the first
//! time a producer needs it, after its own outputs, so the graph (acyclic, checked
//! by the config) is built depth first; a route with several inputs is one shared
//! node.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::accounting::TenantBook;
use super::tenant::{self, ActiveSet, FileStamp};
use super::{Imp, RouteConfig, RouteKind, RouteNode};
use crate::buffer::BufferSender;
use crate::config::{Config, SinkConfig};
use crate::metrics::Registry;
use crate::topology::output::Edge;
use crate::topology::{ComponentError, Output, Task};

/// Builds route nodes and outputs for one topology.
pub struct Wiring<'a> {
    routes: &'a [RouteConfig],
    sinks: &'a [SinkConfig],
    senders: &'a [(String, BufferSender)],
    registry: &'a Registry,
    reload: watch::Receiver<Arc<Config>>,
    /// Per-tenant accounting: present when a tenant route exists.
    book: Option<Arc<TenantBook>>,
    /// Whether the API runs (taps on route outputs).
    api: bool,
    /// `None` while being built or when the build failed.
    built: HashMap<String, Option<Arc<RouteNode>>>,
    /// Helper tasks of routes (list watchers), by route name.
    pub tasks: Vec<(String, Task)>,
    /// Build errors, `routes.NAME: what`.
    pub errors: Vec<String>,
}

impl<'a> Wiring<'a> {
    /// Wiring over built sinks' senders.
    pub fn new(
        config: &'a Config,
        senders: &'a [(String, BufferSender)],
        registry: &'a Registry,
        reload: watch::Receiver<Arc<Config>>,
    ) -> Self {
        // Accounting is read only through the API: without it, no cost.
        let has_tenant_route = config
            .routes
            .iter()
            .any(|r| matches!(r.kind, RouteKind::Tenant(_)));
        // The disk buffer chosen to keep the accounts owns the book (it was
        // recovered with the buffer); otherwise they start from zero.
        let kept = config
            .sinks
            .iter()
            .find(|s| s.buffer.tenant_series.is_some())
            .map(|s| {
                let book = senders
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .and_then(|(_, tx)| tx.tenant_book());
                if book.is_none() {
                    warn!(sink = %s.name, "Per-tenant accounts not kept across restarts until sluice restarts (the sink keeping them was replaced by a reload).");
                }
                book
            })
            .unwrap_or_default();
        let book = (has_tenant_route && config.global.api.address.is_some()).then(|| {
            kept.unwrap_or_else(|| Arc::new(TenantBook::new(config.global.api.max_tenant_series)))
        });
        if let Some(book) = &book {
            registry.set_tenants(book.clone());
        }
        Wiring {
            book,
            api: config.global.api.address.is_some(),
            routes: &config.routes,
            sinks: &config.sinks,
            senders,
            registry,
            reload,
            built: HashMap::new(),
            tasks: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The output of `producer` (`src`, `route`, `route.port`): every sink and
    /// route naming it.
    pub fn output(&mut self, producer: &str) -> Output {
        let mut edges = Vec::new();
        for sink in self
            .sinks
            .iter()
            .filter(|s| s.inputs.iter().any(|i| i == producer))
        {
            if let Some((_, tx)) = self.senders.iter().find(|(n, _)| n == &sink.name) {
                edges.push(Edge::Buffer(tx.clone()));
            }
        }
        let routes = self.routes;
        for route in routes
            .iter()
            .filter(|r| r.inputs.iter().any(|i| i == producer))
        {
            if let Some(node) = self.node(route) {
                edges.push(Edge::Route(node));
            }
        }
        Output::from_edges(edges)
    }

    /// A route's output: like [`output`](Self::output), and settling tenants'
    /// events at the sinks' buffers (see [`super::accounting`]).
    fn route_output(&mut self, producer: &str) -> Output {
        let mut out = self.output(producer);
        if self.api {
            // Taps are read only through the API: without it, no cost.
            let route = producer.split_once('.').map_or(producer, |(r, _)| r);
            let counters = self.registry.component(&format!("routes.{route}"));
            out = out.of_component(counters, false);
        }
        match &self.book {
            Some(book) => out.with_book(book.clone()),
            None => out,
        }
    }

    fn node(&mut self, config: &RouteConfig) -> Option<Arc<RouteNode>> {
        if let Some(done) = self.built.get(&config.name) {
            return done.clone();
        }
        self.built.insert(config.name.clone(), None);
        let node = match self.build(config) {
            Ok(node) => Some(Arc::new(node)),
            Err(e) => {
                self.errors.push(format!("routes.{}: {e}", config.name));
                None
            }
        };
        self.built.insert(config.name.clone(), node.clone());
        node
    }

    fn build(&mut self, config: &RouteConfig) -> Result<RouteNode, String> {
        let name = config.name.as_str();
        let counters = self.registry.component(&format!("routes.{name}"));
        let mut stop = None;
        let imp = match &config.kind {
            RouteKind::Tenant(c) => {
                let list = tenant::read_list(&c.active_list).map_err(|e| {
                    format!(
                        "reading active list {}: {}",
                        c.active_list.display(),
                        crate::error_text(&e)
                    )
                })?;
                report_invalid(name, &c.active_list, &list.invalid);
                let active = Arc::new(ArcSwap::from_pointee(ActiveSet::from_ids(
                    list.ids.iter().map(String::as_str),
                )));
                info!(component_id = %format!("routes.{name}"), tenants = list.ids.len(), path = %c.active_list.display(), "Active list loaded.");
                let token = CancellationToken::new();
                let watcher = Watcher {
                    route: name.to_owned(),
                    path: c.active_list.clone(),
                    stamp: tenant::stamp(&c.active_list),
                    ids: list.ids,
                    active: active.clone(),
                    interval: tenant::poll_interval(c),
                    reload: Some(self.reload.clone()),
                    stop: token.clone(),
                };
                self.tasks.push((name.to_owned(), Box::pin(watcher.run())));
                stop = Some(token.drop_guard());
                Imp::Tenant {
                    split: tenant::TenantSplit::new(c),
                    active,
                    out: self.route_output(name),
                }
            }
            RouteKind::Rules(c) => {
                let rules = super::rules::Rules::new(c)?;
                let ports = c
                    .ports()
                    .iter()
                    .map(|p| self.route_output(&format!("{name}.{p}")))
                    .collect();
                Imp::Rules { rules, ports }
            }
            RouteKind::Bucket(c) => {
                let bucketer = super::bucket::Bucketer::new(c)?;
                let all = self.route_output(name);
                let ports = (0..bucketer.buckets())
                    .map(|i| self.route_output(&format!("{name}.{i}")))
                    .collect();
                Imp::Bucket {
                    bucketer,
                    all,
                    ports,
                }
            }
            RouteKind::RateLimit(c) => Imp::RateLimit {
                limiter: std::sync::Mutex::new(super::rate_limit::Limiter::new(c)?),
                last_report: Default::default(),
                out: self.route_output(name),
            },
            RouteKind::Filter(c) => Imp::Filter {
                filter: c.clone(),
                out: self.route_output(name),
            },
        };
        let connected = match &imp {
            Imp::Tenant { out, .. } | Imp::RateLimit { out, .. } | Imp::Filter { out, .. } => {
                out.is_connected()
            }
            Imp::Rules { ports, .. } => ports.iter().any(Output::is_connected),
            Imp::Bucket { all, ports, .. } => {
                all.is_connected() || ports.iter().any(Output::is_connected)
            }
        };
        if !connected {
            warn!(component_id = %format!("routes.{name}"), "Route feeds nothing; its events are discarded.");
        }
        Ok(RouteNode {
            name: name.into(),
            counters,
            book: self.book.clone(),
            imp,
            _stop: stop,
        })
    }
}

fn report_invalid(route: &str, path: &Path, invalid: &[(usize, String)]) {
    for (line, text) in invalid.iter().take(10) {
        warn!(
            component_id = %format!("routes.{route}"),
            path = %path.display(),
            line,
            id = %text,
            "Active list line is not a valid tenant id; skipped."
        );
    }
}

/// Re-reads the active list when its file changes, or on SIGHUP (a config
/// reload), and swaps the new set in.
struct Watcher {
    route: String,
    path: PathBuf,
    stamp: Option<FileStamp>,
    ids: Vec<String>,
    active: Arc<ArcSwap<ActiveSet>>,
    interval: Duration,
    reload: Option<watch::Receiver<Arc<Config>>>,
    stop: CancellationToken,
}

impl Watcher {
    async fn run(mut self) -> Result<(), ComponentError> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut failing = false;
        loop {
            let forced = tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                _ = tick.tick() => false,
                changed = async { self.reload.as_mut().expect("guarded by the if").changed().await }, if self.reload.is_some() => {
                    if changed.is_err() {
                        self.reload = None;
                    }
                    changed.is_ok()
                }
            };
            let path = self.path.clone();
            let stamp = tokio::task::spawn_blocking(move || tenant::stamp(&path))
                .await
                .unwrap_or(None);
            if !forced && stamp == self.stamp {
                continue;
            }
            let path = self.path.clone();
            let read = tokio::task::spawn_blocking(move || tenant::read_list(&path))
                .await
                .map_err(|e| ComponentError::Other(format!("list reader failed: {e}")))?;
            match read {
                Ok(list) => {
                    failing = false;
                    self.stamp = stamp;
                    report_invalid(&self.route, &self.path, &list.invalid);
                    let set = ActiveSet::from_ids(list.ids.iter().map(String::as_str));
                    let old = ActiveSet::from_ids(self.ids.iter().map(String::as_str));
                    let added = list.ids.iter().filter(|id| !old.contains(id)).count();
                    let removed = self.ids.iter().filter(|id| !set.contains(id)).count();
                    self.active.store(Arc::new(set));
                    info!(
                        path = %self.path.display(),
                        tenants = list.ids.len(),
                        added,
                        removed,
                        "Active list reloaded."
                    );
                    self.ids = list.ids;
                }
                Err(e) if !failing => {
                    failing = true;
                    warn!(
                        path = %self.path.display(),
                        error = %crate::error_text(&e),
                        "Cannot read the active list; keeping the previous one."
                    );
                }
                Err(_) => {}
            }
        }
    }
}
