//! Reload (SIGHUP, or a change of the file with `sluice run --watch-config`):
//! load and validate the file as `sluice validate` does, build what changed
//! beside the running graph, and switch only when everything built. A file that
//! does not load, a change that needs a restart (`data_dir`, turning `[api]` on
//! or off, `max_tenant_series`) and a build
//! error are logged with the reason and leave the running graph as it was. See [`super::graph`] for what each kind
//! of change does to a component.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tracing::{error, info};

use super::graph::{Built, Graph, Shared};
use super::{ListenerPool, Trackers, spawn};

/// Apply the config file to `graph`. The new components' built parts (buffer
/// handles, watches) when the reload was applied.
pub(super) async fn reload(
    graph: &mut Graph,
    shared: &Shared,
    trackers: &Trackers,
    api: &mut Option<crate::api::ApiServer>,
    health: &crate::api::Health,
) -> Option<Built> {
    let path = graph.config.path.clone();
    info!(path = %path.display(), "Reload requested.");
    let next = match crate::config::load(&path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            error!("Reload failed; keeping the running config:\n{e}");
            return None;
        }
    };
    if let Some(why) = graph.refuse(&next) {
        error!("Reload refused; keeping the running config:\n{why}");
        return None;
    }
    // A new `[api] address` is bound before anything changes: a port in use
    // fails the reload with the reason, and the old address serves until the
    // switch.
    let mut new_api = None;
    if let Some(addr) = next.global.api.address
        && next.global.api.address != graph.config.global.api.address
    {
        match crate::api::bind(addr, health.clone(), shared.registry.clone()).await {
            Ok(server) => new_api = Some(server),
            Err(e) => {
                error!(
                    "Reload failed; keeping the running config:\napi: cannot listen on {addr}: {}",
                    crate::error_text(&e)
                );
                return None;
            }
        }
    }
    let old_timeout = shared
        .shutdown_timeout_secs
        .swap(next.global.shutdown_timeout_secs, Relaxed);
    let mut built = graph.build(&next, shared).await;
    if !built.errors.is_empty() {
        shared.shutdown_timeout_secs.store(old_timeout, Relaxed);
        error!(
            "Reload failed; keeping the running config:\n{}",
            built.errors.join("\n")
        );
        drop(built);
        // Close what the failed build bound for new addresses.
        ListenerPool::prune(&graph.config);
        return None;
    }
    trackers.spawn(&mut built);
    for (name, task) in graph.commit(next.clone(), &mut built, shared) {
        spawn(&trackers.sinks, "sink", name, task, trackers.failed.clone());
    }
    for (generation, handle) in built.disk_buffers.drain(..) {
        shared.disks.add(generation, handle);
    }
    ListenerPool::prune(&next);
    if let Some(server) = new_api {
        // The old server (if any) stops accepting as it is dropped.
        *api = Some(server);
    }
    let c = &built.changes;
    info!(
        added = ?c.added,
        changed = ?c.changed,
        removed = ?c.removed,
        kept = c.kept,
        routes = next.routes.len(),
        "Reload applied."
    );
    Some(built)
}
