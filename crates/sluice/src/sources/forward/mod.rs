//! `type = "forward"`: a Fluentd forward protocol server (collector side).
//!
//! Fluentd, Fluent Bit, fluent-logger clients and other sluice agents send here.
//! Decoding is `proto::forward` (sans-IO, every length capped before allocation);
//! this module owns sockets, TLS, the shared-key handshake, limits and acks.
//!
//! # Data path
//! One TCP listener (bound at build, so "address in use" fails at start); the same
//! port answers UDP heartbeats (`0x00` → `0x00`, as Fluentd's in_forward). Each
//! connection runs a read loop ([`conn`]) that decodes requests from a buffer capped
//! by `limits.max_frame_bytes` and turns each request carrying events into one
//! [`EventBatch`](crate::event::EventBatch): tag → event tag, record → `fields`,
//! the value of `message_key` (str/bin) → body (else the record as JSON), peer
//! address → `origin.host`, v1.5 metadata → field `@metadata`.
//!
//! Zero copy: the decoder validates each record in place and hands it over as a
//! slice of the request's buffer ([`Record::Raw`](crate::event::Record::Raw)); the
//! body is a slice of it too. Per event there is no allocation, only reference
//! counts (buffer, tag, source, origin); per request one `Vec` of events. The
//! request's buffer therefore lives until its last event is dropped, and the read
//! buffer reserves the size of the last request so that its next read moves only
//! the unparsed tail.
//!
//! # Acknowledgements
//! A request with a `chunk` option gets a tracked token; its `{"ack": chunk}` is
//! written only when the token resolves `Delivered`, i.e. when every sink took the
//! events under its guarantee (Kafka: broker confirmed every record; file: fsync).
//! `Dropped` or `Errored` → no ack, and the connection is closed so the client
//! resends promptly (as Fluentd does when its emit fails). Acks leave in request
//! order: a writer task per connection awaits the pending receivers front to back.
//! At most [`conn::MAX_INFLIGHT_CHUNKS`] chunks per connection wait for their ack;
//! the next one stops the read loop (TCP backpressure). A client that never reads
//! acks blocks only its own writer, which gives up after a write timeout.
//!
//! # Limits
//! `max_connections` (a semaphore; above it new connections are closed at once),
//! `idle_timeout_secs` (no byte received and no ack pending; also the longest time
//! one request may take to arrive, against slowloris senders), and the decoder's
//! `max_frame_bytes`, `max_decompressed_bytes`, `max_entries_per_frame` (plus a
//! fixed depth limit of 64). Any bad request closes its connection with one WARN
//! line (peer, reason; rate-limited) and bumps the `errors` counter; other
//! connections are unaffected. Bytes being assembled on all connections, and
//! complete requests waiting for room in the sinks' buffers, share one budget,
//! `max_pending_bytes` ([`pending`]): past it, connections stop being read and
//! the oldest partial requests are closed. Requests whose events are in the
//! pipeline are bounded by the sinks' buffers (`max_bytes`, which counts the
//! request or inflated payload each record is a slice of).
//!
//! # De-duplication
//! A chunk whose id was already delivered (or is in flight) is acked without
//! being emitted again ([`dedupe`], `dedupe_window`); the ids outlive a restart
//! in a journal when the source feeds a disk buffer.

mod conn;
mod dedupe;
mod heartbeat;
mod pending;
mod writer;

pub use dedupe::DedupeWindowConfig;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{Check, Secret, Validate};
use crate::logging::BurstLimit;
use crate::metrics::Counters;
use crate::tls::{self, ServerTlsConfig};
use crate::topology::{ComponentError, SourceContext, Task};

/// One entry of `users = [{ username = "a", password = "b" }]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name sent in the PING.
    pub username: String,
    /// Its password.
    pub password: Secret,
}

/// `[sources.NAME.limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardLimits {
    /// Largest request, in wire bytes; also the cap of a connection's read buffer.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Largest decompressed (Compressed)PackedForward payload.
    #[serde(default = "default_max_decompressed_bytes")]
    pub max_decompressed_bytes: usize,
    /// Most events in one request.
    #[serde(default = "default_max_entries_per_frame")]
    pub max_entries_per_frame: usize,
    /// Most simultaneous connections; more are closed at once (counted).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends nothing (and waits for no ack) this long is closed;
    /// also the longest one request may take to arrive.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Budget for requests being received (and complete ones waiting for the
    /// sinks' buffers) across all connections, in bytes.
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: usize,
    /// An ack (or HELO/PONG) write that does not finish this long closes the
    /// connection: the client does not read its acks.
    #[serde(default = "default_ack_write_timeout_secs")]
    pub ack_write_timeout_secs: u64,
}

impl Default for ForwardLimits {
    fn default() -> Self {
        ForwardLimits {
            max_frame_bytes: default_max_frame_bytes(),
            max_decompressed_bytes: default_max_decompressed_bytes(),
            max_entries_per_frame: default_max_entries_per_frame(),
            max_connections: default_max_connections(),
            idle_timeout_secs: default_idle_timeout_secs(),
            max_pending_bytes: default_max_pending_bytes(),
            ack_write_timeout_secs: default_ack_write_timeout_secs(),
        }
    }
}

fn default_max_frame_bytes() -> usize {
    32 << 20
}
fn default_max_decompressed_bytes() -> usize {
    128 << 20
}
fn default_max_entries_per_frame() -> usize {
    1_000_000
}
fn default_max_connections() -> usize {
    10_000
}
fn default_idle_timeout_secs() -> u64 {
    300
}
fn default_ack_write_timeout_secs() -> u64 {
    30
}
fn default_max_pending_bytes() -> usize {
    256 << 20
}
fn default_message_key() -> String {
    "message".to_owned()
}

/// `[sources.NAME] type = "forward"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ForwardSourceConfig {
    /// `IP:port` to listen on (TCP, and UDP heartbeats on the same port).
    pub address: String,
    /// Record key whose str/bin value becomes the event body (else the record as
    /// JSON). Empty: always the record as JSON.
    #[serde(default = "default_message_key")]
    pub message_key: String,
    /// Require the HELO/PING/PONG handshake with this key.
    #[serde(default)]
    pub shared_key: Option<Secret>,
    /// With `shared_key`: also require one of these users in the PING.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Hostname sent in PONG (default: the machine's hostname).
    #[serde(default)]
    pub self_hostname: Option<String>,
    /// Serve TLS.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// Hard limits.
    #[serde(default)]
    pub limits: ForwardLimits,
    /// Chunk ids remembered to acknowledge resends without storing them again.
    #[serde(default)]
    pub dedupe_window: DedupeWindowConfig,
}

/// The decoder's nesting limit (the proto default; Fluentd's unpacker allows 128).
const MAX_DEPTH: usize = 64;
/// Longest request the protocol can carry in a str32/bin32 (and our sanity cap).
const MAX_FRAME_CEILING: usize = 1 << 30;

impl Validate for ForwardSourceConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.address.parse::<SocketAddr>().is_err() {
            v.error("address", "expected IP:port, e.g. \"0.0.0.0:24224\"");
        }
        if self.shared_key.as_ref().is_some_and(|k| k.0.is_empty()) {
            v.error("shared_key", "must not be empty (omit it for no handshake)");
        }
        if !self.users.is_empty() && self.shared_key.is_none() {
            v.error(
                "users",
                "user authentication happens in the handshake: set shared_key too",
            );
        }
        if self.users.iter().any(|u| u.username.is_empty()) {
            v.error("users", "usernames must not be empty");
        }
        if let Some(tls) = &self.tls
            && (tls.cert_file.is_empty() || tls.key_file.is_empty())
        {
            v.error("tls", "needs cert_file and key_file");
        }
        if self.dedupe_window.max_chunks > dedupe::MAX_CHUNKS_CEILING {
            v.error(
                "dedupe_window",
                format!(
                    "max_chunks must be at most {} (0 disables)",
                    dedupe::MAX_CHUNKS_CEILING
                ),
            );
        }
        let l = &self.limits;
        if l.max_frame_bytes < 1024 || l.max_frame_bytes > MAX_FRAME_CEILING {
            v.error(
                "limits",
                format!("max_frame_bytes must be between 1024 and {MAX_FRAME_CEILING}"),
            );
        }
        if l.max_decompressed_bytes == 0 {
            v.error("limits", "max_decompressed_bytes must be at least 1");
        }
        if l.max_entries_per_frame == 0 {
            v.error("limits", "max_entries_per_frame must be at least 1");
        }
        if l.max_connections == 0 || l.max_connections > Semaphore::MAX_PERMITS {
            v.error("limits", "max_connections must be at least 1");
        }
        if l.idle_timeout_secs == 0 {
            v.error("limits", "idle_timeout_secs must be at least 1");
        }
        if l.ack_write_timeout_secs == 0 {
            v.error("limits", "ack_write_timeout_secs must be at least 1");
        }
        // One request of max_frame_bytes plus one read must fit the budget.
        let least = l.max_frame_bytes.saturating_add(conn::MAX_READ);
        if l.max_pending_bytes < least {
            v.error(
                "limits",
                format!(
                    "max_pending_bytes must be at least max_frame_bytes + 1 MiB ({least}): one request must fit"
                ),
            );
        }
    }
}

/// Per-source protocol counters, logged when the source stops.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub bad_requests: AtomicU64,
    pub auth_failures: AtomicU64,
    pub tls_failures: AtomicU64,
    pub idle_closed: AtomicU64,
    pub acks_sent: AtomicU64,
    pub acks_withheld: AtomicU64,
    pub heartbeats: AtomicU64,
}

/// Handshake settings.
pub(crate) struct Auth {
    pub shared_key: Vec<u8>,
    pub users: Vec<proto::forward::handshake::Credentials>,
    pub hostname: Vec<u8>,
}

/// What every connection of one source shares.
pub(crate) struct Server {
    pub cx: SourceContext,
    pub limits: proto::forward::Limits,
    pub idle_timeout: Duration,
    pub message_key: Vec<u8>,
    pub auth: Option<Auth>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub common: Arc<Common>,
    /// `max_pending_bytes`, shared by the connections.
    pub pending: Arc<pending::Pending>,
    /// Chunk ids delivered or in flight (`dedupe_window`); `None` when off.
    pub dedupe: Option<Arc<dedupe::Dedupe>>,
}

/// What connection writers and the heartbeat task share. Apart from [`Server`]
/// because it holds no output: writers may outlive the source task (they write the
/// acks of batches still draining), and must not keep sink buffers open.
pub(crate) struct Common {
    pub stats: Stats,
    pub log_limit: BurstLimit,
    pub counters: Arc<Counters>,
    /// `ack_write_timeout_secs`.
    pub write_timeout: Duration,
}

/// Binds TCP (backlog 1024, SO_REUSEADDR so a restart is not refused while old
/// connections linger in TIME_WAIT), then UDP on the same port. With port 0 the
/// kernel's TCP port may be taken for UDP: try a few ports.
fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, UdpSocket)> {
    // A reload replacing a source on this address takes over its sockets.
    if let Some((tcp, udp)) = crate::topology::ListenerPool::take(addr)? {
        return Ok((TcpListener::from_std(tcp)?, UdpSocket::from_std(udp)?));
    }
    let (tcp, udp) = bind_new(addr)?;
    crate::topology::ListenerPool::keep(addr, &tcp, &udp)?;
    Ok((tcp, udp))
}

fn bind_new(addr: SocketAddr) -> std::io::Result<(TcpListener, UdpSocket)> {
    let mut tries = if addr.port() == 0 { 8 } else { 1 };
    loop {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        let local = listener.local_addr()?;
        match std::net::UdpSocket::bind(local) {
            Ok(udp) => {
                udp.set_nonblocking(true)?;
                return Ok((listener, UdpSocket::from_std(udp)?));
            }
            Err(e) => {
                tries -= 1;
                if tries == 0 {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("UDP heartbeat port: {e}"),
                    ));
                }
            }
        }
    }
}

/// Whether the chunk ids of source `name` are journaled: its events reach a
/// sink with a disk buffer (directly or through routes), so sluice keeps data
/// across a restart and the data dir is in use already; and every sink they
/// reach acknowledges only what it stored or delivered. Behind a sink with
/// `acknowledgements = "none"` a remembered id does not mean the events
/// survive a crash, and suppressing the client's resend would lose them.
pub(crate) fn journal_wanted(config: &crate::config::Config, name: &str) -> bool {
    let sinks = super::reached_sinks(config, name);
    sinks
        .iter()
        .any(|s| s.buffer.kind == crate::config::BufferKind::Disk)
        && sinks
            .iter()
            .all(|s| s.acknowledgements != crate::buffer::Acknowledgements::None)
}

/// The client chunks of source `name` that every sink it reaches holds whole
/// in its disk buffer (found when the buffers opened), with the time they were
/// stored: known without the journal. Empty unless the ids are journaled and
/// *every* sink reached has a disk buffer open now: a chunk held by one buffer
/// but not by another (a memory buffer, a route that sent part of it
/// elsewhere) is not known, so its resend is stored again — a duplicate,
/// never a loss.
pub(crate) fn durable_chunks(
    config: &crate::config::Config,
    name: &str,
    senders: &[(String, crate::buffer::BufferSender)],
) -> std::collections::HashMap<Bytes, u64> {
    let mut known: Option<std::collections::HashMap<Bytes, u64>> = None;
    if !journal_wanted(config, name) {
        return Default::default();
    }
    for sink in super::reached_sinks(config, name) {
        let Some(found) = senders
            .iter()
            .find(|(n, _)| *n == sink.name)
            .and_then(|(_, tx)| tx.recovered_chunks(name))
        else {
            return Default::default();
        };
        known = Some(match known {
            None => found,
            Some(k) => k
                .into_iter()
                .filter_map(|(id, secs)| found.get(&id).map(|s| (id, secs.max(*s))))
                .collect(),
        });
    }
    known.unwrap_or_default()
}

/// Pending connections the kernel queues before `accept` (bursts of reconnects).
const LISTEN_BACKLOG: u32 = 1024;

pub(super) async fn build(
    config: ForwardSourceConfig,
    mut cx: SourceContext,
) -> Result<Task, ComponentError> {
    let addr: SocketAddr = config
        .address
        .parse()
        .map_err(|_| ComponentError::Other(format!("invalid address {}", config.address)))?;
    let tls = match &config.tls {
        Some(t) => Some(tls::acceptor(t).map_err(ComponentError::Other)?),
        None => None,
    };
    let (listener, udp) =
        bind(addr).map_err(|e| ComponentError::io(format!("binding {addr}"), e))?;
    let auth = config.shared_key.as_ref().map(|key| Auth {
        shared_key: key.0.clone().into_bytes(),
        users: config
            .users
            .iter()
            .map(|u| proto::forward::handshake::Credentials {
                username: u.username.clone().into_bytes(),
                password: u.password.0.clone().into_bytes(),
            })
            .collect(),
        hostname: config
            .self_hostname
            .clone()
            .unwrap_or_else(crate::host::hostname)
            .into_bytes(),
    });
    let dedupe = if config.dedupe_window.enabled() {
        let journal = journal_wanted(&cx.reload.borrow(), &cx.name)
            .then(|| cx.data_dir.join("forward_source").join(&*cx.name));
        if let Some(dir) = &journal {
            crate::dirs::ensure(dir, "forward source chunk id journal")?;
        }
        let window = config.dedupe_window.clone();
        let counters = cx.counters.clone();
        let durable = std::mem::take(&mut cx.durable_chunks);
        let name = cx.name.clone();
        let opened = tokio::task::spawn_blocking(move || {
            dedupe::Dedupe::open(&window, journal.as_deref(), durable, name, counters)
        })
        .await
        .map_err(|e| ComponentError::Other(format!("opening the chunk id journal: {e}")))?;
        Some(opened.map_err(|e| {
            ComponentError::io(format!("chunk id journal {}", e.path.display()), e.source)
        })?)
    } else {
        None
    };
    let l = &config.limits;
    let server = Arc::new(Server {
        limits: proto::forward::Limits {
            max_frame_bytes: l.max_frame_bytes,
            max_decompressed_bytes: l.max_decompressed_bytes,
            max_entries_per_frame: l.max_entries_per_frame,
            max_depth: MAX_DEPTH,
        },
        idle_timeout: Duration::from_secs(l.idle_timeout_secs),
        message_key: config.message_key.clone().into_bytes(),
        auth,
        tls,
        pending: pending::Pending::new(l.max_pending_bytes),
        dedupe,
        common: Arc::new(Common {
            stats: Stats::default(),
            log_limit: BurstLimit::new(),
            counters: cx.counters.clone(),
            write_timeout: Duration::from_secs(l.ack_write_timeout_secs),
        }),
        cx,
    });
    Ok(Box::pin(run(server, listener, udp, l.max_connections)))
}

async fn run(
    server: Arc<Server>,
    listener: TcpListener,
    udp: UdpSocket,
    max_connections: usize,
) -> Result<(), ComponentError> {
    let local = listener
        .local_addr()
        .map_err(|e| ComponentError::io("reading the bound address", e))?;
    info!(
        address = %local,
        tls = server.tls.is_some(),
        handshake = server.auth.is_some(),
        "Forward source listening."
    );
    let stop = server.cx.shutdown.clone();
    let heartbeat =
        tokio::spawn(heartbeat::run(udp, stop.clone(), server.common.clone()).in_current_span());
    let slots = Arc::new(Semaphore::new(max_connections));
    let readers = TaskTracker::new();
    loop {
        let (socket, peer) = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    if server.common.log_limit.allow().is_some() {
                        warn!(error = %e, "Accepting a connection failed.");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            server.common.stats.refused.fetch_add(1, Relaxed);
            if let Some(suppressed) = server.common.log_limit.allow() {
                warn!(peer = %peer, max_connections, suppressed, "Connection refused: max_connections reached.");
            }
            drop(socket);
            continue;
        };
        server.common.stats.connections.fetch_add(1, Relaxed);
        let span = info_span!("conn", peer = %peer);
        readers.spawn(conn::handle(server.clone(), socket, peer, permit).instrument(span));
    }
    drop(listener);
    readers.close();
    readers.wait().await;
    let _ = heartbeat.await;
    let s = &server.common.stats;
    info!(
        connections = s.connections.load(Relaxed),
        refused = s.refused.load(Relaxed),
        bad_requests = s.bad_requests.load(Relaxed),
        auth_failures = s.auth_failures.load(Relaxed),
        tls_failures = s.tls_failures.load(Relaxed),
        idle_closed = s.idle_closed.load(Relaxed),
        acks_sent = s.acks_sent.load(Relaxed),
        acks_withheld = s.acks_withheld.load(Relaxed),
        udp_heartbeats = s.heartbeats.load(Relaxed),
        pending_closed = server.pending.closed.load(Relaxed),
        duplicates_suppressed = server.cx.counters.duplicates_suppressed.load(Relaxed),
        "Forward source stopped."
    );
    Ok(())
}

#[cfg(test)]
mod tests;
