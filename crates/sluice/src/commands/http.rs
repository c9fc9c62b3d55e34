//! A minimal HTTP/1.0 client for `sluice top` and `sluice tap`, which talk to
//! the daemon's own API on a known address: one GET, the status checked, the
//! body read as it comes (HTTP/1.0, so the server delimits it by closing, never
//! by chunks).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// `GET path` on `addr`: the body as a reader, or why not (the server's text
/// for an error status).
pub fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Option<Duration>,
) -> Result<BufReader<TcpStream>, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to the API at {addr}: {e}"))?;
    s.set_read_timeout(timeout)
        .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(5))))
        .and_then(|()| write!(s, "GET {path} HTTP/1.0\r\nHost: sluice\r\n\r\n"))
        .map_err(|e| format!("cannot send to the API at {addr}: {e}"))?;
    let mut r = BufReader::new(s);
    let mut status_line = String::new();
    let mut head = 0;
    let read_err = |e: std::io::Error| format!("reading the API's answer: {e}");
    head += r.read_line(&mut status_line).map_err(read_err)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("the API at {addr} did not answer in HTTP"))?;
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).map_err(read_err)?;
        head += n;
        if n == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if head > MAX_HEAD {
            return Err("the API's answer head is too long".into());
        }
    }
    if status != 200 {
        let mut body = String::new();
        let _ = r.take(4096).read_to_string(&mut body);
        return Err(format!("{path}: {status} {}", body.trim_end()));
    }
    Ok(r)
}

/// `GET path`, the whole body as text.
pub fn get_text(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut r = get(addr, path, Some(Duration::from_secs(5)))?;
    let mut body = String::new();
    r.read_to_string(&mut body)
        .map_err(|e| format!("reading {path}: {e}"))?;
    Ok(body)
}
