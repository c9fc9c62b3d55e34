//! Stream modes: `tcp` (optionally TLS) and `unix_stream`. An accept loop bounded by
//! `max_connections`, and per connection a read loop: read, cut frames, send one
//! batch per read, and await the send (backpressure reaches the sender as a full
//! TCP window).
//!
//! A connection's buffer holds at most `max_message_bytes` plus a frame header plus
//! one read ([`READ_SIZE`]): the framer emits an over-long frame truncated as soon as
//! `max_message_bytes` of it arrived and discards the rest as it comes. A
//! connection that completes no message within `idle_timeout_secs` is closed, which
//! also ends slowloris senders and frames that never end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use proto::syslog::framing::{Framer, Framing};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Shared, SocketFile, SyslogFraming, SyslogMode, SyslogSourceConfig};
use crate::ack::AckToken;
use crate::event::{EventBatch, Origin};
use crate::metrics::Counters;
use crate::topology::{ComponentError, Task};

/// Bytes asked of one read.
const READ_SIZE: usize = 64 << 10;
/// TLS handshakes must finish within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pending connections the kernel queues before `accept`.
const LISTEN_BACKLOG: u32 = 1024;

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

struct Conf {
    framing: Framing,
    idle_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
}

pub(super) async fn build(
    config: &SyslogSourceConfig,
    shared: Arc<Shared>,
) -> Result<Task, ComponentError> {
    let tls = match &config.tls {
        Some(t) => Some(crate::tls::acceptor(t).map_err(ComponentError::Other)?),
        None => None,
    };
    let listener = match (config.mode, &config.address, &config.path) {
        (SyslogMode::Tcp, Some(a), _) => {
            let addr: SocketAddr = a
                .parse()
                .map_err(|_| ComponentError::Other(format!("invalid address {a}")))?;
            // A reload replacing a source on this address takes over its
            // listener (see crate::topology::ListenerPool); port 0 is not pooled.
            let bind = || -> std::io::Result<TcpListener> {
                use crate::topology::{Listen, ListenerPool};
                use std::os::fd::AsFd;
                let pooled = addr.port() != 0;
                if pooled
                    && let Some(fd) = ListenerPool::take_fds(Listen::SyslogTcp, addr)?
                        .and_then(|fds| fds.into_iter().next())
                {
                    return TcpListener::from_std(std::net::TcpListener::from(fd));
                }
                let s = if addr.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                s.set_reuseaddr(true)?;
                s.bind(addr)?;
                let listener = s.listen(LISTEN_BACKLOG)?;
                if pooled {
                    ListenerPool::keep_fds(Listen::SyslogTcp, addr, &[listener.as_fd()])?;
                }
                Ok(listener)
            };
            Listener::Tcp(bind().map_err(|e| ComponentError::io(format!("binding {addr}"), e))?)
        }
        (SyslogMode::UnixStream, _, Some(p)) => {
            super::clear_socket_path(p)?;
            let l = UnixListener::bind(p)
                .map_err(|e| ComponentError::io(format!("binding {}", p.display()), e))?;
            let file = SocketFile(p.clone());
            super::open_socket_mode(p)?;
            Listener::Unix(l, file)
        }
        _ => {
            return Err(ComponentError::Other(
                "stream mode without address/path".into(),
            ));
        }
    };
    let conf = Conf {
        framing: match config.framing {
            SyslogFraming::Auto => Framing::Auto,
            SyslogFraming::OctetCounting => Framing::OctetCounting,
            SyslogFraming::Newline => Framing::Newline,
        },
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        tls,
        max_connections: config.max_connections,
    };
    Ok(Box::pin(run(shared, listener, Arc::new(conf))))
}

async fn run(
    shared: Arc<Shared>,
    listener: Listener,
    conf: Arc<Conf>,
) -> Result<(), ComponentError> {
    match &listener {
        Listener::Tcp(l) => {
            let local = l
                .local_addr()
                .map_err(|e| ComponentError::io("reading the bound address", e))?;
            info!(address = %local, tls = conf.tls.is_some(), "Syslog source listening (tcp).");
        }
        Listener::Unix(_, f) => {
            info!(path = %f.0.display(), "Syslog source listening (unix_stream).");
        }
    }
    let stop = shared.cx.shutdown.clone();
    let slots = Arc::new(Semaphore::new(conf.max_connections));
    let conns = TaskTracker::new();
    let mut accepted = 0u64;
    let mut refused = 0u64;
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = accept(&listener) => r,
        };
        let (stream, peer) = match next {
            Ok(x) => x,
            Err(e) => {
                if shared.log_limit.allow().is_some() {
                    warn!(error = %e, "Accepting a connection failed.");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if let Some(suppressed) = shared.log_limit.allow() {
                warn!(
                    max_connections = conf.max_connections,
                    suppressed, "Connection refused: max_connections reached."
                );
            }
            continue;
        };
        accepted += 1;
        let span = match peer {
            Some(p) => info_span!("conn", peer = %p),
            None => info_span!("conn", peer = "unix"),
        };
        conns.spawn(handle(shared.clone(), conf.clone(), stream, peer, permit).instrument(span));
    }
    drop(listener);
    conns.close();
    conns.wait().await;
    info!(connections = accepted, refused, "Syslog source stopped.");
    Ok(())
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<(Stream, Option<SocketAddr>)> {
    match l {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Stream::Tcp(s), Some(peer)))
        }
        Listener::Unix(l, _) => Ok((Stream::Unix(l.accept().await?.0), None)),
    }
}

async fn handle(
    shared: Arc<Shared>,
    conf: Arc<Conf>,
    stream: Stream,
    peer: Option<SocketAddr>,
    _permit: OwnedSemaphorePermit,
) {
    let origin = peer.map(|p| {
        Arc::new(Origin {
            host: Some(p.ip().to_string()),
            ..Origin::default()
        })
    });
    let result = match (stream, &conf.tls) {
        (Stream::Tcp(s), Some(acceptor)) => {
            let stop = shared.cx.shutdown.clone();
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(s)) => r,
            };
            match accepted {
                Ok(Ok(tls)) => read_loop(&shared, &conf, tls, origin.as_ref()).await,
                Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                Err(_) => Err("TLS handshake timed out".to_owned()),
            }
        }
        (Stream::Tcp(s), None) => read_loop(&shared, &conf, s, origin.as_ref()).await,
        (Stream::Unix(s), _) => read_loop(&shared, &conf, s, origin.as_ref()).await,
    };
    if let Err(reason) = result {
        Counters::add(&shared.cx.counters.errors, 1);
        if let Some(suppressed) = shared.log_limit.allow() {
            warn!(reason, suppressed, "Syslog connection closed.");
        }
    }
}

/// Reads until end of stream, stop or idle timeout (`Ok`), or bad framing (`Err`).
async fn read_loop<S: AsyncRead + Unpin>(
    shared: &Shared,
    conf: &Conf,
    mut stream: S,
    origin: Option<&Arc<Origin>>,
) -> Result<(), String> {
    let cx = &shared.cx;
    let mut framer = Framer::new(conf.framing, shared.max_message_bytes);
    let mut buf = BytesMut::new();
    let mut deadline = Instant::now() + conf.idle_timeout;
    loop {
        buf.reserve(READ_SIZE);
        let n = tokio::select! {
            biased;
            _ = cx.shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(deadline) => {
                debug!(pending = buf.len(), "Idle connection closed.");
                return Ok(());
            }
            r = stream.read_buf(&mut buf) => match r {
                Ok(n) => n,
                Err(e) => return Err(format!("read failed: {e}")),
            },
        };
        Counters::add(&cx.counters.bytes_in, n);
        let truncated_before = framer.truncated();
        let mut batch = shared.mapper.batch(16);
        let mut failure = None;
        loop {
            let next = if n == 0 {
                framer.decode_eof(&mut buf)
            } else {
                framer.decode(&mut buf)
            };
            match next {
                Ok(Some(frame)) => shared.mapper.push(&mut batch, frame.bytes, origin),
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let truncated = framer.truncated() - truncated_before;
        Counters::add(&cx.counters.truncated, truncated as usize);
        let events = batch.take();
        if !events.is_empty() {
            deadline = Instant::now() + conf.idle_timeout;
            Counters::add(&cx.counters.events_in, events.len());
            Counters::add(&cx.counters.events_out, events.len());
            cx.out.send(EventBatch::new(events, AckToken::none())).await;
        }
        if let Some(reason) = failure {
            return Err(reason);
        }
        if n == 0 {
            return Ok(());
        }
    }
}
