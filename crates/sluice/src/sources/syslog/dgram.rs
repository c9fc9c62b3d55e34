//! Datagram modes: `udp` and `unix_dgram` (the `/dev/log` socket of glibc's
//! `syslog(3)` and of `logger`). One datagram is one message.
//!
//! The loop awaits one datagram, then takes every datagram already queued (at most
//! [`MAX_BATCH`]) without waiting, and sends them as one batch. Datagrams are received
//! into one shared buffer and become slices of it. A datagram longer than
//! `max_message_bytes` is cut by the kernel to the room offered (one byte more than
//! the limit, to notice) and counted as truncated.
//!
//! Loss is made visible: UDP datagrams the kernel dropped for a full receive buffer
//! (`RcvbufErrors` in `/proc/net/snmp`, machine-wide) while the source ran are
//! logged when it stops.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::{UdpSocket, UnixDatagram};
use tracing::{info, warn};

use super::{Shared, SocketFile, SyslogMode, SyslogSourceConfig};
use crate::ack::AckToken;
use crate::event::{EventBatch, Origin};
use crate::metrics::Counters;
use crate::topology::{ComponentError, Task};

/// Most datagrams in one batch.
pub(crate) const MAX_BATCH: usize = 1024;

enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram, SocketFile),
}

pub(super) async fn build(
    config: &SyslogSourceConfig,
    shared: Arc<Shared>,
) -> Result<Task, ComponentError> {
    let socket = match (config.mode, &config.address, &config.path) {
        (SyslogMode::Udp, Some(a), _) => {
            let addr: std::net::SocketAddr = a
                .parse()
                .map_err(|_| ComponentError::Other(format!("invalid address {a}")))?;
            let std = std::net::UdpSocket::bind(addr)
                .map_err(|e| ComponentError::io(format!("binding {addr}"), e))?;
            if let Some(bytes) = config.receive_buffer_bytes {
                set_receive_buffer(&std, bytes)?;
            }
            std.set_nonblocking(true)
                .map_err(|e| ComponentError::io("setting non-blocking", e))?;
            Socket::Udp(
                UdpSocket::from_std(std)
                    .map_err(|e| ComponentError::io(format!("registering {addr}"), e))?,
            )
        }
        (SyslogMode::UnixDgram, _, Some(p)) => {
            super::clear_socket_path(p)?;
            let s = UnixDatagram::bind(p)
                .map_err(|e| ComponentError::io(format!("binding {}", p.display()), e))?;
            let file = SocketFile(p.clone());
            if let Some(bytes) = config.receive_buffer_bytes {
                set_receive_buffer(&s, bytes)?;
            }
            super::open_socket_mode(p)?;
            Socket::Unix(s, file)
        }
        _ => {
            return Err(ComponentError::Other(
                "datagram mode without address/path".into(),
            ));
        }
    };
    Ok(Box::pin(run(shared, socket)))
}

async fn run(shared: Arc<Shared>, socket: Socket) -> Result<(), ComponentError> {
    match &socket {
        Socket::Udp(s) => {
            let local = s
                .local_addr()
                .map_err(|e| ComponentError::io("reading the bound address", e))?;
            info!(address = %local, "Syslog source listening (udp).");
        }
        Socket::Unix(_, f) => info!(path = %f.0.display(), "Syslog source listening (unix_dgram)."),
    }
    let kernel_drops_before = udp_rcvbuf_errors();
    let cx = &shared.cx;
    let room = shared.max_message_bytes + 1;
    let mut buf = BytesMut::new();
    // The last peer's origin, reused while datagrams keep coming from it.
    let mut last: Option<(std::net::SocketAddr, Arc<Origin>)> = None;
    loop {
        buf.reserve(room);
        let first = tokio::select! {
            biased;
            _ = cx.shutdown.cancelled() => break,
            r = recv(&socket, &mut buf, true) => r,
        };
        let mut batch = shared.mapper.batch(8);
        let mut next = first;
        let mut bytes = 0;
        let mut truncated = 0;
        loop {
            let peer = match next {
                Ok(Some((n, peer))) => {
                    bytes += n;
                    if n > shared.max_message_bytes {
                        truncated += 1;
                    }
                    peer
                }
                Ok(None) => break,
                Err(e) => {
                    Counters::add(&cx.counters.errors, 1);
                    if shared.log_limit.allow().is_some() {
                        warn!(error = %e, "Receiving a datagram failed.");
                    }
                    break;
                }
            };
            let len = buf.len().min(shared.max_message_bytes);
            let frame = buf.split_to(buf.len()).freeze().slice(..len);
            let origin = peer.map(|p| match &last {
                Some((a, o)) if *a == p => o.clone(),
                _ => {
                    let o = Arc::new(Origin {
                        host: Some(p.ip().to_string()),
                        ..Origin::default()
                    });
                    last = Some((p, o.clone()));
                    o
                }
            });
            if !frame.is_empty() {
                shared.mapper.push(&mut batch, frame, origin.as_ref());
            }
            if batch.events.len() >= MAX_BATCH {
                break;
            }
            buf.reserve(room);
            next = recv(&socket, &mut buf, false).await;
        }
        Counters::add(&cx.counters.bytes_in, bytes);
        Counters::add(&cx.counters.truncated, truncated);
        let events = batch.take();
        if !events.is_empty() {
            Counters::add(&cx.counters.events_in, events.len());
            Counters::add(&cx.counters.events_out, events.len());
            cx.out.send(EventBatch::new(events, AckToken::none())).await;
        }
    }
    let kernel_drops = udp_rcvbuf_errors().saturating_sub(kernel_drops_before);
    info!(
        kernel_udp_receive_buffer_drops = kernel_drops,
        "Syslog source stopped."
    );
    if kernel_drops > 0 && matches!(socket, Socket::Udp(_)) {
        warn!(
            drops = kernel_drops,
            "The kernel dropped UDP datagrams for full receive buffers while the source ran (machine-wide count); raise receive_buffer_bytes."
        );
    }
    Ok(())
}

/// SO_RCVBUF (the kernel doubles it for bookkeeping and caps it at
/// `net.core.rmem_max`).
fn set_receive_buffer(fd: &impl std::os::fd::AsRawFd, bytes: usize) -> Result<(), ComponentError> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `value` (a c_int, whose size is passed) from a valid
    // pointer during the call, on a descriptor we own.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(ComponentError::io(
            "setting SO_RCVBUF",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// One datagram appended to `buf` (at most its spare capacity). With `wait` false,
/// `Ok(None)` when none is queued. The peer is `None` for Unix sockets.
async fn recv(
    socket: &Socket,
    buf: &mut BytesMut,
    wait: bool,
) -> std::io::Result<Option<(usize, Option<std::net::SocketAddr>)>> {
    let r = match (socket, wait) {
        (Socket::Udp(s), true) => s.recv_buf_from(buf).await.map(|(n, p)| (n, Some(p))),
        (Socket::Udp(s), false) => s.try_recv_buf_from(buf).map(|(n, p)| (n, Some(p))),
        (Socket::Unix(s, _), true) => s.recv_buf_from(buf).await.map(|(n, _)| (n, None)),
        (Socket::Unix(s, _), false) => s.try_recv_buf_from(buf).map(|(n, _)| (n, None)),
    };
    match r {
        Ok(x) => Ok(Some(x)),
        Err(e) if !wait && e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// The machine's `Udp: RcvbufErrors` from `/proc/net/snmp` (0 when unreadable).
fn udp_rcvbuf_errors() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}
