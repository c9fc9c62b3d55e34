//! The forward sink's loop: encode batches into requests, keep a window of them on
//! one connection, match acks in order, and resend everything unacked (same bytes,
//! same chunk id) after a timeout, a mismatch or a lost connection.
//!
//! One task owns the connection; it never reads and writes at once (requests are
//! written whole, then acks are read), which is safe because a forward server
//! never stops reading for lack of our reading: acks are a few dozen bytes.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proto::forward::handshake::{self, Credentials, Ping};
use proto::forward::{Compression, EventTime, PackedForwardBuilder, Response, ResponseDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{ForwardCompression, ForwardSinkConfig, split_host_port};
use crate::ack::{AckStatus, AckToken};
use crate::event::{Event, EventBatch};
use crate::metrics::Counters;
use crate::tls::{self, ClientTls};
use crate::topology::{ComponentError, SinkContext};

/// Batches taken from the buffer per encoding round at most.
const GROUP_MAX: usize = 256;
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// TCP keepalive probes start after this much silence.
const TCP_KEEPALIVE_IDLE_SECS: libc::c_int = 60;

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One request, kept as encoded until acked so a resend is byte-identical.
struct Chunk {
    /// Chunk id as sent (None without `require_ack`).
    id: Option<Bytes>,
    data: Bytes,
    events: usize,
    /// Clones of the tokens of every batch with events in this request.
    tokens: Vec<AckToken>,
    sent_at: Instant,
    sends: u32,
}

impl Chunk {
    fn resolve(self, counters: &Counters) {
        Counters::add(&counters.events_out, self.events);
        for t in self.tokens {
            t.resolve(AckStatus::Delivered);
        }
    }
}

struct Conn {
    stream: Box<dyn Io>,
    server: String,
    buf: BytesMut,
    decoder: ResponseDecoder,
    last_used: Instant,
}

pub(super) struct ForwardSink {
    config: ForwardSinkConfig,
    tls: Option<tokio_rustls::TlsConnector>,
    hostname: Vec<u8>,
    credentials: Option<Credentials>,
    compression: Compression,
    connect_timeout: Duration,
    ack_timeout: Duration,
    keepalive_timeout: Duration,
    window: usize,
}

impl ForwardSink {
    pub(super) fn new(config: ForwardSinkConfig) -> Result<Self, String> {
        let tls = match &config.tls {
            Some(t) => Some(tls::connector(&ClientTls {
                ca_file: t.ca_file.as_deref(),
                cert_file: t.cert_file.as_deref(),
                key_file: t.key_file.as_deref(),
                verify_hostname: t.verify_hostname,
            })?),
            None => None,
        };
        let credentials =
            (config.username.is_some() || config.password.is_some()).then(|| Credentials {
                username: config.username.clone().unwrap_or_default().into_bytes(),
                password: config
                    .password
                    .as_ref()
                    .map(|p| p.0.clone())
                    .unwrap_or_default()
                    .into_bytes(),
            });
        Ok(ForwardSink {
            hostname: config
                .self_hostname
                .clone()
                .unwrap_or_else(crate::host::hostname)
                .into_bytes(),
            credentials,
            compression: match config.compression {
                ForwardCompression::None => Compression::None,
                ForwardCompression::Gzip => Compression::Gzip,
            },
            connect_timeout: Duration::from_secs(config.connect_timeout_secs),
            ack_timeout: Duration::from_secs(config.ack_timeout_secs),
            keepalive_timeout: Duration::from_secs(config.keepalive_timeout_secs),
            window: if config.require_ack {
                config.max_inflight_chunks
            } else {
                usize::MAX
            },
            tls,
            config,
        })
    }

    pub(super) async fn run(self, mut cx: SinkContext) -> Result<(), ComponentError> {
        let counters = cx.counters.clone();
        // Built, not sent yet (resends first, in their original order).
        let mut queue: VecDeque<Chunk> = VecDeque::new();
        // Sent, awaiting their ack, oldest first.
        let mut inflight: VecDeque<Chunk> = VecDeque::new();
        let mut conn: Option<Conn> = None;
        let mut input_open = true;
        let mut backoff = BACKOFF_START;
        let mut next_connect = Instant::now();
        let mut resent: u64 = 0;
        loop {
            if !input_open && queue.is_empty() && inflight.is_empty() {
                if let Some(mut c) = conn.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), c.stream.shutdown()).await;
                }
                info!(resent_chunks = resent, "Forward sink stopped.");
                return Ok(());
            }
            if conn.is_none() && !queue.is_empty() && Instant::now() >= next_connect {
                let attempt = tokio::select! {
                    biased;
                    _ = cx.abort.cancelled() => return Ok(()),
                    c = self.connect_any() => c,
                };
                match attempt {
                    Some(c) => {
                        backoff = BACKOFF_START;
                        conn = Some(c);
                    }
                    None => {
                        next_connect = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            if let Some(c) = conn.as_mut() {
                if let Err(e) = self.send(c, &mut queue, &mut inflight, &counters).await {
                    warn!(server = %c.server, error = %e, unacked = inflight.len() + queue.len(),
                        "Sending to forward server failed; reconnecting.");
                    resent += requeue(&mut inflight, &mut queue);
                    conn = None;
                    continue;
                }
                if !self.config.keepalive && queue.is_empty() && inflight.is_empty() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), c.stream.shutdown()).await;
                    conn = None;
                }
            }

            let want_input = input_open && queue.is_empty() && inflight.len() < self.window;
            let ack_deadline = inflight.front().map(|c| c.sent_at + self.ack_timeout);
            let idle_deadline = conn
                .as_ref()
                .filter(|_| inflight.is_empty() && queue.is_empty())
                .map(|c| c.last_used + self.keepalive_timeout);
            let reconnect_at = (conn.is_none() && !queue.is_empty()).then_some(next_connect);
            tokio::select! {
                biased;
                _ = cx.abort.cancelled() => {
                    let left: usize = queue.iter().chain(inflight.iter()).map(|c| c.events).sum();
                    if left > 0 {
                        Counters::add(&counters.errors, left);
                        warn!(events = left, "Shutdown deadline: unacknowledged forward requests abandoned.");
                    }
                    return Ok(());
                }
                r = read_some(&mut conn) => {
                    let c = conn.as_mut().expect("read_some only completes with a connection");
                    match r {
                        Ok(0) => {
                            if !inflight.is_empty() {
                                warn!(server = %c.server, unacked = inflight.len(), "Forward server closed the connection; resending.");
                            } else {
                                debug!(server = %c.server, "Forward server closed the connection.");
                            }
                            resent += requeue(&mut inflight, &mut queue);
                            conn = None;
                        }
                        Ok(_) => {
                            if let Err(e) = take_acks(c, &mut inflight, &counters) {
                                warn!(server = %c.server, error = %e, unacked = inflight.len(), "Forward protocol error; reconnecting and resending.");
                                resent += requeue(&mut inflight, &mut queue);
                                conn = None;
                            }
                        }
                        Err(e) => {
                            warn!(server = %c.server, error = %e, unacked = inflight.len(), "Reading from forward server failed; resending.");
                            resent += requeue(&mut inflight, &mut queue);
                            conn = None;
                        }
                    }
                }
                b = cx.input.recv(), if want_input => match b {
                    Some(first) => {
                        // One chunk's worth per turn: what waits for the window
                        // stays in the buffer, where max_bytes counts it.
                        let mut bytes = first.byte_size();
                        let mut group = vec![first];
                        while group.len() < GROUP_MAX && bytes < self.config.max_chunk_bytes {
                            match cx.input.try_recv() {
                                Some(b) => {
                                    bytes += b.byte_size();
                                    group.push(b);
                                }
                                None => break,
                            }
                        }
                        self.encode(group, &mut queue);
                    }
                    None => input_open = false,
                },
                _ = sleep_until_opt(ack_deadline) => {
                    let server = conn.as_ref().map(|c| c.server.clone()).unwrap_or_default();
                    warn!(server = %server, timeout_secs = self.ack_timeout.as_secs(), unacked = inflight.len(),
                        "No ack from forward server in time; reconnecting and resending.");
                    resent += requeue(&mut inflight, &mut queue);
                    conn = None;
                }
                _ = sleep_until_opt(idle_deadline) => {
                    if let Some(mut c) = conn.take() {
                        debug!(server = %c.server, "Idle forward connection closed.");
                        let _ = tokio::time::timeout(Duration::from_secs(1), c.stream.shutdown()).await;
                    }
                }
                _ = sleep_until_opt(reconnect_at) => {}
            }
        }
    }

    /// Write queued requests while the window has room.
    async fn send(
        &self,
        c: &mut Conn,
        queue: &mut VecDeque<Chunk>,
        inflight: &mut VecDeque<Chunk>,
        counters: &Counters,
    ) -> std::io::Result<()> {
        while inflight.len() < self.window {
            let Some(mut chunk) = queue.pop_front() else {
                break;
            };
            let written =
                tokio::time::timeout(self.ack_timeout, c.stream.write_all(&chunk.data)).await;
            let result = match written {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "write timed out",
                )),
            };
            if let Err(e) = result {
                queue.push_front(chunk);
                return Err(e);
            }
            c.last_used = Instant::now();
            chunk.sends += 1;
            if chunk.sends > 1 {
                debug!(server = %c.server, sends = chunk.sends, "Request sent again.");
            }
            if self.config.require_ack {
                chunk.sent_at = Instant::now();
                inflight.push_back(chunk);
            } else {
                chunk.resolve(counters);
            }
        }
        if self.config.require_ack {
            Ok(())
        } else {
            c.stream.flush().await
        }
    }

    /// Turn a group of batches into requests, one run per tag, split at
    /// `max_chunk_bytes`. Each request holds a clone of every batch token of the
    /// group; the originals are resolved here, so a batch is delivered once all the
    /// requests of its group are acked.
    fn encode(&self, group: Vec<EventBatch>, queue: &mut VecDeque<Chunk>) {
        let tokens: Vec<AckToken> = group
            .iter()
            .filter(|b| b.ack.is_tracked())
            .map(|b| b.ack.clone())
            .collect();
        let mut builders: Vec<(Arc<str>, PackedForwardBuilder)> = Vec::new();
        for batch in &group {
            for ev in batch.events.iter() {
                let i = match builders
                    .iter()
                    .position(|(t, _)| Arc::ptr_eq(t, &ev.tag) || **t == *ev.tag)
                {
                    Some(i) => i,
                    None => {
                        let tag = Bytes::copy_from_slice(ev.tag.as_bytes());
                        builders.push((ev.tag.clone(), PackedForwardBuilder::new(tag)));
                        builders.len() - 1
                    }
                };
                let b = &mut builders[i].1;
                super::record::push(b, ev);
                if b.payload_len() >= self.config.max_chunk_bytes {
                    let tag = Bytes::copy_from_slice(ev.tag.as_bytes());
                    let full = std::mem::replace(b, PackedForwardBuilder::new(tag));
                    queue.push_back(self.chunk(full, &tokens));
                }
            }
        }
        for (_, b) in builders {
            if !b.is_empty() {
                queue.push_back(self.chunk(b, &tokens));
            }
        }
        // The requests hold their own clones now; these copies are done.
        for t in tokens {
            t.resolve(AckStatus::Delivered);
        }
        for b in group {
            b.ack.resolve(AckStatus::Delivered);
        }
    }

    fn chunk(&self, b: PackedForwardBuilder, tokens: &[AckToken]) -> Chunk {
        let events = b.len() as usize;
        let id = self
            .config
            .require_ack
            .then(|| Bytes::from(proto::forward::new_chunk_id()));
        Chunk {
            data: b.finish(id.as_deref(), self.compression),
            id,
            events,
            tokens: tokens.to_vec(),
            sent_at: Instant::now(),
            sends: 0,
        }
    }

    /// Try every server in order; `None` when none could be used (each failure logged).
    async fn connect_any(&self) -> Option<Conn> {
        for server in &self.config.servers {
            match tokio::time::timeout(self.connect_timeout, self.connect(server)).await {
                Ok(Ok(c)) => {
                    info!(server = %server, tls = self.tls.is_some(), "Connected to forward server.");
                    return Some(c);
                }
                Ok(Err(e)) => warn!(server = %server, error = %e, "Cannot use forward server."),
                Err(_) => warn!(server = %server, timeout_secs = self.connect_timeout.as_secs(),
                    "Cannot use forward server: connect, TLS or handshake timed out."),
            }
        }
        None
    }

    async fn connect(&self, server: &str) -> Result<Conn, String> {
        let (host, port) =
            split_host_port(server).ok_or_else(|| format!("`{server}` is not host:port"))?;
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| crate::error_text(&e))?;
        let _ = tcp.set_nodelay(true);
        set_tcp_keepalive(&tcp);
        let stream: Box<dyn Io> = match &self.tls {
            Some(connector) => {
                let name = self
                    .config
                    .tls
                    .as_ref()
                    .and_then(|t| t.server_name.as_deref())
                    .unwrap_or(host);
                let name = tls::server_name(name)?;
                let s = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Box::new(s)
            }
            None => Box::new(tcp),
        };
        let mut c = Conn {
            stream,
            server: server.to_owned(),
            buf: BytesMut::with_capacity(4096),
            decoder: ResponseDecoder::new(),
            last_used: Instant::now(),
        };
        if let Some(key) = &self.config.shared_key {
            let key = key.0.as_bytes();
            let helo = match next_response(&mut c).await? {
                Response::Helo(h) => h,
                _ => return Err("expected HELO from the server".into()),
            };
            let ping = Ping::new(&helo, &self.hostname, key, self.credentials.as_ref());
            c.stream
                .write_all(&ping.encode())
                .await
                .map_err(|e| crate::error_text(&e))?;
            let pong = match next_response(&mut c).await? {
                Response::Pong(p) => p,
                _ => return Err("expected PONG from the server".into()),
            };
            handshake::verify_pong(&pong, &ping, &helo, key)
                .map_err(|e| format!("handshake: {e}"))?;
        }
        Ok(c)
    }
}

/// Move every unacked request back to the front of the queue, keeping their order.
fn requeue(inflight: &mut VecDeque<Chunk>, queue: &mut VecDeque<Chunk>) -> u64 {
    let n = inflight.len() as u64;
    while let Some(c) = inflight.pop_back() {
        queue.push_front(c);
    }
    n
}

/// Read whatever the server sent; never completes without a connection.
async fn read_some(conn: &mut Option<Conn>) -> std::io::Result<usize> {
    match conn {
        Some(c) => {
            c.buf.reserve(1024);
            c.stream.read_buf(&mut c.buf).await
        }
        None => std::future::pending().await,
    }
}

/// Match every complete response against the oldest requests in flight.
fn take_acks(
    c: &mut Conn,
    inflight: &mut VecDeque<Chunk>,
    counters: &Counters,
) -> Result<(), String> {
    loop {
        match c.decoder.decode(&mut c.buf) {
            Ok(None) => return Ok(()),
            Ok(Some(Response::Ack(id))) => {
                let Some(front) = inflight.front() else {
                    return Err("ack without a request in flight".into());
                };
                if front.id.as_deref() != Some(&id[..]) {
                    return Err(format!(
                        "ack for {} while {} was expected",
                        id.escape_ascii(),
                        front.id.as_deref().unwrap_or_default().escape_ascii()
                    ));
                }
                c.last_used = Instant::now();
                if let Some(chunk) = inflight.pop_front() {
                    chunk.resolve(counters);
                }
            }
            Ok(Some(Response::Helo(_))) => {
                return Err("the server asks for a shared-key handshake: set shared_key".into());
            }
            Ok(Some(Response::Pong(_))) => return Err("unexpected PONG".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn next_response(c: &mut Conn) -> Result<Response, String> {
    loop {
        match c.decoder.decode(&mut c.buf) {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        c.buf.reserve(1024);
        match c.stream.read_buf(&mut c.buf).await {
            Ok(0) => return Err("the server closed the connection during the handshake".into()),
            Ok(_) => {}
            Err(e) => return Err(crate::error_text(&e)),
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(super) fn event_time(ev: &Event) -> EventTime {
    EventTime::new(
        ev.time_ns.div_euclid(1_000_000_000),
        ev.time_ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// SO_KEEPALIVE with probes after a minute of silence, so a dead peer behind a
/// silent network is noticed even while no ack is awaited.
fn set_tcp_keepalive(tcp: &TcpStream) {
    let fd = tcp.as_raw_fd();
    let on: libc::c_int = 1;
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt on a socket we own with pointers to live c_ints; failure
    // only means no keepalive.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            (&on as *const libc::c_int).cast(),
            size,
        );
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            (&TCP_KEEPALIVE_IDLE_SECS as *const libc::c_int).cast(),
            size,
        );
    }
}
