//! Listening sockets handed from a running source to its replacement, so a
//! reload that changes a forward source but keeps its address never closes the
//! port: the new source accepts on the same socket (a duplicate descriptor of
//! it) while the old one stops, and no client sees a refused connection.
//!
//! The pool keeps one duplicate per configured address (`127.0.0.1:0` included:
//! the replacement keeps the kernel's port). [`ListenerPool::prune`] closes the
//! duplicates of addresses no forward source of the config uses any more, so a
//! removed source frees its port once it stops; [`ListenerPool::clear`] runs at
//! the end of a run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Mutex;

use crate::config::{Config, SourceKind};

/// One bound address: the TCP listener and its UDP heartbeat socket.
struct Bound {
    tcp: std::net::TcpListener,
    udp: std::net::UdpSocket,
}

static POOL: Mutex<Option<HashMap<SocketAddr, Bound>>> = Mutex::new(None);

/// The process's sockets bound by forward sources, by configured address.
pub struct ListenerPool;

impl ListenerPool {
    fn with<T>(f: impl FnOnce(&mut HashMap<SocketAddr, Bound>) -> T) -> T {
        let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
        f(guard.get_or_insert_with(HashMap::new))
    }

    /// The sockets already bound for `addr` (duplicates), if a source holds them.
    pub fn take(
        addr: SocketAddr,
    ) -> std::io::Result<Option<(std::net::TcpListener, std::net::UdpSocket)>> {
        Self::with(|pool| match pool.get(&addr) {
            Some(b) => Ok(Some((
                std::net::TcpListener::from(b.tcp.as_fd().try_clone_to_owned()?),
                std::net::UdpSocket::from(b.udp.as_fd().try_clone_to_owned()?),
            ))),
            None => Ok(None),
        })
    }

    /// Remember sockets just bound for `addr`, for a later replacement.
    pub fn keep(addr: SocketAddr, tcp: &impl AsFd, udp: &impl AsFd) -> std::io::Result<()> {
        let bound = Bound {
            tcp: std::net::TcpListener::from(tcp.as_fd().try_clone_to_owned()?),
            udp: std::net::UdpSocket::from(udp.as_fd().try_clone_to_owned()?),
        };
        Self::with(|pool| pool.insert(addr, bound));
        Ok(())
    }

    /// Close the pool's duplicates of addresses `config` no longer listens on.
    pub fn prune(config: &Config) {
        let used: Vec<SocketAddr> = config
            .sources
            .iter()
            .filter_map(|s| match &s.kind {
                SourceKind::Forward(f) => f.address.parse().ok(),
                _ => None,
            })
            .collect();
        Self::with(|pool| pool.retain(|addr, _| used.contains(addr)));
    }

    /// Close every duplicate (the run ended).
    pub fn clear() {
        Self::with(HashMap::clear);
    }
}
