//! One integration binary (see conventions): every module drives the real `sluice`
//! binary or library against real files, pipes, processes and peers.

mod alloc_count;
mod api;
mod archive;
mod archive_s3;
mod common;
mod completions;
mod config_errors;
mod dirs;
mod disk_buffer;
mod disk_buffer_headline;
mod disk_buffer_stop;
mod eio_fs;
mod examples;
mod file_source;
mod forward;
mod fsync_failure;
mod fuse;
mod kafka;
mod kafka_broker;
mod kafka_cluster;
mod kafka_source;
mod kafka_support;
mod lines;
mod logging;
mod routes;
mod syslog;
mod tenant_accounting;
mod tenant_acl;
mod tls_proxy;
