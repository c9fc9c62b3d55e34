//! UDP sockets of the syslog source: `udp_threads` sockets on one address
//! (`SO_REUSEPORT`), their receive buffer, and what the kernel dropped on each.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::topology::ComponentError;

/// Most receive sockets (`udp_threads`).
pub(crate) const MAX_UDP_THREADS: usize = 64;

/// [`bind`], handing the sockets over across a reload (see
/// [`crate::topology::ListenerPool`]): a replaced source's sockets are taken
/// over when there are as many as `threads` (the datagrams queued in them
/// meanwhile included); otherwise they are closed and the address bound anew.
pub(super) fn bind_pooled(
    addr: SocketAddr,
    threads: usize,
    receive_buffer_bytes: Option<usize>,
) -> Result<Vec<UdpSocket>, ComponentError> {
    use crate::topology::{Listen, ListenerPool};
    use std::os::fd::AsFd;
    if addr.port() == 0 {
        return bind(addr, threads, receive_buffer_bytes);
    }
    let pooled = ListenerPool::take_fds(Listen::SyslogUdp, addr)
        .map_err(|e| ComponentError::io(format!("taking over {addr}"), e))?;
    if let Some(fds) = pooled {
        if fds.len() == threads.max(1) {
            return fds
                .into_iter()
                .map(|fd| {
                    let std = std::net::UdpSocket::from(fd);
                    if let Some(bytes) = receive_buffer_bytes {
                        super::dgram::set_receive_buffer(&std, bytes)?;
                    }
                    UdpSocket::from_std(std)
                        .map_err(|e| ComponentError::io(format!("registering {addr}"), e))
                })
                .collect();
        }
        ListenerPool::forget(Listen::SyslogUdp, addr);
    }
    let sockets = bind(addr, threads, receive_buffer_bytes)?;
    let fds: Vec<_> = sockets.iter().map(|s| s.as_fd()).collect();
    ListenerPool::keep_fds(Listen::SyslogUdp, addr, &fds)
        .map_err(|e| ComponentError::io(format!("keeping {addr} for a reload"), e))?;
    Ok(sockets)
}

/// Binds `threads` UDP sockets to `addr`. With more than one, every socket sets
/// `SO_REUSEPORT`; with port 0 the first one's port is taken by the others.
pub(super) fn bind(
    addr: SocketAddr,
    threads: usize,
    receive_buffer_bytes: Option<usize>,
) -> Result<Vec<UdpSocket>, ComponentError> {
    let mut sockets = Vec::with_capacity(threads);
    let mut at = addr;
    for _ in 0..threads.max(1) {
        let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| ComponentError::io("creating a UDP socket", e))?;
        if threads > 1 {
            s.set_reuse_port(true)
                .map_err(|e| ComponentError::io("setting SO_REUSEPORT", e))?;
        }
        if let Some(bytes) = receive_buffer_bytes {
            super::dgram::set_receive_buffer(&s, bytes)?;
        }
        s.bind(&at.into())
            .map_err(|e| ComponentError::io(format!("binding {at}"), e))?;
        s.set_nonblocking(true)
            .map_err(|e| ComponentError::io("setting non-blocking", e))?;
        let std: std::net::UdpSocket = s.into();
        if at.port() == 0 {
            at = std
                .local_addr()
                .map_err(|e| ComponentError::io("reading the bound address", e))?;
        }
        sockets.push(
            UdpSocket::from_std(std)
                .map_err(|e| ComponentError::io(format!("registering {at}"), e))?,
        );
    }
    Ok(sockets)
}

/// Datagrams the kernel dropped on one socket because its receive buffer was
/// full: the `drops` column of its line in `/proc/net/udp` (or `udp6`), found
/// by the socket's inode.
pub(crate) struct KernelDrops {
    inode: u64,
    table: &'static str,
    /// The column's value at the last look.
    seen: u64,
    /// Drops since the socket was bound.
    total: u64,
}

impl KernelDrops {
    /// `None` when the socket is not found in the table (no /proc).
    pub(super) fn of(socket: &UdpSocket) -> Option<KernelDrops> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
            .ok()?
            .ino();
        let table = match socket.local_addr().ok()? {
            SocketAddr::V4(_) => "/proc/net/udp",
            SocketAddr::V6(_) => "/proc/net/udp6",
        };
        let seen = drops_of(table, inode)?;
        Some(KernelDrops {
            inode,
            table,
            seen,
            total: 0,
        })
    }

    /// Drops since the last call.
    pub(super) fn poll(&mut self) -> u64 {
        let Some(now) = drops_of(self.table, self.inode) else {
            return 0;
        };
        let new = now.saturating_sub(self.seen);
        self.seen = now;
        self.total += new;
        new
    }

    pub(super) fn total(&self) -> u64 {
        self.total
    }
}

/// The `drops` column (the last) of the socket with `inode` (the tenth column).
fn drops_of(table: &str, inode: u64) -> Option<u64> {
    let text = std::fs::read_to_string(table).ok()?;
    parse_drops(&text, inode)
}

fn parse_drops(text: &str, inode: u64) -> Option<u64> {
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(9)?.parse::<u64>().ok()? == inode)
            .then(|| f.last()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drops_column_is_read_by_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            1: 0100007F:0202 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
            2: 0100007F:0203 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 0\n";
        assert_eq!(parse_drops(table, 4242), Some(17));
        assert_eq!(parse_drops(table, 4343), Some(0));
        assert_eq!(parse_drops(table, 1), None);
    }

    #[tokio::test]
    async fn four_sockets_share_one_port_and_each_is_found_in_proc() {
        let socks = bind("127.0.0.1:0".parse().unwrap(), 4, Some(65536)).unwrap();
        let port = socks[0].local_addr().unwrap().port();
        assert!(socks.iter().all(|s| s.local_addr().unwrap().port() == port));
        for s in &socks {
            let mut d = KernelDrops::of(s).expect("listed in /proc/net/udp");
            assert_eq!(d.poll(), 0);
        }
    }
}
