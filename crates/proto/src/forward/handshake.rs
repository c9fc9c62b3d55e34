//! Shared-key handshake: HELO (server → client), PING (client → server), PONG
//! (server → client), sans-IO.
//!
//! ```text
//! HELO  ["HELO", {"nonce": <16 bytes>, "auth": <16 bytes or "">, "keepalive": bool}]
//! PING  ["PING", client_hostname, salt, hex(sha512(salt‖client_hostname‖nonce‖key)),
//!        username or "", hex(sha512(auth‖username‖password)) or ""]
//! PONG  ["PONG", true, "", server_hostname, hex(sha512(salt‖server_hostname‖nonce‖key))]
//!     | ["PONG", false, reason, "", ""]
//! ```
//!
//! ‖ is byte concatenation; hex is lowercase, 128 characters. The PONG digest uses the
//! client's salt and the server's nonce with the *server's* hostname, so the client
//! authenticates the server too.
//!
//! Compatibility choices: HELO salts are sent as bin (as Fluentd does); PING fields as
//! str, with the salt as 32 ASCII hex characters (Fluent Bit's server rejects bin PING
//! fields). Received salts, nonces and digests may be str or bin, any bytes. Digests
//! are compared in constant time over their full length, so an empty or short digest
//! never matches (Fluent Bit's 2024 bypass). Rejection reasons are Fluentd's strings.
//!
//! Server flow: send [`Helo::encode`]; the request [`Decoder`](super::Decoder) yields
//! [`Request::Ping`](super::Request::Ping); [`verify_ping`]; reply
//! [`Pong::accept`] or [`Pong::reject`] (then close). Client flow: the
//! [`ResponseDecoder`](super::ResponseDecoder) yields a [`Helo`]; send
//! [`Ping::new`]`.encode()`; check the [`Pong`] with [`verify_pong`].

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha512};
use thiserror::Error;

use super::error::DecodeErrorKind;
use super::msgpack::{Header, ReadError, Reader, put_array_len, put_bin, put_map_len, put_str};

pub(crate) const HELO: &[u8] = b"HELO";
pub(crate) const PING: &[u8] = b"PING";
pub(crate) const PONG: &[u8] = b"PONG";

/// The server's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helo {
    /// Random per-connection nonce mixed into both shared-key digests.
    pub nonce: Bytes,
    /// Salt for the password digest; empty means no user authentication.
    pub auth: Bytes,
    /// False if the server serves one request per connection.
    pub keepalive: bool,
}

impl Helo {
    /// A HELO with a random 16-byte nonce and, if `user_auth`, a random 16-byte auth
    /// salt (else an empty one).
    pub fn generate(user_auth: bool, keepalive: bool) -> Self {
        let auth = if user_auth {
            Bytes::copy_from_slice(&rand::random::<[u8; 16]>())
        } else {
            Bytes::new()
        };
        Helo {
            nonce: Bytes::copy_from_slice(&rand::random::<[u8; 16]>()),
            auth,
            keepalive,
        }
    }

    /// `["HELO", {"nonce": bin, "auth": bin, "keepalive": bool}]`.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + self.nonce.len() + self.auth.len());
        put_array_len(&mut out, 2);
        put_str(&mut out, HELO);
        put_map_len(&mut out, 3);
        put_str(&mut out, b"nonce");
        put_bin(&mut out, &self.nonce);
        put_str(&mut out, b"auth");
        put_bin(&mut out, &self.auth);
        put_str(&mut out, b"keepalive");
        out.extend_from_slice(&[if self.keepalive { 0xc3 } else { 0xc2 }]);
        out.freeze()
    }
}

/// The client's answer to HELO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// Client's hostname.
    pub hostname: Bytes,
    /// Client's random salt for the shared-key digests.
    pub salt: Bytes,
    /// Hex sha512(salt ‖ hostname ‖ nonce ‖ shared_key).
    pub shared_key_digest: Bytes,
    /// Username, or empty.
    pub username: Bytes,
    /// Hex sha512(auth ‖ username ‖ password), or empty when HELO's auth is empty.
    pub password_digest: Bytes,
}

/// A username and password, for user authentication on either side.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Username.
    pub username: Vec<u8>,
    /// Password.
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username.escape_ascii().to_string())
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Ping {
    /// A PING answering `helo`, with a fresh random salt (32 lowercase hex characters).
    /// `credentials` is used only if the HELO asks for user auth; then, as Fluentd does,
    /// missing credentials mean empty username and password.
    pub fn new(
        helo: &Helo,
        client_hostname: &[u8],
        shared_key: &[u8],
        credentials: Option<&Credentials>,
    ) -> Self {
        let salt = hex::encode(rand::random::<[u8; 16]>());
        Self::with_salt(
            helo,
            salt.as_bytes(),
            client_hostname,
            shared_key,
            credentials,
        )
    }

    /// Like [`Ping::new`] with a given salt (for tests and replays).
    pub fn with_salt(
        helo: &Helo,
        salt: &[u8],
        client_hostname: &[u8],
        shared_key: &[u8],
        credentials: Option<&Credentials>,
    ) -> Self {
        let digest = shared_key_digest(salt, client_hostname, &helo.nonce, shared_key);
        let (username, password_digest) = if helo.auth.is_empty() {
            (Bytes::new(), Bytes::new())
        } else {
            let (user, pass) = credentials
                .map(|c| (c.username.as_slice(), c.password.as_slice()))
                .unwrap_or_default();
            let digest = password_digest(&helo.auth, user, pass);
            (
                Bytes::copy_from_slice(user),
                Bytes::from(digest.into_bytes()),
            )
        };
        Ping {
            hostname: Bytes::copy_from_slice(client_hostname),
            salt: Bytes::copy_from_slice(salt),
            shared_key_digest: Bytes::from(digest.into_bytes()),
            username,
            password_digest,
        }
    }

    /// `["PING", hostname, salt, digest, username, password_digest]`, all str.
    pub fn encode(&self) -> Bytes {
        let fields = [
            &self.hostname,
            &self.salt,
            &self.shared_key_digest,
            &self.username,
            &self.password_digest,
        ];
        let mut out =
            BytesMut::with_capacity(16 + fields.iter().map(|f| f.len() + 5).sum::<usize>());
        put_array_len(&mut out, 6);
        put_str(&mut out, PING);
        for field in fields {
            put_str(&mut out, field);
        }
        out.freeze()
    }
}

/// The server's verdict on a PING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    /// True if the client was authenticated.
    pub auth_result: bool,
    /// Why not, when `auth_result` is false.
    pub reason: Bytes,
    /// Server's hostname (empty on failure).
    pub hostname: Bytes,
    /// Hex sha512(client salt ‖ server hostname ‖ nonce ‖ shared_key), or empty.
    pub shared_key_digest: Bytes,
}

impl Pong {
    /// The success reply to a verified `ping`.
    pub fn accept(ping: &Ping, helo: &Helo, server_hostname: &[u8], shared_key: &[u8]) -> Self {
        let digest = shared_key_digest(&ping.salt, server_hostname, &helo.nonce, shared_key);
        Pong {
            auth_result: true,
            reason: Bytes::new(),
            hostname: Bytes::copy_from_slice(server_hostname),
            shared_key_digest: Bytes::from(digest.into_bytes()),
        }
    }

    /// The failure reply; send it, then close the connection.
    pub fn reject(rejection: PingRejection) -> Self {
        Pong {
            auth_result: false,
            reason: Bytes::from_static(rejection.reason().as_bytes()),
            hostname: Bytes::new(),
            shared_key_digest: Bytes::new(),
        }
    }

    /// `["PONG", auth_result, reason, hostname, digest]`.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(160 + self.reason.len() + self.hostname.len());
        put_array_len(&mut out, 5);
        put_str(&mut out, PONG);
        out.extend_from_slice(&[if self.auth_result { 0xc3 } else { 0xc2 }]);
        put_str(&mut out, &self.reason);
        put_str(&mut out, &self.hostname);
        put_str(&mut out, &self.shared_key_digest);
        out.freeze()
    }
}

/// Why a server refuses a client; [`PingRejection::reason`] is Fluentd's PONG text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PingRejection {
    /// Anything but a well-formed PING where one was due (e.g. data before the
    /// handshake, or a [`DecodeErrorKind::MalformedPing`]).
    #[error("invalid ping message")]
    InvalidPing,
    /// Wrong shared-key digest.
    #[error("shared_key mismatch")]
    SharedKeyMismatch,
    /// Unknown user or wrong password digest.
    #[error("username/password mismatch")]
    UserMismatch,
}

impl PingRejection {
    /// Fluentd's reason string for the PONG.
    pub fn reason(self) -> &'static str {
        match self {
            PingRejection::InvalidPing => "invalid ping message",
            PingRejection::SharedKeyMismatch => "shared_key mismatch",
            PingRejection::UserMismatch => "username/password mismatch",
        }
    }
}

/// Why a client refuses the server's PONG.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PongError {
    /// The server rejected us.
    #[error("server refused the handshake: {reason}")]
    Rejected {
        /// Server's reason, lossily decoded.
        reason: String,
    },
    /// The server claims our own hostname (Fluentd treats this as a loop).
    #[error("server hostname equals the client's")]
    SameHostname,
    /// The server does not know the shared key.
    #[error("server's shared-key digest does not match")]
    DigestMismatch,
}

/// Server side: checks `ping` against the `helo` this connection sent. With `users`
/// empty there is no user authentication; otherwise the PING must name one of them
/// with the right password digest (salted with `helo.auth`).
pub fn verify_ping(
    ping: &Ping,
    helo: &Helo,
    shared_key: &[u8],
    users: &[Credentials],
) -> Result<(), PingRejection> {
    let expected = shared_key_digest(&ping.salt, &ping.hostname, &helo.nonce, shared_key);
    if !constant_time_eq(expected.as_bytes(), &ping.shared_key_digest) {
        return Err(PingRejection::SharedKeyMismatch);
    }
    if users.is_empty() {
        return Ok(());
    }
    let user = users
        .iter()
        .find(|u| u.username == ping.username)
        .ok_or(PingRejection::UserMismatch)?;
    let expected = password_digest(&helo.auth, &user.username, &user.password);
    if !constant_time_eq(expected.as_bytes(), &ping.password_digest) {
        return Err(PingRejection::UserMismatch);
    }
    Ok(())
}

/// Client side: checks the server's `pong` to our `ping` (sent in answer to `helo`).
pub fn verify_pong(
    pong: &Pong,
    ping: &Ping,
    helo: &Helo,
    shared_key: &[u8],
) -> Result<(), PongError> {
    if !pong.auth_result {
        return Err(PongError::Rejected {
            reason: String::from_utf8_lossy(&pong.reason).into_owned(),
        });
    }
    if pong.hostname == ping.hostname {
        return Err(PongError::SameHostname);
    }
    let expected = shared_key_digest(&ping.salt, &pong.hostname, &helo.nonce, shared_key);
    if !constant_time_eq(expected.as_bytes(), &pong.shared_key_digest) {
        return Err(PongError::DigestMismatch);
    }
    Ok(())
}

/// Lowercase hex sha512(salt ‖ hostname ‖ nonce ‖ shared_key): the PING digest with the
/// client's hostname, the PONG digest with the server's.
pub fn shared_key_digest(salt: &[u8], hostname: &[u8], nonce: &[u8], shared_key: &[u8]) -> String {
    hex::encode(
        Sha512::new()
            .chain_update(salt)
            .chain_update(hostname)
            .chain_update(nonce)
            .chain_update(shared_key)
            .finalize(),
    )
}

/// Lowercase hex sha512(auth ‖ username ‖ password).
pub fn password_digest(auth: &[u8], username: &[u8], password: &[u8]) -> String {
    hex::encode(
        Sha512::new()
            .chain_update(auth)
            .chain_update(username)
            .chain_update(password)
            .finalize(),
    )
}

/// Compares the full length of both inputs without an early exit. Lengths are not
/// secret (a digest is always 128 characters), so unequal lengths return at once.
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    if expected.len() != given.len() {
        return false;
    }
    let diff = expected
        .iter()
        .zip(given)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

fn malformed_ping(reason: &'static str) -> DecodeErrorKind {
    DecodeErrorKind::MalformedPing { reason }
}

fn malformed_response(reason: &'static str) -> DecodeErrorKind {
    DecodeErrorKind::MalformedResponse { reason }
}

/// Reads a str or bin as bytes; `None` for any other type (consumed).
fn read_bytes(r: &mut Reader<'_>) -> Result<Option<Bytes>, ReadError> {
    let start = r.pos();
    match r.header()? {
        Header::Str(n) | Header::Bin(n) => Ok(Some(Bytes::copy_from_slice(r.bytes(n)?))),
        _ => {
            r.set_pos(start);
            r.skip()?;
            Ok(None)
        }
    }
}

fn eof_as(reason: &'static str) -> impl Fn(ReadError) -> DecodeErrorKind {
    move |e| match e {
        ReadError::InvalidMarker(byte) => DecodeErrorKind::InvalidMarker { byte },
        ReadError::Eof | ReadError::TooDeep => DecodeErrorKind::MalformedResponse { reason },
    }
}

/// Parses the five PING fields after the `"PING"` tag of an array of `len` elements.
pub(crate) fn parse_ping(r: &mut Reader<'_>, len: u32) -> Result<Ping, DecodeErrorKind> {
    if len != 6 {
        return Err(malformed_ping("expected 6 elements"));
    }
    let mut fields: [Bytes; 5] = Default::default();
    for field in &mut fields {
        *field = read_bytes(r)
            .map_err(|_| malformed_ping("truncated"))?
            .ok_or(malformed_ping("field is not a string"))?;
    }
    let [hostname, salt, shared_key_digest, username, password_digest] = fields;
    Ok(Ping {
        hostname,
        salt,
        shared_key_digest,
        username,
        password_digest,
    })
}

/// Parses a HELO after its `"HELO"` tag, in an array of `len` elements.
pub(crate) fn parse_helo(r: &mut Reader<'_>, len: u32) -> Result<Helo, DecodeErrorKind> {
    let err = eof_as("truncated HELO");
    if len < 2 {
        return Err(malformed_response("HELO without options"));
    }
    let Header::Map(pairs) = r.header().map_err(&err)? else {
        return Err(malformed_response("HELO options are not a map"));
    };
    let mut helo = Helo {
        nonce: Bytes::new(),
        auth: Bytes::new(),
        keepalive: true,
    };
    let mut has_nonce = false;
    for _ in 0..pairs {
        let key = read_bytes(r).map_err(&err)?;
        match key.as_deref() {
            Some(b"nonce") => {
                helo.nonce = read_bytes(r)
                    .map_err(&err)?
                    .ok_or(malformed_response("HELO nonce is not a string"))?;
                has_nonce = true;
            }
            Some(b"auth") => {
                helo.auth = read_bytes(r)
                    .map_err(&err)?
                    .ok_or(malformed_response("HELO auth is not a string"))?;
            }
            Some(b"keepalive") => {
                let start = r.pos();
                match r.header().map_err(&err)? {
                    Header::Bool(b) => helo.keepalive = b,
                    _ => {
                        r.set_pos(start);
                        r.skip().map_err(&err)?;
                    }
                }
            }
            _ => r.skip().map_err(&err)?,
        }
    }
    if !has_nonce {
        return Err(malformed_response("HELO without a nonce"));
    }
    Ok(helo)
}

/// Parses a PONG after its `"PONG"` tag, in an array of `len` elements.
pub(crate) fn parse_pong(r: &mut Reader<'_>, len: u32) -> Result<Pong, DecodeErrorKind> {
    let err = eof_as("truncated PONG");
    if len != 5 {
        return Err(malformed_response("PONG is not 5 elements"));
    }
    let Header::Bool(auth_result) = r.header().map_err(&err)? else {
        return Err(malformed_response("PONG auth result is not a bool"));
    };
    let mut fields: [Bytes; 3] = Default::default();
    for field in &mut fields {
        *field = read_bytes(r)
            .map_err(&err)?
            .ok_or(malformed_response("PONG field is not a string"))?;
    }
    let [reason, hostname, shared_key_digest] = fields;
    Ok(Pong {
        auth_result,
        reason,
        hostname,
        shared_key_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_needs_full_length_match() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b""));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn generated_helo_and_ping_authenticate_both_ways() {
        let helo = Helo::generate(true, false);
        assert_eq!((helo.nonce.len(), helo.auth.len()), (16, 16));
        let creds = Credentials {
            username: b"u".to_vec(),
            password: b"p".to_vec(),
        };
        let ping = Ping::new(&helo, b"client", b"key", Some(&creds));
        assert_eq!(ping.salt.len(), 32);
        assert!(ping.salt.iter().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            verify_ping(&ping, &helo, b"key", std::slice::from_ref(&creds)),
            Ok(())
        );
        assert_eq!(
            verify_ping(&ping, &helo, b"other", &[]),
            Err(PingRejection::SharedKeyMismatch)
        );
        let wrong = Credentials {
            username: b"u".to_vec(),
            password: b"x".to_vec(),
        };
        assert_eq!(
            verify_ping(&ping, &helo, b"key", &[wrong]),
            Err(PingRejection::UserMismatch)
        );
        let pong = Pong::accept(&ping, &helo, b"server", b"key");
        assert_eq!(verify_pong(&pong, &ping, &helo, b"key"), Ok(()));
        assert_eq!(
            verify_pong(&pong, &ping, &helo, b"nope"),
            Err(PongError::DigestMismatch)
        );
        let same = Pong::accept(&ping, &helo, b"client", b"key");
        assert_eq!(
            verify_pong(&same, &ping, &helo, b"key"),
            Err(PongError::SameHostname)
        );
        let rejected = Pong::reject(PingRejection::InvalidPing);
        assert!(matches!(
            verify_pong(&rejected, &ping, &helo, b"key"),
            Err(PongError::Rejected { reason }) if reason == "invalid ping message"
        ));
    }

    #[test]
    fn empty_digest_never_authenticates() {
        let helo = Helo::generate(false, true);
        let mut ping = Ping::new(&helo, b"c", b"key", None);
        assert!(ping.password_digest.is_empty());
        ping.shared_key_digest = Bytes::new();
        assert_eq!(
            verify_ping(&ping, &helo, b"key", &[]),
            Err(PingRejection::SharedKeyMismatch)
        );
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            username: b"alice".to_vec(),
            password: b"s3cret".to_vec(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
