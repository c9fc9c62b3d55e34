//! Listening sockets handed from a running source to its replacement, so a
//! reload that changes a source but keeps its address never closes the port.
//!
//! - `forward`: the new source accepts on the same socket (a duplicate
//!   descriptor of it) while the old one stops, and no client sees a refused
//!   connection.
//! - `syslog` over TCP or UDP: the new source is built once the old one has
//!   ended (see [`super::graph`]); meanwhile the pool's duplicates keep the
//!   sockets bound, so connections wait in the listen backlog and datagrams in
//!   the receive buffers, where the new source finds them. A syslog address
//!   with port 0 is not pooled (each build gets a port of its own).
//!
//! The pool keeps one set of duplicates per kind and configured address
//! (`127.0.0.1:0` included for forward: the replacement keeps the kernel's port).
//! [`ListenerPool::prune`] closes the duplicates of addresses no source of the
//! config uses any more, so a removed source frees its port once it stops;
//! [`ListenerPool::clear`] runs at the end of a run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use crate::config::{Config, SourceKind};
use crate::sources::syslog::SyslogMode;

/// What a pooled socket set serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listen {
    /// A forward source: its TCP listener, then its UDP heartbeat socket.
    Forward,
    /// A syslog source in `tcp` mode: its listener.
    SyslogTcp,
    /// A syslog source in `udp` mode: its `udp_threads` sockets.
    SyslogUdp,
}

type Pool = HashMap<(Listen, SocketAddr), Vec<OwnedFd>>;

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// The process's sockets bound by listening sources, by kind and configured address.
pub struct ListenerPool;

impl ListenerPool {
    fn with<T>(f: impl FnOnce(&mut Pool) -> T) -> T {
        let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
        f(guard.get_or_insert_with(HashMap::new))
    }

    /// Duplicates of the sockets already bound for `addr`, if a source holds them.
    pub fn take_fds(kind: Listen, addr: SocketAddr) -> std::io::Result<Option<Vec<OwnedFd>>> {
        Self::with(|pool| match pool.get(&(kind, addr)) {
            Some(fds) => fds
                .iter()
                .map(|fd| fd.try_clone())
                .collect::<std::io::Result<Vec<_>>>()
                .map(Some),
            None => Ok(None),
        })
    }

    /// Remember sockets just bound for `addr`, for a later replacement.
    pub fn keep_fds(kind: Listen, addr: SocketAddr, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let fds = fds
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<std::io::Result<Vec<_>>>()?;
        Self::with(|pool| pool.insert((kind, addr), fds));
        Ok(())
    }

    /// Close the pool's duplicates for `addr` (before binding it anew).
    pub fn forget(kind: Listen, addr: SocketAddr) {
        Self::with(|pool| pool.remove(&(kind, addr)));
    }

    /// A forward source's sockets already bound for `addr` (duplicates).
    pub fn take(
        addr: SocketAddr,
    ) -> std::io::Result<Option<(std::net::TcpListener, std::net::UdpSocket)>> {
        let Some(fds) = Self::take_fds(Listen::Forward, addr)? else {
            return Ok(None);
        };
        let mut fds = fds.into_iter();
        match (fds.next(), fds.next()) {
            (Some(tcp), Some(udp)) => Ok(Some((tcp.into(), udp.into()))),
            _ => Ok(None),
        }
    }

    /// Remember a forward source's sockets just bound for `addr`.
    pub fn keep(addr: SocketAddr, tcp: &impl AsFd, udp: &impl AsFd) -> std::io::Result<()> {
        Self::keep_fds(Listen::Forward, addr, &[tcp.as_fd(), udp.as_fd()])
    }

    /// Close the pool's duplicates of addresses `config` no longer listens on.
    pub fn prune(config: &Config) {
        let used: Vec<(Listen, SocketAddr)> = config
            .sources
            .iter()
            .filter_map(|s| match &s.kind {
                SourceKind::Forward(f) => Some((Listen::Forward, f.address.parse().ok()?)),
                SourceKind::Syslog(c) => {
                    let kind = match c.mode {
                        SyslogMode::Tcp => Listen::SyslogTcp,
                        SyslogMode::Udp => Listen::SyslogUdp,
                        _ => return None,
                    };
                    Some((kind, c.address.as_deref()?.parse().ok()?))
                }
                _ => None,
            })
            .collect();
        Self::with(|pool| pool.retain(|key, _| used.contains(key)));
    }

    /// Close every duplicate (the run ended).
    pub fn clear() {
        Self::with(HashMap::clear);
    }
}
