//! sluice: a log pipeline daemon — sources → buffers → sinks, with end-to-end
//! acknowledgements. See README.md for the architecture and configuration.

pub mod ack;
pub mod api;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod encoding;
pub mod event;
pub mod framing;
pub mod kafka;
pub mod metrics;
pub mod route;
pub mod sinks;
pub mod sources;
pub mod template;
pub mod topology;

/// An I/O error's text without the "(os error N)" noise.
pub fn error_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}
