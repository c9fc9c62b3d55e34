//! Mistakes found at start or validation: an address in use, bad keys.

use super::*;

#[test]
fn address_in_use_fails_at_start_with_the_component_id() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            "[sources.busy]\ntype = \"forward\"\naddress = \"127.0.0.1:{port}\"\n[sinks.n]\ntype = \"null\"\ninputs = [\"busy\"]\n"
        ),
    );
    let st = d.wait(Duration::from_secs(20));
    assert!(!st.success());
    let log = d.stderr();
    assert!(
        log.contains("sources.busy") && log.to_lowercase().contains("address"),
        "{log}"
    );
}

#[test]
fn forward_mistakes_are_reported_at_their_keys() {
    // The examples are validated by examples::every_example_validates.
    let (ok, err) = validate(
        "[sources.fw]\ntype = \"forward\"\naddress = \"nowhere\"\nusers = [{ username = \"a\", password = \"b\" }]\n\
         [sources.fw.limits]\nmax_frame_byte = 1\n[sinks.f]\ntype = \"forward\"\ninputs = [\"fw\"]\nservers = [\"x\"]\n",
    );
    assert!(!ok);
    for needle in ["sources.fw.limits", "max_frame_byte"] {
        assert!(err.contains(needle), "{needle} not in:\n{err}");
    }
    let (ok, err) = validate(
        "[sources.fw]\ntype = \"forward\"\naddress = \"nowhere\"\nusers = [{ username = \"a\", password = \"b\" }]\n\
         [sinks.f]\ntype = \"forward\"\ninputs = [\"fw\"]\nservers = [\"x\"]\nmax_inflight_chunks = 0\n",
    );
    assert!(!ok);
    for needle in [
        "sources.fw.address",
        "sources.fw.users",
        "sinks.f.servers",
        "sinks.f.max_inflight_chunks",
    ] {
        assert!(err.contains(needle), "{needle} not in:\n{err}");
    }
}
