//! The HTTP/1.1 server behind `[api]`: accept loop, per-connection limits, routing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::exposition::Exposition;
use super::{Health, Phase, tap};
use crate::metrics::Registry;

/// Every answer's body: a whole text, or a tap's stream.
type Body = BoxBody<Bytes, Infallible>;

/// Largest request head accepted (431 beyond).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Time allowed for a request head to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;

const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running API server; stops when dropped or [`ApiServer::stop`]ped.
pub struct ApiServer {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl ApiServer {
    /// The address it listens on (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting and close open connections.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct State {
    health: Health,
    exposition: Exposition,
    registry: Registry,
}

/// Bind `addr` and serve until the returned server is stopped.
pub async fn bind(
    addr: SocketAddr,
    health: Health,
    registry: Registry,
) -> std::io::Result<ApiServer> {
    let exposition = Exposition::new(registry.clone());
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let state = Arc::new(State {
        health,
        exposition,
        registry,
    });
    info!(address = %addr, "API listening.");
    tokio::spawn(accept_loop(listener, state, stop.clone()));
    Ok(ApiServer { addr, stop })
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: back off a little instead of spinning.
                warn!(error = %e, "API accept failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "API connection limit reached; closing.");
            continue;
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    debug!(%peer, error = %e, "API connection ended with an error.");
                },
                _ = stop.cancelled() => {}
            }
            drop(slot);
        });
    }
}

fn respond(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n", head);
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let phase = state.health.get();
    match req.uri().path() {
        "/metrics" => match state.exposition.render() {
            Ok(body) => {
                let mut r = Response::new(full(if head {
                    Bytes::new()
                } else {
                    Bytes::from(body)
                }));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
                r
            }
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n", head),
        },
        "/health" => match phase {
            Phase::Running => text(StatusCode::OK, "running\n", head),
            Phase::Starting => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n", head),
            Phase::Stopping => text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n", head),
        },
        "/ready" => match phase {
            Phase::Running => text(StatusCode::OK, "ready\n", head),
            _ => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n", head),
        },
        path => match path.strip_prefix("/tap/") {
            Some(name) => tap_response(state, name, req.uri().query(), head),
            None => text(StatusCode::NOT_FOUND, "not found\n", head),
        },
    }
}

/// `/tap/NAME?limit=N`: JSON lines of the events leaving a source or route.
fn tap_response(state: &State, name: &str, query: Option<&str>, head: bool) -> Response<Body> {
    let mut limit = None;
    for (k, v) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
    {
        if k == "limit" {
            match v.parse::<u64>() {
                Ok(n) => limit = Some(n),
                Err(_) => return text(StatusCode::BAD_REQUEST, "limit: not a number\n", head),
            }
        }
    }
    let rx = match tap::listen(&state.registry, name) {
        Ok(rx) => rx,
        Err(why) => return owned_text(StatusCode::NOT_FOUND, why, head),
    };
    let body = if head {
        full(Bytes::new())
    } else {
        StreamBody::new(tap::stream(rx, limit)).boxed()
    };
    let mut r = Response::new(body);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

fn full(b: Bytes) -> Body {
    Full::new(b).boxed()
}

fn owned_text(status: StatusCode, body: String, head: bool) -> Response<Body> {
    let mut r = text(status, "", head);
    if !head {
        *r.body_mut() = full(Bytes::from(body));
    }
    r
}

fn text(status: StatusCode, body: &'static str, head: bool) -> Response<Body> {
    let mut r = Response::new(full(if head {
        Bytes::new()
    } else {
        Bytes::from_static(body.as_bytes())
    }));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
