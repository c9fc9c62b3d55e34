//! A TLS terminator for tests that need TLS in front of a peer that only speaks
//! plain TCP (the test broker's plain listener, advertised as the proxy): it accepts
//! TLS on 127.0.0.1 with the `server.crt`/`server.key` of
//! [`crate::common::make_certs`], optionally requires a client certificate
//! signed by that CA, and copies each connection's bytes both ways to a plain
//! TCP upstream. It counts completed and failed handshakes so a test can tell
//! "refused at TLS" from "never connected".
//!
//! rustls + tokio-rustls on a current-thread runtime in a thread of its own, so
//! synchronous tests can use it; dropping it closes the listener and every
//! connection.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

#[derive(Default)]
struct Stats {
    handshakes: AtomicU64,
    failures: AtomicU64,
    last_failure: Mutex<String>,
}

/// A running TLS terminator.
pub struct TlsProxy {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsProxy {
    /// Listen on a free loopback port with the certificates in `certs` and
    /// forward to `upstream` (connected per accepted TLS connection, so the
    /// upstream may start later).
    pub fn start(certs: &Path, require_client_cert: bool, upstream: SocketAddr) -> TlsProxy {
        let acceptor = TlsAcceptor::from(server_config(certs, require_client_cert));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TLS proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let stats = Arc::new(Stats::default());
        let (stop, mut stopped) = oneshot::channel::<()>();
        let st = stats.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            if let Ok((sock, _)) = accepted {
                                tokio::spawn(serve(acceptor.clone(), sock, upstream, st.clone()));
                            }
                        }
                    }
                }
            });
            // Dropping the runtime cancels the connection tasks: both sides close.
        });
        TlsProxy {
            addr,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> u64 {
        self.stats.handshakes.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed so far.
    pub fn handshake_failures(&self) -> u64 {
        self.stats.failures.load(Ordering::Relaxed)
    }

    /// Why the last failed handshake failed (rustls' words), empty if none did.
    pub fn last_failure(&self) -> String {
        self.stats.last_failure.lock().expect("stats lock").clone()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    acceptor: TlsAcceptor,
    sock: tokio::net::TcpStream,
    upstream: SocketAddr,
    stats: Arc<Stats>,
) {
    let mut tls = match acceptor.accept(sock).await {
        Ok(tls) => {
            stats.handshakes.fetch_add(1, Ordering::Relaxed);
            tls
        }
        Err(e) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            *stats.last_failure.lock().expect("stats lock") = e.to_string();
            return;
        }
    };
    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let _ = up.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
}

fn server_config(certs: &Path, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join("server.crt"))
            .expect("read server.crt")
            .collect::<Result<_, _>>()
            .expect("parse server.crt");
    let key = PrivateKeyDer::from_pem_file(certs.join("server.key")).expect("read server.key");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(certs.join("ca.crt")).expect("read ca.crt"))
            .expect("add the test CA");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client certificate verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(
        builder
            .with_single_cert(chain, key)
            .expect("server certificate and key"),
    )
}
