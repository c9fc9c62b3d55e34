//! Datagram modes: `udp` and `unix_dgram` (the `/dev/log` socket of glibc's
//! `syslog(3)` and of `logger`). One datagram is one message.
//!
//! The loop awaits one datagram, then takes every datagram already queued (at most
//! [`MAX_BATCH`]) without waiting, and sends them as one batch. Datagrams are received
//! into one shared buffer and become slices of it. A datagram longer than
//! `max_message_bytes` is cut by the kernel to the room offered (one byte more than
//! the limit, to notice) and counted as truncated.
//!
//! With `udp_threads = N`, N UDP sockets share the address (`SO_REUSEPORT`: the
//! kernel spreads senders over them by address hash), each with its own receive
//! loop on the runtime's worker threads.
//!
//! Loss is made visible: the datagrams the kernel dropped because a socket's
//! receive buffer was full (the `drops` column of `/proc/net/udp`, per socket)
//! are added to the source's discarded count about once a second and at the
//! stop, and logged with a hint to raise `receive_buffer_bytes`.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{UdpSocket, UnixDatagram};
use tracing::{info, warn};

use super::udp::KernelDrops;
use super::{Shared, SocketFile, SyslogMode, SyslogSourceConfig};
use crate::ack::AckToken;
use crate::event::{EventBatch, Origin};
use crate::metrics::Counters;
use crate::topology::{ComponentError, Task};

/// Most datagrams in one batch.
pub(crate) const MAX_BATCH: usize = 1024;

enum Socket {
    /// With its kernel drop counter (`None` when /proc/net/udp does not list it).
    Udp(UdpSocket, Option<KernelDrops>),
    Unix(UnixDatagram, SocketFile),
}

pub(super) async fn build(
    config: &SyslogSourceConfig,
    shared: Arc<Shared>,
) -> Result<Task, ComponentError> {
    let sockets = match (config.mode, &config.address, &config.path) {
        (SyslogMode::Udp, Some(a), _) => {
            let addr: std::net::SocketAddr = a
                .parse()
                .map_err(|_| ComponentError::Other(format!("invalid address {a}")))?;
            super::udp::bind_pooled(addr, config.udp_threads, config.receive_buffer_bytes)?
                .into_iter()
                .map(|s| {
                    let drops = KernelDrops::of(&s);
                    Socket::Udp(s, drops)
                })
                .collect()
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
            vec![Socket::Unix(s, file)]
        }
        _ => {
            return Err(ComponentError::Other(
                "datagram mode without address/path".into(),
            ));
        }
    };
    Ok(Box::pin(run_all(shared, sockets)))
}

/// One receive loop per socket: the first in this task, the others spawned on
/// the runtime (in parallel on its worker threads); all end at the stop.
async fn run_all(shared: Arc<Shared>, mut sockets: Vec<Socket>) -> Result<(), ComponentError> {
    let first = sockets.remove(0);
    let mut others = tokio::task::JoinSet::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        others.spawn(run(shared.clone(), socket, i + 1));
    }
    let mut result = run(shared, first, 0).await;
    while let Some(r) = others.join_next().await {
        let r = r.map_err(|e| ComponentError::Other(format!("a UDP receive loop failed: {e}")))?;
        if result.is_ok() {
            result = r;
        }
    }
    result
}

async fn run(shared: Arc<Shared>, mut socket: Socket, index: usize) -> Result<(), ComponentError> {
    match &socket {
        Socket::Udp(s, _) => {
            let local = s
                .local_addr()
                .map_err(|e| ComponentError::io("reading the bound address", e))?;
            if index == 0 {
                info!(address = %local, "Syslog source listening (udp).");
            }
        }
        Socket::Unix(_, f) => info!(path = %f.0.display(), "Syslog source listening (unix_dgram)."),
    }
    let cx = &shared.cx;
    let room = shared.max_message_bytes + 1;
    let mut buf = BytesMut::new();
    // The last peer's origin, reused while datagrams keep coming from it.
    let mut last: Option<(std::net::SocketAddr, Arc<Origin>)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        buf.reserve(room);
        let first = tokio::select! {
            biased;
            _ = cx.shutdown.cancelled() => break,
            _ = tick.tick() => {
                count_kernel_drops(&mut socket, &shared);
                continue;
            }
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
            // A full pipeline holds the loop here while the kernel drops what
            // overflows the socket: keep counting those drops meanwhile.
            let send = cx.out.send(EventBatch::new(events, AckToken::none()));
            tokio::pin!(send);
            loop {
                tokio::select! {
                    _ = &mut send => break,
                    _ = tick.tick() => count_kernel_drops(&mut socket, &shared),
                }
            }
        }
    }
    count_kernel_drops(&mut socket, &shared);
    if let Socket::Udp(_, Some(d)) = &socket {
        info!(
            socket = index,
            kernel_receive_buffer_drops = d.total(),
            "Syslog receive loop stopped."
        );
    }
    Ok(())
}

/// Adds what the kernel dropped on a UDP socket since the last look to the
/// source's discarded events, with a (rate-limited) hint.
fn count_kernel_drops(socket: &mut Socket, shared: &Shared) {
    let Socket::Udp(_, Some(drops)) = socket else {
        return;
    };
    let new = drops.poll();
    if new > 0 {
        Counters::add(&shared.cx.counters.dropped, new as usize);
        if let Some(suppressed) = shared.log_limit.allow() {
            warn!(
                drops = new,
                total = drops.total(),
                suppressed,
                "The kernel dropped UDP datagrams: the socket's receive buffer was full; raise receive_buffer_bytes or udp_threads."
            );
        }
    }
}

/// SO_RCVBUF (the kernel doubles it for bookkeeping and caps it at
/// `net.core.rmem_max`).
pub(super) fn set_receive_buffer(
    fd: &impl std::os::fd::AsRawFd,
    bytes: usize,
) -> Result<(), ComponentError> {
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
        (Socket::Udp(s, _), true) => s.recv_buf_from(buf).await.map(|(n, p)| (n, Some(p))),
        (Socket::Udp(s, _), false) => s.try_recv_buf_from(buf).map(|(n, p)| (n, Some(p))),
        (Socket::Unix(s, _), true) => s.recv_buf_from(buf).await.map(|(n, _)| (n, None)),
        (Socket::Unix(s, _), false) => s.try_recv_buf_from(buf).map(|(n, _)| (n, None)),
    };
    match r {
        Ok(x) => Ok(Some(x)),
        Err(e) if !wait && e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}
