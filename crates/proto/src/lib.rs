//! Sans-IO wire formats for sluice: bytes in, values out.
//!
//! No sockets, no async runtime, no clocks: callers own the I/O and feed buffers in.
//! Every decoder here bounds what a peer can make it allocate, how deep it recurses and
//! how much it inflates, and separates "need more bytes" from "invalid input".
//!
//! * [`forward`]: the Fluentd forward protocol v1/v1.5 (server-side request decoder,
//!   client-side encoder, acks and the shared-key handshake).
//! * [`cri`]: CRI container log lines (Kubernetes `/var/log/pods`), their times and
//!   the pod metadata in their paths.
//! * [`docker`]: Docker `json-file` container log lines.
//! * [`syslog`]: RFC 5424 / RFC 3164 messages and the RFC 6587 stream framings.
#![warn(missing_docs)]

pub mod cri;
pub mod docker;
pub mod forward;
pub mod syslog;
