//! `sluice tap COMPONENT [--limit N]`: print the events leaving a source or a
//! route of a running daemon, one JSON object per line, through its API
//! (`GET /tap/COMPONENT`). The daemon samples without slowing down: what the tap
//! cannot take is dropped and counted (`sluice_tap_dropped_events_total`).

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

/// Stream the tap to stdout until `limit` events, the daemon stops, or stdout
/// closes (`| head`: success).
pub fn main(api: SocketAddr, component: &str, limit: Option<u64>) -> ExitCode {
    if component.is_empty() || component.contains(['/', '?', '#', ' ', '%']) {
        eprintln!("sluice tap: {component:?} is not a component name");
        return ExitCode::from(crate::cli::EXIT_CONFIG);
    }
    let path = match limit {
        Some(n) => format!("/tap/{component}?limit={n}"),
        None => format!("/tap/{component}"),
    };
    let mut body = match super::http::get(api, &path, None) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice tap: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    loop {
        let chunk = match body.fill_buf() {
            Ok([]) => return ExitCode::SUCCESS,
            Ok(c) => c,
            Err(e) => {
                eprintln!("sluice tap: reading from the API: {e}");
                return ExitCode::FAILURE;
            }
        };
        let n = chunk.len();
        match out.write_all(chunk).and_then(|()| out.flush()) {
            Ok(()) => body.consume(n),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice tap: cannot write to stdout: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}
