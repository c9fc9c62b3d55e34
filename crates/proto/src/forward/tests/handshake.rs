//! HELO / PING / PONG vectors from `handshake/`, both sides.

use bytes::{Bytes, BytesMut};
use serde_json::Value as Json;

use super::super::handshake::{
    Credentials, Helo, Ping, PingRejection, Pong, PongError, password_digest, shared_key_digest,
    verify_ping, verify_pong,
};
use super::*;

fn handshake_inputs() -> (Json, Json) {
    let e = expected_entry("handshake/");
    (e["inputs"].clone(), e["digests"].clone())
}

fn input_bytes(v: &Json) -> Vec<u8> {
    match v {
        Json::String(s) => s.as_bytes().to_vec(),
        other => hex_bytes(other["$bin"].as_str().unwrap()),
    }
}

#[test]
fn handshake_digests_match_the_published_values() {
    let (i, d) = handshake_inputs();
    let b = |k: &str| input_bytes(&i[k]);
    let (nonce, key) = (b("nonce"), b("shared_key"));
    for (salt, ping, pong) in [
        (
            "shared_key_salt",
            "ping_shared_key_hexdigest",
            "pong_shared_key_hexdigest",
        ),
        (
            "shared_key_salt_fluentbit",
            "ping_shared_key_hexdigest_fluentbit_salt",
            "pong_shared_key_hexdigest_fluentbit_salt",
        ),
    ] {
        let salt = b(salt);
        assert_eq!(
            shared_key_digest(&salt, &b("client_hostname"), &nonce, &key),
            d[ping]
        );
        assert_eq!(
            shared_key_digest(&salt, &b("server_hostname"), &nonce, &key),
            d[pong]
        );
    }
    let pw = password_digest(&b("auth_salt"), &b("username"), &b("password"));
    assert_eq!(pw, d["password_hexdigest"]);
}

fn decode_response(bytes: &[u8]) -> Response {
    let mut buf = BytesMut::from(bytes);
    let r = ResponseDecoder::new().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    r
}

fn decode_ping(bytes: &[u8]) -> Ping {
    let (got, err) = decode_stream(bytes, &Limits::default());
    assert!(err.is_none(), "{err:?}");
    match got.as_slice() {
        [Request::Ping(p)] => p.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_side_handshake_vectors() {
    let (i, _) = handshake_inputs();
    let b = |k: &str| input_bytes(&i[k]);
    let helo = Helo {
        nonce: b("nonce").into(),
        auth: b("auth_salt").into(),
        keepalive: true,
    };
    assert_eq!(helo.encode(), read_vector("handshake/helo_fluentd.bin"));
    let key = b("shared_key");
    let alice = Credentials {
        username: b("username"),
        password: b("password"),
    };
    let users = std::slice::from_ref(&alice);

    let ping = decode_ping(&read_vector("handshake/ping_user.bin"));
    assert_eq!(ping.username, b("username"));
    assert_eq!(verify_ping(&ping, &helo, &key, users), Ok(()));
    assert_eq!(
        verify_ping(&ping, &helo, b"wrong", users),
        Err(PingRejection::SharedKeyMismatch)
    );
    let bob = Credentials {
        username: b("username"),
        password: b"nope".to_vec(),
    };
    assert_eq!(
        verify_ping(&ping, &helo, &key, &[bob]),
        Err(PingRejection::UserMismatch)
    );
    let pong = Pong::accept(&ping, &helo, &b("server_hostname"), &key);
    assert_eq!(pong.encode(), read_vector("handshake/pong_ok.bin"));

    let nouser = decode_ping(&read_vector("handshake/ping_nouser.bin"));
    assert_eq!(verify_ping(&nouser, &helo, &key, &[]), Ok(()));
    assert_eq!(
        verify_ping(&nouser, &helo, &key, users),
        Err(PingRejection::UserMismatch)
    );

    let raw = decode_ping(&read_vector("handshake/ping_fluentbit_raw_salt.bin"));
    assert_eq!(raw.salt, b("shared_key_salt_fluentbit"));
    assert_eq!(verify_ping(&raw, &helo, &key, &[]), Ok(()));
    let pong = Pong::accept(&raw, &helo, &b("server_hostname"), &key);
    assert_eq!(
        pong.encode(),
        read_vector("handshake/pong_ok_fluentbit_raw_salt.bin")
    );

    let fail = Pong::reject(PingRejection::SharedKeyMismatch).encode();
    assert_eq!(fail, read_vector("handshake/pong_fail_shared_key.bin"));
    let fail = Pong::reject(PingRejection::UserMismatch).encode();
    assert_eq!(fail, read_vector("handshake/pong_fail_user.bin"));
}

#[test]
fn client_side_handshake_vectors() {
    let (i, _) = handshake_inputs();
    let b = |k: &str| input_bytes(&i[k]);
    let key = b("shared_key");
    for file in ["handshake/helo_fluentd.bin", "handshake/helo_fluentbit.bin"] {
        let Response::Helo(helo) = decode_response(&read_vector(file)) else {
            panic!("{file}")
        };
        assert_eq!(
            (&helo.nonce[..], &helo.auth[..]),
            (&b("nonce")[..], &b("auth_salt")[..])
        );
        assert!(helo.keepalive, "{file}: keepalive defaults to true");

        let alice = Credentials {
            username: b("username"),
            password: b("password"),
        };
        let salt = b("shared_key_salt");
        let host = b("client_hostname");
        let ping = Ping::with_salt(&helo, &salt, &host, &key, Some(&alice));
        assert_eq!(
            ping.encode(),
            read_vector("handshake/ping_user.bin"),
            "{file}"
        );
        let anonymous = Helo {
            auth: Bytes::new(),
            ..helo.clone()
        };
        let nouser = Ping::with_salt(&anonymous, &salt, &host, &key, None);
        assert_eq!(nouser.encode(), read_vector("handshake/ping_nouser.bin"));

        let Response::Pong(pong) = decode_response(&read_vector("handshake/pong_ok.bin")) else {
            panic!()
        };
        assert_eq!(verify_pong(&pong, &ping, &helo, &key), Ok(()));
        assert_eq!(
            verify_pong(&pong, &ping, &helo, b"other"),
            Err(handshake::PongError::DigestMismatch)
        );
        let Response::Pong(fail) = decode_response(&read_vector("handshake/pong_fail_user.bin"))
        else {
            panic!()
        };
        assert!(matches!(
            verify_pong(&fail, &ping, &helo, &key),
            Err(handshake::PongError::Rejected { reason }) if reason == "username/password mismatch"
        ));
    }
}

#[test]
fn malformed_pings_are_reported_as_such() {
    let mut five = Vec::new();
    put_array_len(&mut five, 5);
    for _ in 0..5 {
        put_str(&mut five, b"PING");
    }
    let mut six_int = Vec::new();
    put_array_len(&mut six_int, 6);
    put_str(&mut six_int, b"PING");
    six_int.extend_from_slice(&[0x01; 5]);
    for bytes in [five, six_int] {
        let (_, err) = decode_stream(&bytes, &Limits::default());
        let err = err.unwrap();
        assert!(
            matches!(err.kind(), DecodeErrorKind::MalformedPing { .. }),
            "{err}"
        );
        assert!(err.can_continue());
    }
    // A Message-mode event tagged PING is just an event.
    let mut event = Vec::new();
    put_array_len(&mut event, 3);
    put_str(&mut event, b"PING");
    event.push(0x01);
    put_map_len(&mut event, 0);
    let (got, _) = decode_stream(&event, &Limits::default());
    assert!(matches!(got.as_slice(), [Request::Events(_)]));
}
