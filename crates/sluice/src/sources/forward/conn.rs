//! One forward connection: TLS accept and the read loop (decode, handshake,
//! emit); the ordered ack writer is [`super::writer`].
//!
//! Reader and writer are separate tasks joined by a bounded queue of [`Reply`]s in
//! request order. The reader takes one of [`MAX_INFLIGHT_CHUNKS`] slots and pushes
//! the pending ack of a chunked request *before* emitting its batch, so at most
//! that many chunks per connection wait for delivery; with every slot taken the
//! reader stops reading (the next request stays in the socket, the client feels
//! TCP backpressure) until the writer has an outcome for the oldest. A request
//! that was already read (sent in the same segment as the ones before it) waits
//! decoded for its slot. The writer awaits each ack receiver in turn and writes the
//! ack only on `Delivered`; on any other outcome, a write error or a write that
//! does not finish within `limits.ack_write_timeout_secs`, it
//! closes the connection (the client then resends what it has not seen
//! acknowledged).
//!
//! A chunk whose id the source remembers ([`super::dedupe`]) is not emitted: its
//! ack is queued like any other, already decided (delivered before) or waiting
//! for the first copy still in flight.
//!
//! The connection slot (a `max_connections` permit) is held until the writer is
//! done, i.e. until the socket is really closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proto::forward::handshake::{self, Helo, PingRejection, Pong};
use proto::forward::{DecodeError, Decoder, Entry, EventFrame, Limits, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

use super::Server;
use super::dedupe::{Admit, MAX_CHUNK_ID_BYTES};
use super::pending::Hold;
use super::writer::{Reply, Wait, Writer};
use crate::ack::AckToken;
use crate::event::{Event, EventBatch, Origin, RawMap, RawValue, Record, now_ns};
use crate::metrics::Counters;

/// Chunks of one connection that may wait for their ack at once. Fluentd and Fluent
/// Bit clients keep one; sluice's own sink keeps up to its window (default 8). A
/// request beyond this waits in the socket, so a connection holds at most this many
/// batches in the pipeline.
pub(crate) const MAX_INFLIGHT_CHUNKS: usize = 16;
/// TLS handshakes must finish within this (or the idle timeout, if shorter).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer of an idle connection: small, so thousands of them cost little.
const INITIAL_BUFFER: usize = 4 << 10;
/// Largest read asked for at once while a request is being assembled.
pub(crate) const MAX_READ: usize = 1 << 20;
/// A buffer grown past this by a large request is released once it is drained.
const KEEP_BUFFER: usize = 2 << 20;

// Each decoded request is split off the read buffer and its events borrow it (zero
// copy) until delivered, so the buffer's storage is usually still shared when more
// room is needed and `reserve` moves the unparsed tail to fresh storage. Reserving
// the size of the last request at once makes that one small copy per request
// instead of a copy per doubling.

/// Why the read loop ended.
enum End {
    /// Client closed, stop requested, writer gone, idle: nothing to report.
    Quiet,
    /// Bad input: logged once, counted.
    Bad,
}

pub(super) async fn handle(
    server: Arc<Server>,
    socket: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let _ = socket.set_nodelay(true);
    match &server.tls {
        None => serve(server, socket, peer, permit).await,
        Some(acceptor) => {
            let limit = TLS_HANDSHAKE_TIMEOUT.min(server.idle_timeout);
            let stop = server.cx.shutdown.clone();
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(limit, acceptor.accept(socket)) => r,
            };
            match accepted {
                Ok(Ok(stream)) => serve(server, stream, peer, permit).await,
                Ok(Err(e)) => {
                    server.common.stats.tls_failures.fetch_add(1, Relaxed);
                    Counters::add(&server.cx.counters.errors, 1);
                    if let Some(suppressed) = server.common.log_limit.allow() {
                        warn!(peer = %peer, error = %e, suppressed, "TLS handshake failed; connection closed.");
                    }
                }
                Err(_) => {
                    server.common.stats.tls_failures.fetch_add(1, Relaxed);
                    debug!(peer = %peer, "TLS handshake timed out; connection closed.");
                }
            }
        }
    }
}

async fn serve<S>(server: Arc<Server>, stream: S, peer: SocketAddr, permit: OwnedSemaphorePermit)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(MAX_INFLIGHT_CHUNKS);
    let window = Arc::new(Semaphore::new(MAX_INFLIGHT_CHUNKS));
    let writer_done = CancellationToken::new();
    let pending = Arc::new(AtomicUsize::new(0));
    let writer = Writer {
        common: server.common.clone(),
        peer,
        pending: pending.clone(),
        done: writer_done.clone(),
    };
    // The writer outlives the reader: acks of batches already emitted are still
    // written while sinks drain at shutdown. It holds the connection slot.
    tokio::spawn(
        async move {
            writer.run(wr, rx).await;
            drop(permit);
        }
        .in_current_span(),
    );
    let origin = Arc::new(Origin {
        host: Some(peer.ip().to_string()),
        ..Origin::default()
    });
    let mut reader = Reader {
        hold: server.pending.hold(),
        window,
        server,
        peer,
        origin,
        tx,
        pending,
        writer_done,
        helo: None,
        authenticated: false,
        last_request: 0,
    };
    if let End::Bad = reader.run(rd).await {
        debug!("Connection closed after bad input.");
    }
}

struct Reader {
    server: Arc<Server>,
    /// This connection's share of `max_pending_bytes`.
    hold: Hold,
    /// Slots for chunks awaiting their ack.
    window: Arc<Semaphore>,
    peer: SocketAddr,
    origin: Arc<Origin>,
    tx: mpsc::Sender<Reply>,
    /// Replies queued and not yet written (or abandoned) by the writer.
    pending: Arc<AtomicUsize>,
    writer_done: CancellationToken,
    helo: Option<Helo>,
    authenticated: bool,
    /// Wire size of the last request with events (read-size hint).
    last_request: usize,
}

/// Largest request, and decompressed payload, read before the handshake is
/// done: a PING (key digest, hostname, user name and password digest) is a few
/// hundred bytes.
const PRE_AUTH_MAX_BYTES: usize = 4096;

/// The decoder limits before authentication.
fn pre_auth_limits(full: &Limits) -> Limits {
    Limits {
        max_frame_bytes: full.max_frame_bytes.min(PRE_AUTH_MAX_BYTES),
        max_decompressed_bytes: full.max_decompressed_bytes.min(PRE_AUTH_MAX_BYTES),
        max_entries_per_frame: full.max_entries_per_frame.min(16),
        max_depth: full.max_depth,
    }
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(&mut self, mut rd: R) -> End {
        let server = self.server.clone();
        if server.auth.is_some() {
            let helo = Helo::generate(
                server.auth.as_ref().is_some_and(|a| !a.users.is_empty()),
                true,
            );
            if !self.reply(Reply::Now(helo.encode())).await {
                return End::Quiet;
            }
            self.helo = Some(helo);
        } else {
            self.authenticated = true;
        }
        // Until the handshake is done only HELO/PING-sized requests are read:
        // an unauthenticated peer cannot make us buffer, decode or inflate more.
        let mut decoder = if self.authenticated {
            Decoder::new(server.limits.clone())
        } else {
            Decoder::new(pre_auth_limits(&server.limits))
        };
        let mut full_limits = self.authenticated;
        let mut buf = BytesMut::with_capacity(INITIAL_BUFFER);
        let idle = server.idle_timeout;
        let stop = server.cx.shutdown.clone();
        // When the request now in the buffer began to arrive (slowloris bound), and
        // when the last bytes came (idle bound).
        let mut request_started: Option<Instant> = None;
        let mut last_read = Instant::now();
        let deadline = tokio::time::sleep(idle);
        tokio::pin!(deadline);
        loop {
            // Every complete request in the buffer first.
            loop {
                match decoder.decode(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(request)) => {
                        if let Some(end) = self.request(request).await {
                            return end;
                        }
                        if self.authenticated && !full_limits {
                            decoder.set_limits(server.limits.clone());
                            full_limits = true;
                        }
                    }
                    Err(e) => return self.bad_request(&e).await,
                }
            }
            if buf.is_empty() {
                request_started = None;
                self.hold.settle(0);
                if buf.capacity() > KEEP_BUFFER {
                    buf = BytesMut::with_capacity(INITIAL_BUFFER);
                }
            } else if request_started.is_none() {
                request_started = Some(last_read);
            }
            deadline
                .as_mut()
                .reset(request_started.unwrap_or(last_read) + idle);
            // The decoder only answers "need more" while the request fits
            // max_frame_bytes, so the buffer stays below that plus one read.
            let want = buf
                .len()
                .max(self.last_request)
                .clamp(INITIAL_BUFFER, MAX_READ);
            // With every chunk slot taken, read nothing: the next request stays
            // in the socket until an ack is decided.
            if self.window.available_permits() == 0 {
                let window = self.window.clone();
                let writer_done = self.writer_done.clone();
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return End::Quiet,
                    _ = writer_done.cancelled() => return End::Quiet,
                    p = window.acquire() => drop(p),
                }
            }
            // Beyond a few KiB, the bytes to read are charged to the source's
            // budget first: while it is used up, this connection reads nothing.
            let since = request_started.unwrap_or(last_read);
            let writer_done = self.writer_done.clone();
            let charged = tokio::select! {
                biased;
                _ = stop.cancelled() => return End::Quiet,
                _ = writer_done.cancelled() => return End::Quiet,
                r = self.hold.charge(buf.len() + want, since) => r,
            };
            if charged.is_err() {
                return self.evicted(buf.len());
            }
            buf.reserve(want);
            let read = tokio::select! {
                biased;
                _ = stop.cancelled() => return End::Quiet,
                _ = self.writer_done.cancelled() => return End::Quiet,
                _ = self.hold.evicted() => return self.evicted(buf.len()),
                r = rd.read_buf(&mut buf) => r,
                _ = &mut deadline => {
                    if request_started.is_some() {
                        server.common.stats.idle_closed.fetch_add(1, Relaxed);
                        Counters::add(&server.cx.counters.errors, 1);
                        if let Some(suppressed) = server.common.log_limit.allow() {
                            warn!(peer = %self.peer, buffered = buf.len(), idle_timeout_secs = idle.as_secs(), suppressed,
                                "Request not complete within the idle timeout; connection closed.");
                        }
                        return End::Bad;
                    }
                    if self.pending.load(Relaxed) > 0 {
                        // Quiet because it waits for acks: not idle.
                        last_read = Instant::now();
                        continue;
                    }
                    server.common.stats.idle_closed.fetch_add(1, Relaxed);
                    debug!(idle_timeout_secs = idle.as_secs(), "Idle connection closed.");
                    return End::Quiet;
                }
            };
            match read {
                Ok(0) => {
                    return match decoder.decode_eof(&mut buf) {
                        Ok(_) => End::Quiet,
                        Err(e) => self.bad_request(&e).await,
                    };
                }
                Ok(n) => {
                    Counters::add(&server.cx.counters.bytes_in, n);
                    last_read = Instant::now();
                }
                Err(e) => {
                    debug!(error = %e, "Read failed; connection closed.");
                    return End::Quiet;
                }
            }
        }
    }

    /// Closed to free `max_pending_bytes` (counted by the budget).
    fn evicted(&self, buffered: usize) -> End {
        let server = &self.server;
        Counters::add(&server.cx.counters.errors, 1);
        if let Some(suppressed) = server.common.log_limit.allow() {
            warn!(peer = %self.peer, buffered, max_pending_bytes = server.pending.limit(), suppressed,
                "Partial request closed to free max_pending_bytes; connection closed.");
        }
        End::Bad
    }

    /// Queue a reply for the writer; false if the writer is gone.
    async fn reply(&self, reply: Reply) -> bool {
        self.pending.fetch_add(1, Relaxed);
        let sent = tokio::select! {
            r = self.tx.send(reply) => r.is_ok(),
            _ = self.writer_done.cancelled() => false,
        };
        if !sent {
            self.pending.fetch_sub(1, Relaxed);
        }
        sent
    }

    /// Handle one decoded request; `Some` ends the connection.
    async fn request(&mut self, request: Request) -> Option<End> {
        match request {
            Request::Ping(ping) => {
                let server = self.server.clone();
                let helo = self.helo.clone();
                let (Some(auth), Some(helo), false) = (&server.auth, &helo, self.authenticated)
                else {
                    return Some(self.refuse("PING outside a handshake").await);
                };
                match handshake::verify_ping(&ping, helo, &auth.shared_key, &auth.users) {
                    Ok(()) => {
                        let pong = Pong::accept(&ping, helo, &auth.hostname, &auth.shared_key);
                        self.authenticated = true;
                        debug!(client = %ping.hostname.escape_ascii(), "Handshake done.");
                        if !self.reply(Reply::Now(pong.encode())).await {
                            return Some(End::Quiet);
                        }
                        None
                    }
                    Err(rejection) => {
                        server.common.stats.auth_failures.fetch_add(1, Relaxed);
                        Counters::add(&server.cx.counters.errors, 1);
                        if let Some(suppressed) = server.common.log_limit.allow() {
                            warn!(
                                peer = %self.peer,
                                client = %ping.hostname.escape_ascii(),
                                username = %ping.username.escape_ascii(),
                                reason = rejection.reason(),
                                suppressed,
                                "Handshake refused; connection closed."
                            );
                        }
                        self.reject(rejection).await;
                        Some(End::Bad)
                    }
                }
            }
            Request::Heartbeat if self.authenticated => None,
            Request::Heartbeat => Some(self.refuse("data before the handshake").await),
            Request::Events(_) if !self.authenticated => {
                Some(self.refuse("data before the handshake").await)
            }
            Request::Events(frame) => {
                self.last_request = frame.wire_len;
                if self.emit(frame).await {
                    None
                } else {
                    Some(End::Quiet)
                }
            }
        }
    }

    /// Refuse a request that breaks the handshake rules: PONG false where a PING was
    /// due (Fluentd's behaviour), plain close otherwise.
    async fn refuse(&mut self, reason: &str) -> End {
        let server = &self.server;
        server.common.stats.auth_failures.fetch_add(1, Relaxed);
        Counters::add(&server.cx.counters.errors, 1);
        if let Some(suppressed) = server.common.log_limit.allow() {
            warn!(peer = %self.peer, reason, suppressed, "Request refused; connection closed.");
        }
        if !self.authenticated {
            self.reject(PingRejection::InvalidPing).await;
        }
        End::Bad
    }

    async fn reject(&mut self, rejection: PingRejection) {
        if self
            .reply(Reply::Now(Pong::reject(rejection).encode()))
            .await
        {
            self.reply(Reply::Close).await;
        }
    }

    async fn bad_request(&mut self, e: &DecodeError) -> End {
        let server = &self.server;
        server.common.stats.bad_requests.fetch_add(1, Relaxed);
        Counters::add(&server.cx.counters.errors, 1);
        if let Some(suppressed) = server.common.log_limit.allow() {
            warn!(peer = %self.peer, reason = %e, suppressed, "Bad forward request; connection closed.");
        }
        if !self.authenticated {
            self.reject(PingRejection::InvalidPing).await;
        }
        End::Bad
    }

    /// Emit one request's events; false if the connection must end.
    async fn emit(&mut self, mut frame: EventFrame) -> bool {
        let ack = frame.ack();
        if frame.entries.is_empty() {
            // Nothing to deliver: ack in order with the others.
            return match ack {
                Some(a) => self.reply(Reply::Now(a)).await,
                None => true,
            };
        }
        let token = match ack {
            Some(a) => {
                let slot = tokio::select! {
                    p = self.window.clone().acquire_owned() => p.ok(),
                    _ = self.writer_done.cancelled() => None,
                };
                let Some(slot) = slot else {
                    return false;
                };
                let (token, wait) = self.track(&frame);
                if !self.reply(Reply::Ack(a, wait, slot)).await {
                    return false;
                }
                // A resend: its ack is queued, nothing to emit.
                let Some(token) = token else {
                    return true;
                };
                token
            }
            None => AckToken::none(),
        };
        let server = &self.server;
        let events = to_events(
            &mut frame,
            &server.message_key,
            &server.cx.name,
            &self.origin,
        );
        let counters = &self.server.cx.counters;
        Counters::add(&counters.events_in, events.len());
        Counters::add(&counters.events_out, events.len());
        // Waiting for room in the sinks' buffers, the request counts as pending.
        self.hold.pin(frame.pinned_bytes());
        self.server
            .cx
            .out
            .send(EventBatch::new(events, token))
            .await;
        self.hold.unpin();
        true
    }
}

impl Reader {
    /// The token of a chunked request and how its ack is decided: by id when
    /// de-duplication is on and the id is short enough, else by this batch.
    /// No token: a resend that must not be emitted.
    fn track(&self, frame: &EventFrame) -> (Option<AckToken>, Wait) {
        let dedupe = self.server.dedupe.as_ref();
        let id = frame
            .chunk
            .as_ref()
            .filter(|c| !c.is_empty() && c.len() <= MAX_CHUNK_ID_BYTES);
        let (Some(dedupe), Some(id)) = (dedupe, id) else {
            let (token, rx) = AckToken::channel();
            return (Some(token), Wait::Batch(rx));
        };
        let events = u32::try_from(frame.entries.len()).unwrap_or(u32::MAX);
        match dedupe.admit(id, events) {
            Admit::New(token, outcome) => (
                Some(token),
                Wait::Chunk {
                    outcome,
                    duplicate: false,
                },
            ),
            Admit::InFlight(outcome) => (
                None,
                Wait::Chunk {
                    outcome,
                    duplicate: true,
                },
            ),
            Admit::Done => (None, Wait::Done),
        }
    }
}

/// The events of one request, without a per-event allocation: each record stays a
/// slice of the request buffer ([`Record::Raw`]) and the body is a slice of it too
/// (the `message_key` value) unless it must be rendered as JSON. Tag, source and
/// origin are shared (a reference count per event).
pub(crate) fn to_events(
    frame: &mut EventFrame,
    message_key: &[u8],
    source: &Arc<str>,
    origin: &Arc<Origin>,
) -> Vec<Event> {
    let tag: Arc<str> = String::from_utf8_lossy(&frame.tag).into();
    let option_metadata = frame.metadata.take().filter(|m| !m.is_empty());
    let mut now = None;
    let entries = std::mem::take(&mut frame.entries);
    let mut events = Vec::with_capacity(entries.len());
    // `extend` over a mapped `vec::IntoIter` writes each event in its slot.
    events.extend(entries.into_iter().map(
        |Entry {
             time,
             record,
             metadata,
         }| {
            let time_ns = if time.secs == 0 && time.nanos == 0 {
                // Fluentd's rule: time 0 means "now".
                *now.get_or_insert_with(now_ns)
            } else {
                time.secs
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(time.nanos))
            };
            let record = match metadata
                .as_ref()
                .filter(|m| !m.is_empty())
                .or(option_metadata.as_ref())
            {
                // Rare (Fluent Bit v1.5 metadata): one copy of the record.
                Some(m) => record.with_pair(METADATA_FIELD.as_bytes(), m),
                None => record,
            };
            Event {
                time_ns,
                body: body_of(&record, message_key),
                tag: tag.clone(),
                source: source.clone(),
                tenant: None,
                fields: Some(Record::Raw(record)),
                origin: Some(origin.clone()),
                bucket: None,
            }
        },
    ));
    events
}

/// Field holding v1.5 per-event metadata (Logstash's name for out-of-band data).
pub(crate) const METADATA_FIELD: &str = "@metadata";

/// The body: the str/bin value of `message_key` (a slice of the record, no copy),
/// else the record as JSON.
fn body_of(record: &RawMap, message_key: &[u8]) -> Bytes {
    if !message_key.is_empty()
        && let Some(RawValue::Str(b) | RawValue::Bin(b)) = record.get(message_key)
    {
        return record.pairs_bytes().slice_ref(b);
    }
    let mut out = Vec::with_capacity(128);
    crate::encoding::write_json_record(&mut out, &Record::Raw(record.clone()));
    Bytes::from(out)
}
