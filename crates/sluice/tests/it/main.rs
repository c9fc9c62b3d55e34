//! One integration binary (see conventions): every module drives the real `sluice`
//! binary or library against real files, pipes, processes and peers.

mod alloc_count;
mod api;
mod common;
mod config_errors;
mod disk_buffer;
mod disk_buffer_headline;
mod disk_buffer_stop;
mod forward;
mod fuse;
mod kafka;
mod kafka_broker;
mod kafka_support;
mod lines;
mod routes;
mod tenant_accounting;
mod tls_proxy;
