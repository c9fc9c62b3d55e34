//! Reload (SIGHUP, or a change of the file with `sluice run --watch-config`):
//! load and validate the file as `sluice validate` does, build what changed
//! beside the running graph, and switch only when everything built. A file that
//! does not load, a change that needs a restart (global settings) and a build
//! error are logged with the reason and leave the running graph as it was. See [`super::graph`] for what each kind
//! of change does to a component.

use std::sync::Arc;

use tracing::{error, info};

use super::graph::{Built, Graph, Shared};
use super::{ListenerPool, Trackers, spawn};

/// Apply the config file to `graph`. The new components' built parts (buffer
/// handles, watches) when the reload was applied.
pub(super) async fn reload(
    graph: &mut Graph,
    shared: &Shared,
    trackers: &Trackers,
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
    let mut built = graph.build(&next, shared).await;
    if !built.errors.is_empty() {
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
