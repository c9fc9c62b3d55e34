//! Fault points for crash tests: a moment a real `kill -9` cannot be aimed at.
//!
//! With `SLUICE_FAULT=<name>` in its environment, sluice kills itself with
//! `SIGKILL` the first time it reaches the point `<name>` — exactly what a
//! `kill -9` at that instant does (no destructor, no flush; what was written
//! stays in the page cache). Without the variable a point costs one load of a
//! cached `Option`. Points:
//! - `before_chunk_journal`: a forward chunk is durable in every disk buffer
//!   and its id not yet journaled (`sources::forward::dedupe`).

use std::sync::OnceLock;

/// Die here if `SLUICE_FAULT` names this point.
pub fn point(name: &str) {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("SLUICE_FAULT").ok());
    if wanted.as_deref() == Some(name) {
        eprintln!("SLUICE_FAULT={name}: killing sluice at this point");
        // SAFETY: plain syscalls on our own pid.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
