//! `type = "forward"`: a Fluentd forward protocol client (agent side), so agents
//! chain to collectors (sluice, Fluentd, Fluent Bit).
//!
//! Events are grouped by tag into PackedForward requests (`compression = "gzip"`:
//! CompressedPackedForward) of at most `max_chunk_bytes` of entries, each with a
//! fresh chunk id. Times are EventTime (nanoseconds kept); the record is the
//! event's structured fields when it has some (a record received by a forward
//! source goes on unchanged; fields that do not hold the body, such as a Kafka
//! source's `kafka.*`, get it added as `message`), else `{"message": body}`.
//!
//! # Acknowledgements (`require_ack = true`, the default)
//! A batch resolves `Delivered` only when the server acked every request holding
//! its events, so agent → collector → Kafka is end to end when the collector is
//! sluice (it acks after its own sinks deliver). Up to `max_inflight_chunks`
//! requests are on the wire per connection (1 = Fluentd's and Fluent Bit's
//! practice; servers answer acks in request order, which is checked). A request
//! not acked within `ack_timeout_secs`, a mismatched ack, or a lost connection
//! drops the connection; every unacked request is sent again, in order, with the
//! **same bytes and chunk id** (at-least-once: a server may see a request twice and
//! can deduplicate by chunk id). Resends go on until the shutdown deadline, which
//! fails what is left (`Errored`, so the upstream source does not ack either).
//! With `require_ack = false` a batch is `Delivered` once written to the socket.
//!
//! # Servers
//! `servers` are tried in order at each (re)connect: the first that connects (and
//! passes TLS and the handshake) is used until it fails, so the first entry is the
//! primary and the others are standbys. When all fail, retries back off from 1 s to
//! 30 s. TLS (`[tls]`), the shared-key handshake (`shared_key`, `self_hostname`,
//! `username`/`password`) and TCP keepalive are per connection; with `keepalive =
//! false` a connection is closed once nothing is in flight (Fluentd's default), else
//! after `keepalive_timeout_secs` without traffic.

mod client;
mod record;

use serde::Deserialize;

use crate::config::Secret;
use crate::config::{Check, Validate};
use crate::topology::{ComponentError, SinkContext, Task};

/// Compression of the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ForwardCompression {
    /// PackedForward.
    #[default]
    None,
    /// CompressedPackedForward (gzip).
    Gzip,
}

/// `[sinks.NAME.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM CA bundle to verify servers (default: the system bundle).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM client certificate chain (mutual TLS), with `key_file`.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<String>,
    /// Check that the certificate names the server (host of `servers`, or `server_name`).
    #[serde(default = "yes")]
    pub verify_hostname: bool,
    /// Name to send (SNI) and verify instead of the host of each server.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn yes() -> bool {
    true
}

/// `[sinks.NAME] type = "forward"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ForwardSinkConfig {
    /// `host:port` of each server, primary first.
    pub servers: Vec<String>,
    /// `none` (PackedForward) or `gzip` (CompressedPackedForward).
    #[serde(default)]
    pub compression: ForwardCompression,
    /// Ask for acks and resolve batches only when acked.
    #[serde(default = "yes")]
    pub require_ack: bool,
    /// Resend a request not acked within this many seconds.
    #[serde(default = "default_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
    /// Requests awaiting their ack per connection.
    #[serde(default = "default_max_inflight_chunks")]
    pub max_inflight_chunks: usize,
    /// Entries (uncompressed) per request at most; one larger event goes alone.
    #[serde(default = "default_max_chunk_bytes")]
    pub max_chunk_bytes: usize,
    /// TCP connect (and TLS / handshake) timeout.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Keep connections open between requests.
    #[serde(default = "yes")]
    pub keepalive: bool,
    /// Close a kept-alive connection after this long without traffic.
    #[serde(default = "default_keepalive_timeout_secs")]
    pub keepalive_timeout_secs: u64,
    /// Shared key for the HELO/PING/PONG handshake (required if the server has one).
    #[serde(default)]
    pub shared_key: Option<Secret>,
    /// Hostname sent in PING (default: the machine's hostname).
    #[serde(default)]
    pub self_hostname: Option<String>,
    /// User for servers with user authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password of `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Connect with TLS.
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
}

fn default_ack_timeout_secs() -> u64 {
    60
}
fn default_max_inflight_chunks() -> usize {
    8
}
fn default_max_chunk_bytes() -> usize {
    4 << 20
}
fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_keepalive_timeout_secs() -> u64 {
    60
}

/// Most requests in flight per connection (a sluice forward source lets 16 wait).
const MAX_INFLIGHT_CEILING: usize = 64;
/// Largest request payload (sluice's source accepts 32 MiB by default, Fluent Bit 6 MB).
const MAX_CHUNK_CEILING: usize = 256 << 20;

/// `host` and `port` of a `host:port` (IPv6 hosts in brackets).
pub(crate) fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some((host, port))
}

impl Validate for ForwardSinkConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.servers.is_empty() {
            v.error("servers", "needs at least one \"host:port\"");
        }
        for s in &self.servers {
            if split_host_port(s).is_none() {
                v.error("servers", format!("`{s}` is not host:port"));
            }
        }
        if self.ack_timeout_secs == 0 {
            v.error("ack_timeout_secs", "must be at least 1");
        }
        if self.connect_timeout_secs == 0 {
            v.error("connect_timeout_secs", "must be at least 1");
        }
        if self.keepalive_timeout_secs == 0 {
            v.error("keepalive_timeout_secs", "must be at least 1");
        }
        if self.max_inflight_chunks == 0 || self.max_inflight_chunks > MAX_INFLIGHT_CEILING {
            v.error(
                "max_inflight_chunks",
                format!("must be between 1 and {MAX_INFLIGHT_CEILING}"),
            );
        }
        if self.max_chunk_bytes < 1024 || self.max_chunk_bytes > MAX_CHUNK_CEILING {
            v.error(
                "max_chunk_bytes",
                format!("must be between 1024 and {MAX_CHUNK_CEILING}"),
            );
        }
        if self.shared_key.as_ref().is_some_and(|k| k.0.is_empty()) {
            v.error("shared_key", "must not be empty (omit it for no handshake)");
        }
        if (self.username.is_some() || self.password.is_some()) && self.shared_key.is_none() {
            v.error(
                "username",
                "user authentication happens in the handshake: set shared_key too",
            );
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            v.error("tls", "cert_file and key_file go together");
        }
    }
}

/// Build the sink: TLS settings are loaded here (bad files fail at start); no
/// connection is made until there is something to send.
pub(super) fn build(config: ForwardSinkConfig, cx: SinkContext) -> Result<Task, ComponentError> {
    let sink = client::ForwardSink::new(config).map_err(ComponentError::Other)?;
    Ok(Box::pin(sink.run(cx)))
}
