//! UDP heartbeats on the forward port: Fluentd's out_forward (`heartbeat_type udp`)
//! sends one `0x00` datagram; in_forward answers every datagram with `0x00` to its
//! sender. The reply is never larger than the request, so this cannot amplify.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Common;

/// Fluentd's heartbeat payload, both ways.
const PAYLOAD: [u8; 1] = [0x00];

pub(super) async fn run(socket: UdpSocket, stop: CancellationToken, common: Arc<Common>) {
    // Fluentd reads at most 128 bytes of a heartbeat; longer datagrams are cut.
    let mut buf = [0u8; 128];
    loop {
        let peer = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok((_, peer)) => peer,
                Err(e) => {
                    // ICMP errors from earlier replies surface here on Linux; harmless.
                    debug!(error = %e, "UDP heartbeat receive failed.");
                    continue;
                }
            },
        };
        common.stats.heartbeats.fetch_add(1, Relaxed);
        if let Err(e) = socket.send_to(&PAYLOAD, peer).await {
            debug!(peer = %peer, error = %e, "UDP heartbeat reply failed.");
        }
    }
}
