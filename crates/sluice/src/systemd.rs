//! Readiness and state for a service manager (systemd `Type=notify`, see
//! `deploy/systemd/sluice.service`): `READY=1` once every component is built —
//! sources bound to their ports, sinks connected, disk buffers recovered —
//! `RELOADING=1` then `READY=1` around a reload, `STOPPING=1` when the graceful
//! stop begins. Each message also carries a `STATUS=` line for `systemctl status`.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing. A
//! failure to send is logged at DEBUG: the service manager is not on the data
//! path, and a missing READY makes systemd fail the start visibly anyway.

use sd_notify::NotifyState;
use tracing::debug;

/// What the daemon is doing, as the service manager is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Every component is built and running.
    Ready,
    /// A reload began; `Ready` follows when it is applied or refused.
    Reloading,
    /// The graceful stop began.
    Stopping,
}

/// Tell the service manager (if any) about `state`, with a status line.
pub fn notify(state: State, status: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let head = match state {
        State::Ready => NotifyState::Ready,
        State::Reloading => NotifyState::Reloading,
        State::Stopping => NotifyState::Stopping,
    };
    // `false`: keep NOTIFY_SOCKET for the later RELOADING/READY/STOPPING.
    if let Err(e) = sd_notify::notify(false, &[head, NotifyState::Status(status)]) {
        debug!(error = %e, ?state, "Cannot notify the service manager.");
    }
}
