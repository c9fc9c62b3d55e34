//! The handshake (shared key, users) and TLS with client certificates (made
//! with the openssl CLI).

use super::*;

struct Handshaken {
    s: TcpStream,
    pong: proto::forward::handshake::Pong,
}

/// Read HELO, send a PING with `key` and `user`, read the PONG.
fn handshake(addr: SocketAddr, key: &str, user: Option<(&str, &str)>) -> Handshaken {
    let mut s = connect(addr);
    let mut dec = ResponseDecoder::new();
    let mut buf = BytesMut::new();
    let helo = match next_response(&mut s, &mut dec, &mut buf) {
        Response::Helo(h) => h,
        other => panic!("expected HELO, got {other:?}"),
    };
    let creds = user.map(|(u, p)| Credentials {
        username: u.into(),
        password: p.into(),
    });
    let ping = Ping::new(&helo, b"test-client", key.as_bytes(), creds.as_ref());
    s.write_all(&ping.encode()).unwrap();
    let pong = match next_response(&mut s, &mut dec, &mut buf) {
        Response::Pong(p) => p,
        other => panic!("expected PONG, got {other:?}"),
    };
    if pong.auth_result {
        verify_pong(&pong, &ping, &helo, key.as_bytes()).expect("server proves it knows the key");
    }
    Handshaken { s, pong }
}

fn next_response(s: &mut TcpStream, dec: &mut ResponseDecoder, buf: &mut BytesMut) -> Response {
    loop {
        if let Some(r) = dec.decode(buf).expect("valid server message") {
            return r;
        }
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).expect("read server message");
        assert!(n > 0, "server closed before a complete message");
        buf.extend_from_slice(&b[..n]);
    }
}

#[test]
fn handshake_accepts_the_key_and_user_and_refuses_everything_else() {
    let mut fw = Fw::start(
        "shared_key = \"s3cr3t\"\nself_hostname = \"collector-1\"\nusers = [{ username = \"alice\", password = \"pw\" }]",
    );
    // Right key and user: events flow and are acked.
    let mut ok = handshake(fw.addr, "s3cr3t", Some(("alice", "pw")));
    assert!(ok.pong.auth_result);
    assert_eq!(&ok.pong.hostname[..], b"collector-1");
    ok.s.write_all(&packed("auth", "authed", 3, Some("auth-1")))
        .unwrap();
    let want = ack_bytes("auth-1");
    assert_eq!(
        read_exact_within(&mut ok.s, want.len(), Duration::from_secs(20)),
        want
    );

    // Wrong key: PONG false with Fluentd's reason, then close.
    let mut bad = handshake(fw.addr, "wrong", Some(("alice", "pw")));
    assert!(!bad.pong.auth_result);
    assert_eq!(&bad.pong.reason[..], b"shared_key mismatch");
    assert!(read_to_close(&mut bad.s, Duration::from_secs(10)).is_empty());

    // Wrong password.
    let mut bad = handshake(fw.addr, "s3cr3t", Some(("alice", "nope")));
    assert!(!bad.pong.auth_result);
    assert_eq!(&bad.pong.reason[..], b"username/password mismatch");
    assert!(read_to_close(&mut bad.s, Duration::from_secs(10)).is_empty());

    // Data before the handshake: PONG false "invalid ping message", close, nothing kept.
    let mut s = connect(fw.addr);
    let mut dec = ResponseDecoder::new();
    let mut buf = BytesMut::new();
    assert!(matches!(
        next_response(&mut s, &mut dec, &mut buf),
        Response::Helo(_)
    ));
    s.write_all(&packed("auth", "sneaky", 1, Some("sneak")))
        .unwrap();
    match next_response(&mut s, &mut dec, &mut buf) {
        Response::Pong(p) => {
            assert!(!p.auth_result);
            assert_eq!(&p.reason[..], b"invalid ping message");
        }
        other => panic!("expected PONG false, got {other:?}"),
    }
    assert!(read_to_close(&mut s, Duration::from_secs(10)).is_empty());

    // A large request before the handshake is refused as soon as its declared
    // size passes the pre-authentication cap (4 KiB), not buffered until it is
    // complete or the idle timeout (300 s) ends it.
    let mut s = connect(fw.addr);
    let mut dec = ResponseDecoder::new();
    let mut buf = BytesMut::new();
    assert!(matches!(
        next_response(&mut s, &mut dec, &mut buf),
        Response::Helo(_)
    ));
    let mut frame = vec![0x92, 0xa3, b'b', b'i', b'g', 0xc6];
    frame.extend_from_slice(&1_000_000u32.to_be_bytes());
    frame.extend(std::iter::repeat_n(0u8, 16 * 1024));
    let _ = s.write_all(&frame); // the server may close before taking it all
    match next_response(&mut s, &mut dec, &mut buf) {
        Response::Pong(p) => assert!(!p.auth_result),
        other => panic!("expected PONG false, got {other:?}"),
    }
    assert!(read_to_close(&mut s, Duration::from_secs(10)).is_empty());

    drop(ok);
    let got = fw.stop_and_read();
    assert_eq!(got.len(), 3, "only the authenticated events");
    assert!(
        got.iter()
            .all(|e| e["message"].as_str().unwrap().starts_with("authed"))
    );
    assert!(fw.d.stderr().contains("shared_key mismatch"));
}

fn tls_client(dir: &Path, with_cert: bool) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.crt")).unwrap())
        .unwrap();
    let b = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = if with_cert {
        let cert = CertificateDer::from_pem_file(dir.join("client.crt")).unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap();
        b.with_client_auth_cert(vec![cert], key).unwrap()
    } else {
        b.with_no_client_auth()
    };
    std::sync::Arc::new(cfg)
}

#[test]
fn tls_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let c = certs.path().display();
    let mut fw = Fw::start(&format!(
        "[sources.fw.tls]\ncert_file = \"{c}/server.crt\"\nkey_file = \"{c}/server.key\"\nclient_ca_file = \"{c}/ca.crt\""
    ));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    // With a client certificate: events and acks.
    let conn = rustls::ClientConnection::new(tls_client(certs.path(), true), name.clone()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(fw.addr));
    tls.write_all(&packed("tls", "secure", 4, Some("tls-1")))
        .unwrap();
    let want = ack_bytes("tls-1");
    let mut got = vec![0u8; want.len()];
    tls.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    drop(tls);
    // Without: the server refuses the handshake, nothing gets in.
    let conn = rustls::ClientConnection::new(tls_client(certs.path(), false), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(fw.addr));
    let refused = tls
        .write_all(&packed("tls", "anonymous", 1, Some("tls-2")))
        .and_then(|()| tls.flush())
        .and_then(|()| tls.read(&mut [0u8; 64]));
    assert!(
        !matches!(refused, Ok(n) if n > 0),
        "a client without certificate got an answer"
    );
    // Plain TCP to a TLS port: the TLS handshake fails, the server goes on.
    let mut plain = connect(fw.addr);
    plain
        .write_all(&packed("tls", "plain", 1, Some("tls-3")))
        .unwrap();
    let _ = read_to_close(&mut plain, Duration::from_secs(15));
    let got = fw.stop_and_read();
    assert_eq!(got.len(), 4);
    assert!(fw.d.stderr().contains("TLS handshake failed"));
}
